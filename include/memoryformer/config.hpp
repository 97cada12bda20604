// Version, common types, and the argument checks that throw ArgumentError (errors.hpp).
#pragma once

#include "errors.hpp"

#include <Eigen/Core>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#define MF_VERSION_MAJOR 0
#define MF_VERSION_MINOR 1
#define MF_VERSION_PATCH 0
#define MF_VERSION_STRING "0.1.0"

// SIMD kernels need GCC/Clang target attributes on x86-64. Defining MF_DISABLE_SIMD (the CMake
// option MF_SIMD=OFF does) leaves only the portable scalar path.
#if !defined(MF_DISABLE_SIMD) && (defined(__x86_64__) || defined(__amd64__)) && \
    (defined(__GNUC__) || defined(__clang__))
#define MF_HAVE_X86_SIMD 1
#else
#define MF_HAVE_X86_SIMD 0
#endif

namespace memoryformer {
inline namespace v0 {

// [rows, cols] row-major matrix: the layout of activations ([tokens, features]) and tables.
template <class Scalar>
using RowMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Bucket indices, one per (token, chunk): [N, K].
using CodeMatrix = RowMatrix<std::int32_t>;

// What a module's constructor puts in its weights.
enum class Init {
  random,         // every weight drawn from the seed (the default)
  except_tables,  // all but the hash tables, which stay unallocated: `memoryformer init` streams
                  // them to disk a few rows at a time (MemoryLayer::draw_table_rows)
  none,           // nothing drawn and no tables allocated: what load_model fills in
};

// How a chunk's selected row is weighted (docs/method.md §1 step 4).
enum class Score {
  paper,  // s = p(z), Eq. 10
  l1,     // s = ||z||_1 * p(z), as the authors' released code trains
};

inline const char* to_string(Score score) {
  switch (score) {
    case Score::paper:
      return "paper";
    case Score::l1:
      return "l1";
  }
  return "unknown";
}

inline std::ostream& operator<<(std::ostream& os, Score score) { return os << to_string(score); }

// Where RMSNorm adds its eps (docs/method.md §2). Both agree to ~eps relative; they differ where a
// row is near zero, and a hash can flip there.
enum class RmsForm {
  eps_in_root,     // x / sqrt(mean(x^2) + eps): the library's default
  eps_after_root,  // x / (sqrt(mean(x^2)) + eps): the released code's RMSNorm
};

inline const char* to_string(RmsForm form) {
  switch (form) {
    case RmsForm::eps_in_root:
      return "eps_in_root";
    case RmsForm::eps_after_root:
      return "eps_after_root";
  }
  return "unknown";
}

inline std::ostream& operator<<(std::ostream& os, RmsForm form) { return os << to_string(form); }

// How the token embedding and the LM head are drawn (docs/method.md §3).
enum class EmbeddingInit {
  normal_0_02,  // N(0, 0.02): the library's default
  small_init,   // N(0, sqrt(2 / (5 d))): the released code's `small_init`
};

inline const char* to_string(EmbeddingInit init) {
  switch (init) {
    case EmbeddingInit::normal_0_02:
      return "normal_0.02";
    case EmbeddingInit::small_init:
      return "small_init";
  }
  return "unknown";
}

inline std::ostream& operator<<(std::ostream& os, EmbeddingInit init) { return os << to_string(init); }

// A function between the Memory Block's LayerNorm and its down layer (docs/method.md §2; paper
// Table 6 adds a GeLU there, the default has none: the hash is the non-linearity).
enum class Activation {
  none,
  gelu,  // exact, x Phi(x)
};

inline const char* to_string(Activation activation) {
  switch (activation) {
    case Activation::none:
      return "none";
    case Activation::gelu:
      return "gelu";
  }
  return "unknown";
}

inline std::ostream& operator<<(std::ostream& os, Activation activation) { return os << to_string(activation); }

namespace detail {

// The value among `values` whose to_string is `name`, or nothing: how a config file and the command
// line read Score, RmsForm, EmbeddingInit and Activation by name.
template <class Enum>
std::optional<Enum> enum_named(const std::string& name, std::initializer_list<Enum> values) {
  for (Enum e : values)
    if (name == to_string(e)) return e;
  return std::nullopt;
}

// Builds "where: name = value, expected what" and throws it as ArgumentError.
template <class Value>
[[noreturn]] void fail(const char* where, const char* name, const Value& value, const std::string& expected) {
  std::ostringstream msg;
  msg << "memoryformer: " << where << ": " << name << " = " << value << ", expected " << expected;
  throw ArgumentError(msg.str());
}

// "[2, 3, 4]": how errors and listings print a shape.
inline std::string shape_string(const std::vector<std::int64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// Throws unless a matrix argument is want_rows x want_cols.
inline void require_shape(const char* where, const char* name, Eigen::Index rows, Eigen::Index cols,
                          Eigen::Index want_rows, Eigen::Index want_cols) {
  if (rows != want_rows || cols != want_cols)
    fail(where, name, std::to_string(rows) + " x " + std::to_string(cols) + " matrix",
         "shape " + std::to_string(want_rows) + " x " + std::to_string(want_cols));
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
