// A program that links MemoryFormer::core only (no xxHash, no file I/O): the core header must build
// and run on its own. Runs README's "Use it" snippet (the context, the tensor views, the error kinds).
#include <memoryformer/core.hpp>

#include <cstdio>

int main() {
  namespace mf = memoryformer;
  // clang-format off
  // --- README.md, "Use it" ---
  mf::MemoryLayerOptions opt;
  opt.in_dim = 64; opt.out_dim = 48; opt.tau = 8;
  mf::MemoryLayer<float> layer(opt);
  layer.set_context(mf::Context(2));                 // its own pool of 2 threads
  mf::Tensor3<float> x(2, 5, 64);                    // [batch, seq, in_dim]
  x.setRandom();
  mf::Tensor3<float> y = layer.forward(x);           // [batch, seq, out_dim], x read in place
  auto tables = layer.tables_tensor();               // [K, 2^tau, out_dim] view, no copy
  try {
    layer.forward(mf::Tensor3<float>(2, 5, 63));     // wrong width
  } catch (const mf::ArgumentError& e) {             // mf::FileError, mf::FormatError: see errors.hpp
    std::printf("%s\n", e.what());
  }
  // --- end ---
  // clang-format on
  const bool ok = y.dimension(0) == 2 && y.dimension(1) == 5 && y.dimension(2) == 48 &&
                  tables.dimension(0) == 8 && tables.dimension(1) == 256 && tables.dimension(2) == 48;
  std::printf("core_only: %s\n", ok ? "ok" : "wrong shapes");
  return ok ? 0 : 1;
}
