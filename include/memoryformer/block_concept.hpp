// The Block concept: what Model<Block> (model.hpp) and the model files (io/model_file.hpp) need of a
// block type, written as checks. Model static_asserts each one, so a block that lacks a member is
// refused with a message naming it, rather than with an error from deep inside Model.
// MemoryFormerBlock and DenseBlock (block.hpp) model it; so can a user's own block. A block with
// hash tables also offers compress_tables(TableType, TableLayout), table_type() and table_layout(),
// which Model::compress_tables() and friends call only when used.
#pragma once

#include "attention.hpp"
#include "config.hpp"
#include "context.hpp"
#include "memory_layer.hpp"
#include "model_config.hpp"
#include "parameter.hpp"

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

namespace memoryformer {
inline namespace v0 {
namespace detail {

// One detector per requirement; each is false (never a hard error) when B lacks what it names, even
// when B has no Scalar at all.
template <class B>
using BlockRows = RowMatrix<typename B::Scalar>;
template <class B>
using BlockInput = Eigen::Ref<const BlockRows<B>>;

template <class, template <class> class, class = void>
struct Detects : std::false_type {};
template <class B, template <class> class Expr>
struct Detects<B, Expr, std::void_t<Expr<B>>> : std::true_type {};

template <class B>
using BlockScalarExpr = std::enable_if_t<std::is_floating_point<typename B::Scalar>::value>;
template <class B>
using BlockSavedExpr = decltype(typename B::Saved{});
template <class B>
using BlockArchExpr = decltype(std::string(B::kArch));
template <class B>
using BlockConstructorExpr = decltype(B(std::declval<const ModelConfig&>(), std::uint64_t{}, Init::random));
template <class B>
using BlockForwardExpr = decltype(BlockRows<B>(std::declval<const B&>().forward(
    std::declval<const BlockInput<B>&>(), Eigen::Index{}, std::declval<typename B::Saved*>())));
template <class B>
using BlockBackwardExpr = decltype(BlockRows<B>(
    std::declval<B&>().backward(std::declval<const typename B::Saved&>(), std::declval<const BlockInput<B>&>())));
template <class B>
using BlockDecodeExpr = decltype(BlockRows<B>(std::declval<const B&>().decode(
    std::declval<const BlockInput<B>&>(), std::declval<KVCache<typename B::Scalar>&>())));
template <class B>
using BlockZeroGradExpr = decltype(std::declval<B&>().zero_grad());
template <class B>
using BlockSetContextExpr = decltype(std::declval<B&>().set_context(std::declval<const Context&>()));
template <class B>
using BlockParameterValuesExpr = decltype(std::int64_t(B::parameter_values(std::declval<const ModelConfig&>())));
template <class B>
using BlockAppendExpr = decltype(std::declval<B&>().append_parameters(
                                     std::string(), std::declval<ParameterList<typename B::Scalar>&>()),
                                 std::declval<B&>().append_weights(std::string(),
                                                                   std::declval<ParameterList<typename B::Scalar>&>()));
template <class B>
using BlockMemoryLayersExpr = decltype(std::declval<B&>().append_memory_layers(
    std::string(), std::declval<NamedMemoryLayers<typename B::Scalar>&>()));

}  // namespace detail

// Whether B models the Block concept: all of the requirements above.
template <class B>
struct is_block
    : std::conjunction<
          detail::Detects<B, detail::BlockScalarExpr>, detail::Detects<B, detail::BlockSavedExpr>,
          detail::Detects<B, detail::BlockArchExpr>, detail::Detects<B, detail::BlockConstructorExpr>,
          detail::Detects<B, detail::BlockForwardExpr>, detail::Detects<B, detail::BlockBackwardExpr>,
          detail::Detects<B, detail::BlockDecodeExpr>, detail::Detects<B, detail::BlockZeroGradExpr>,
          detail::Detects<B, detail::BlockSetContextExpr>,
          detail::Detects<B, detail::BlockParameterValuesExpr>, detail::Detects<B, detail::BlockAppendExpr>,
          detail::Detects<B, detail::BlockMemoryLayersExpr>> {};

template <class B>
inline constexpr bool is_block_v = is_block<B>::value;

namespace detail {

// Asserts each requirement on its own, so the compiler's message names the one B misses.
template <class B>
constexpr bool check_block() {
  static_assert(Detects<B, BlockScalarExpr>::value,
                "Block: needs `using Scalar = float` (or double), the type of its activations");
  static_assert(Detects<B, BlockSavedExpr>::value,
                "Block: needs a default-constructible `Saved`, what backward() reads from forward()");
  static_assert(Detects<B, BlockArchExpr>::value,
                "Block: needs `static constexpr const char* kArch`, the \"arch\" its model files record");
  static_assert(Detects<B, BlockConstructorExpr>::value,
                "Block: needs a constructor Block(const ModelConfig&, std::uint64_t seed, Init)");
  static_assert(Detects<B, BlockForwardExpr>::value,
                "Block: needs `RowMatrix<Scalar> forward(const Input& x, Eigen::Index seq_len, Saved*) const`");
  static_assert(Detects<B, BlockBackwardExpr>::value,
                "Block: needs `RowMatrix<Scalar> backward(const Saved&, const Input& dy)`");
  static_assert(Detects<B, BlockDecodeExpr>::value,
                "Block: needs `RowMatrix<Scalar> decode(const Input& x, KVCache<Scalar>&) const`");
  static_assert(Detects<B, BlockZeroGradExpr>::value, "Block: needs `void zero_grad()`");
  static_assert(Detects<B, BlockSetContextExpr>::value, "Block: needs `void set_context(Context)`");
  static_assert(Detects<B, BlockParameterValuesExpr>::value,
                "Block: needs `static std::int64_t parameter_values(const ModelConfig&)`");
  static_assert(Detects<B, BlockAppendExpr>::value,
                "Block: needs append_parameters(const std::string&, ParameterList<Scalar>&) and "
                "append_weights(const std::string&, ParameterList<Scalar>&)");
  static_assert(Detects<B, BlockMemoryLayersExpr>::value,
                "Block: needs append_memory_layers(const std::string&, NamedMemoryLayers<Scalar>&)");
  return true;
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
