// libFuzzer target: bytes -> SafetensorsFile::from_memory (header length, JSON, tensor entries,
// overlaps, checksums) -> every tensor read through each conversion -> load_model as a
// MemoryFormer and as a dense model (config and shape validation), then a forward pass on the
// loaded weights. Error is the expected outcome for bad input; anything else escaping (another
// exception, a sanitizer report, a broken invariant) is a finding.
#include <memoryformer/io/model_file.hpp>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <vector>

namespace mf = memoryformer;
namespace io = memoryformer::io;

namespace {

// A validated file promises these; check them rather than trust them.
void check_invariants(const io::SafetensorsFile& file, const io::TensorInfo& t) {
  const auto numel = static_cast<std::uint64_t>(t.numel());
  if (t.begin > t.end || t.end > file.data_size() || numel * io::dtype_size(t.dtype) != t.end - t.begin)
    std::abort();
}

template <class Scalar>
void try_view(const io::SafetensorsFile& file, const io::TensorInfo& t) {
  if (t.dtype != io::dtype_of<Scalar>()) return;
  try {
    const auto v = file.view<Scalar>(t.name);
    if (v.size() != t.numel()) std::abort();
  } catch (const mf::Error&) {  // unaligned data is refused, not a bug
  }
}

void read_every_tensor(const io::SafetensorsFile& file) {
  for (const io::TensorInfo& t : file.tensors()) {
    check_invariants(file, t);
    // Reading a tensor the file validated must not throw: no try here.
    const mf::RowMatrix<float> m = file.matrix<float>(t.name);
    if (m.size() != t.numel()) std::abort();
    std::vector<double> d(static_cast<std::size_t>(t.numel()));
    file.read(t.name, d.data());
    try_view<double>(file, t);
    try_view<float>(file, t);
    try_view<std::int64_t>(file, t);
    try_view<std::int32_t>(file, t);
    try_view<std::uint8_t>(file, t);
  }
}

template <class Model>
void try_load(const io::SafetensorsFile& file) {
  try {
    const Model model = io::load_model<Model>(file);
    if (model.n_layers() != model.config().n_layers) std::abort();
    // Whatever the weights (NaN, inf, denormals), inference on them must stay defined.
    mf::TokenMatrix tokens(1, 2);
    tokens << 0, model.config().vocab_size - 1;
    const mf::RowMatrix<float> logits = model.forward(tokens);
    if (logits.rows() != 2 || logits.cols() != model.config().vocab_size) std::abort();
  } catch (const mf::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::optional<io::SafetensorsFile> file;
  try {
    file.emplace(io::SafetensorsFile::from_memory(data, size, "fuzz-input"));
  } catch (const mf::Error&) {
    return 0;
  }
  read_every_tensor(*file);
  try_load<mf::MemoryFormerModel<float>>(*file);
  try_load<mf::DenseModel<float>>(*file);
  return 0;
}
