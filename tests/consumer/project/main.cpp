// The stable API snippet of docs/memory_layer.md, unchanged, inside a program that checks the shapes.
#include <memoryformer/memoryformer.hpp>

#include <cstdio>

int main() {
  namespace mf = memoryformer;
  const mf::RowMatrix<float> x = mf::RowMatrix<float>::Random(3, 64);
  const mf::RowMatrix<float> dy = mf::RowMatrix<float>::Random(3, 48);
  // clang-format off
  // --- docs/memory_layer.md, "The stable contract" ---
  mf::MemoryLayerOptions opt;          // plain struct, C++17 aggregate with defaults
  opt.in_dim = 64; opt.out_dim = 48; opt.tau = 8;
  opt.score = mf::Score::paper;        // or mf::Score::l1
  opt.temperature = 1.0f; opt.bias = true;
  mf::MemoryLayer<float> layer(opt);   // deterministic default init
  layer.tables();                      // writable view, (K * 2^tau) x out_dim, row-major
  layer.bias();                        // writable view, 1 x out_dim
  mf::RowMatrix<float> y  = layer.forward(x);        // x: N x in_dim  ->  N x out_dim
  mf::RowMatrix<float> dx = layer.backward(x, dy);   // returns dL/dx, accumulates grads
  layer.table_grad(); layer.bias_grad(); layer.zero_grad();
  // --- end ---
  // clang-format on
  const bool ok = y.rows() == 3 && y.cols() == 48 && dx.rows() == 3 && dx.cols() == 64 &&
                  layer.tables().rows() == 8 * 256 && layer.bias().cols() == 48;
  std::printf("consumer: %s\n", ok ? "ok" : "wrong shapes");
  return ok ? 0 : 1;
}
