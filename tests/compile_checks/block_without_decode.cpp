// Model<Block> of a block that lacks decode(): must not compile, and the error must name decode
// (check_compile_fail.cmake). With MF_BLOCK_IS_COMPLETE the same file must compile, so a failure
// for any other reason (a broken include, say) cannot pass as the expected one.
#include <memoryformer/memoryformer.hpp>

namespace mf = memoryformer;

struct BlockWithoutDecode : mf::DenseBlock<float> {
  using mf::DenseBlock<float>::DenseBlock;
#ifndef MF_BLOCK_IS_COMPLETE
  void decode() = delete;  // hides DenseBlock::decode
#endif
};

int main() {
  mf::ModelConfig config;
  config.n_layers = 1;
  mf::Model<BlockWithoutDecode> model(config);
  return model.n_layers() == 1 ? 0 : 1;
}
