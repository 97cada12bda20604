// One MemoryLayer end to end: builds the layer, runs forward and backward on a small random batch,
// prints what the library chose at run time (kernel path, threads) and checks one output row
// against a naive recomputation of the paper's definition (Eq. 9-11).
//
//   memory_layer [--in N] [--out N] [--tau N] [--tokens N]     (also --flag=N)
//
// Exit status: 0 on success, 1 if the library rejects the options or the check fails, 2 for a bad
// command line.
#include "cli.hpp"

#include <memoryformer/memoryformer.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <random>
#include <string>
#include <vector>

namespace mf = memoryformer;

namespace {

using Matrix = mf::RowMatrix<float>;
using Index = Eigen::Index;

// Tables grow as 2^tau / tau times the dense weights; stop before an example eats the machine.
constexpr std::int64_t kMaxTableBytes = std::int64_t{4} << 30;

struct Args {
  int in = 512;
  int out = 512;
  int tau = 8;
  int tokens = 4;
};

cli::Flags flags(Args& args) {
  cli::Flags f("memory_layer [--in N] [--out N] [--tau N] [--tokens N]");
  f.add("--in", &args.in, "input width d, a multiple of tau", 1, 1 << 20);
  f.add("--out", &args.out, "output width h", 1, 1 << 20);
  f.add("--tau", &args.tau, "bits per chunk", 1, 16);
  f.add("--tokens", &args.tokens, "rows in the random batch", 1, 1 << 20);
  return f;
}

Matrix random_matrix(Eigen::Index rows, Eigen::Index cols, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Matrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = normal(rng);
  return m;
}

// Row i of the forward pass recomputed from the definitions, in double and without the library's
// kernels: chunk z_k's code is its sign bits (z >= 0 -> 1, first element most significant), its
// score p(z_k) = prod_j sigmoid(2 |z_kj| / t) (times ||z_k||_1 for Score::l1), and
// y = b + sum_k s_k T[k 2^tau + code_k]. Returns max_j |y_ij - naive_j|.
double naive_row_difference(const mf::MemoryLayer<float>& layer, const Matrix& x, const Matrix& y, Index i) {
  const int tau = layer.tau();
  const double t = layer.options().temperature;
  const Index h = layer.out_dim();
  std::vector<double> naive(static_cast<std::size_t>(h), 0.0);
  if (layer.has_bias())
    for (Index j = 0; j < h; ++j) naive[static_cast<std::size_t>(j)] = layer.bias()(0, j);
  for (int k = 0; k < layer.num_chunks(); ++k) {
    const float* z = x.row(i).data() + static_cast<std::ptrdiff_t>(k) * tau;
    int code = 0;
    double p = 1.0;
    double l1 = 0.0;
    for (int j = 0; j < tau; ++j) {
      code = (code << 1) | (z[j] >= 0.0f ? 1 : 0);
      p *= 1.0 / (1.0 + std::exp(-2.0 * std::abs(static_cast<double>(z[j])) / t));
      l1 += std::abs(static_cast<double>(z[j]));
    }
    const double score = layer.options().score == mf::Score::l1 ? l1 * p : p;
    const Index row = static_cast<Index>(k) * layer.num_buckets() + code;
    for (Index j = 0; j < h; ++j) naive[static_cast<std::size_t>(j)] += score * layer.tables()(row, j);
  }
  double diff = 0.0;
  for (Index j = 0; j < h; ++j) diff = std::max(diff, std::abs(y(i, j) - naive[static_cast<std::size_t>(j)]));
  return diff;
}

std::string shape(const Eigen::Index rows, const Eigen::Index cols) {
  return "[" + std::to_string(rows) + " x " + std::to_string(cols) + "]";
}

int run(const Args& args) {
  mf::MemoryLayerOptions opt;
  opt.in_dim = args.in;
  opt.out_dim = args.out;
  opt.tau = args.tau;

  // Size check before anything is allocated. Options the layer rejects are left to its constructor,
  // which validates them before allocating and names MemoryLayerOptions in its message.
  std::int64_t table_bytes = 0;
  try {
    table_bytes = mf::memory_layer_table_bytes(opt.in_dim, opt.out_dim, opt.tau, sizeof(float));
  } catch (const mf::Error&) {
  }
  if (table_bytes > kMaxTableBytes)
    throw cli::UsageError("--in " + std::to_string(args.in) + " --out " + std::to_string(args.out) +
                          " --tau " + std::to_string(args.tau) + ": tables would need " +
                          std::to_string(table_bytes >> 20) + " MiB; this example stops at " +
                          std::to_string(kMaxTableBytes >> 20) + " MiB");

  mf::MemoryLayer<float> layer(opt);
  const auto& o = layer.options();
  const double init_std = o.init_std > 0 ? o.init_std : std::sqrt(2.0 / (5.0 * o.in_dim));

  std::cout << "memoryformer " << MF_VERSION_STRING << ": MemoryLayer<float>\n"
            << "options:  in_dim " << o.in_dim << ", out_dim " << o.out_dim << ", tau " << o.tau << ", score "
            << o.score << ", temperature " << o.temperature << ", bias " << (o.bias ? "yes" : "no")
            << ", init_std " << init_std << (o.init_std > 0 ? "" : " (default)") << ", seed 0x" << std::hex
            << o.seed << std::dec << '\n';

  const double mib = 1.0 / (1 << 20);
  std::cout << std::fixed << std::setprecision(2) << "tables:   K = " << layer.num_chunks() << " tables of "
            << layer.num_buckets() << " x " << layer.out_dim() << " -> "
            << shape(layer.tables().rows(), layer.tables().cols()) << " fp32, " << table_bytes * mib
            << " MiB (a dense W would be " << static_cast<double>(o.in_dim) * o.out_dim * sizeof(float) * mib
            << " MiB)\n"
            << std::defaultfloat;

  std::cout << "kernels:  path " << mf::to_string(mf::kernel_path()) << " (supported:";
  for (mf::KernelPath p : mf::supported_kernel_paths()) std::cout << ' ' << mf::to_string(p);
  std::cout << "), threads " << mf::num_threads() << '\n';

  std::mt19937 rng(2024);
  const Matrix x = random_matrix(args.tokens, o.in_dim, rng);
  const Matrix y = layer.forward(x);
  std::cout << "forward:  x " << shape(x.rows(), x.cols()) << " -> y " << shape(y.rows(), y.cols()) << '\n';

  const Matrix dy = random_matrix(args.tokens, o.out_dim, rng);
  const Matrix dx = layer.backward(x, dy);
  std::cout << "backward: dy " << shape(dy.rows(), dy.cols()) << " -> dx " << shape(dx.rows(), dx.cols())
            << "; table_grad " << shape(layer.table_grad().rows(), layer.table_grad().cols())
            << " (Frobenius norm " << layer.table_grad().norm() << "), bias_grad "
            << shape(layer.bias_grad().rows(), layer.bias_grad().cols()) << '\n';

  // fp32 sums of K terms against a double reference: differences of ~1e-7 are rounding.
  const double tolerance = 1e-4;
  const double diff = naive_row_difference(layer, x, y, 0);
  const bool ok = diff <= tolerance;
  std::cout << "check:    row 0 of y vs a naive recomputation, max |diff| = " << std::scientific
            << std::setprecision(3) << diff << (ok ? " (ok)" : " (MISMATCH)") << '\n';
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  const cli::Flags f = flags(args);
  try {
    if (!f.parse(argc, argv)) return 0;
    return run(args);
  } catch (const cli::UsageError& e) {
    std::cerr << "memory_layer: " << e.what() << '\n' << f.usage();
    return 2;
  } catch (const mf::Error& e) {
    std::cerr << "memory_layer: " << e.what() << '\n';
    return 1;
  } catch (const std::exception& e) {  // e.g. std::bad_alloc
    std::cerr << "memory_layer: " << e.what() << '\n';
    return 1;
  }
}
