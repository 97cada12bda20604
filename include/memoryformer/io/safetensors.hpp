// Reading and writing the safetensors format: an 8-byte little-endian header length N, N bytes of
// JSON header {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}
// (possibly padded with spaces), then the data section that the offsets point into.
//
// Files are untrusted: open() checks every field, every size product for overflow, every range
// against the data section and the tensors against each other before any accessor can hand out a
// pointer. A file the system will not open or map is a FileError; bytes that break the format are
// a FormatError naming the file, the tensor and the field. Optional integrity: metadata
// "checksums" holds a JSON object {tensor: XXH3-64 as 16 lowercase hex digits}, verified by open()
// and written by write_safetensors by default. A tool that wants to report every damaged tensor
// rather than stop at the first opens with Checksums::report and asks checksum_mismatches().
#pragma once

#include "../config.hpp"
#include "../platform/float16.hpp"
#include "detail/mapped_file.hpp"
#include "atomic_file.hpp"
#include "json.hpp"

#ifndef XXH_INLINE_ALL
#define XXH_INLINE_ALL
#endif
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <ostream>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "memoryformer/io/safetensors.hpp reads tensor data in place and needs a little-endian host"
#endif

namespace memoryformer {
inline namespace v0 {
namespace io {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

}  // namespace io

template <>
struct EnumNames<io::DType> {
  static constexpr EnumName<io::DType> table[] = {
      {io::DType::F64, "F64"}, {io::DType::F32, "F32"},  {io::DType::F16, "F16"}, {io::DType::BF16, "BF16"},
      {io::DType::I64, "I64"}, {io::DType::I32, "I32"},  {io::DType::I16, "I16"}, {io::DType::I8, "I8"},
      {io::DType::U8, "U8"},   {io::DType::BOOL, "BOOL"}};
};

namespace io {

// DType's to_string and operator<< (enum_names.hpp), where argument-dependent lookup looks for them.
using memoryformer::to_string;
using memoryformer::operator<<;

inline std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F64:
    case DType::I64:
      return 8;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16:
      return 2;
    case DType::I8:
    case DType::U8:
    case DType::BOOL:
      return 1;
  }
  return 0;
}

inline constexpr DType all_dtypes[] = {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64,
                                       DType::I32, DType::I16, DType::I8,  DType::U8,   DType::BOOL};

inline DType parse_dtype(std::string_view name) {
  if (const auto dtype = memoryformer::detail::enum_named<DType>(name)) return *dtype;
  memoryformer::detail::fail("parse_dtype", "dtype", json_quote(name),
                             "one of " + memoryformer::detail::enum_name_list<DType>());
}

// The dtype a C++ element type is stored as.
template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, double>)
    return DType::F64;
  else if constexpr (std::is_same_v<T, float>)
    return DType::F32;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return DType::I64;
  else if constexpr (std::is_same_v<T, std::int32_t>)
    return DType::I32;
  else if constexpr (std::is_same_v<T, std::int16_t>)
    return DType::I16;
  else if constexpr (std::is_same_v<T, std::int8_t>)
    return DType::I8;
  else if constexpr (std::is_same_v<T, std::uint8_t>)
    return DType::U8;
  else if constexpr (std::is_same_v<T, bool>)
    return DType::BOOL;
  else
    static_assert(!sizeof(T),
                  "no safetensors dtype for this type (F16/BF16 data: pass uint16_t with an explicit DType)");
}

// 16-bit float conversions (detail/float16.hpp), part of this header's API.
using memoryformer::detail::bf16_to_float;
using memoryformer::detail::f16_to_float;
using memoryformer::detail::float_to_bf16;
using memoryformer::detail::float_to_f16;

// ---- Reading

// What open() does with stored checksums: verify them (a FormatError names the first mismatch), or only
// check their form and leave the hashing to checksum_mismatches().
enum class Checksums { verify, report };

// A tensor whose bytes do not hash to the checksum stored for it.
struct ChecksumMismatch {
  std::string tensor, stored, actual;  // name, the header's hex, the data's hex
};

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::size_t begin = 0, end = 0;  // byte range in the data section

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (const std::int64_t d : shape) n *= d;
    return n;
  }
};

class SafetensorsFile {
 public:
  // Largest header accepted, as in the reference implementation: a bound on what a hostile
  // length field can make us parse.
  static constexpr std::uint64_t max_header_bytes = 100'000'000;

  static SafetensorsFile open(const std::string& path, Checksums checksums = Checksums::verify);
  // The same checks on bytes already in memory, read in place (not copied): they must outlive the
  // returned object. `name` stands for the path in messages.
  static SafetensorsFile from_memory(const void* bytes, std::size_t size, std::string name = "<memory>");

  SafetensorsFile(SafetensorsFile&& other) noexcept { take(other); }
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept {
    if (this != &other) take(other);
    return *this;
  }
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile() = default;

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // sorted by name
  bool has_checksums() const { return has_checksums_; }
  // Tensors that have a stored checksum (a subset of tensors(), all of them when written by us).
  std::size_t checksum_count() const { return checksums_.size(); }

  // Every tensor whose data does not match its checksum, by name; empty without checksums. With
  // `parts` > 1, only part `part` of the checksummed tensors (every parts-th by name, from the
  // part-th): processes that share a file share the hashing (distributed/sharded_loading.hpp).
  std::vector<ChecksumMismatch> checksum_mismatches(int part = 0, int parts = 1) const {
    if (parts < 1 || part < 0 || part >= parts)
      memoryformer::detail::fail("SafetensorsFile::checksum_mismatches", "part",
                                 std::to_string(part) + " of " + std::to_string(parts),
                                 "parts >= 1 and part in [0, parts)");
    std::vector<ChecksumMismatch> out;
    int index = 0;
    for (const auto& [name, stored] : checksums_) {
      if (index++ % parts != part) continue;
      const TensorInfo& t = *lookup(name);  // parse_checksums() made sure it exists
      std::string actual = hex64(XXH3_64bits(data_ + t.begin, t.end - t.begin));
      if (actual != stored) out.push_back({name, stored, std::move(actual)});
    }
    return out;
  }
  std::size_t data_size() const { return data_size_; }

  bool contains(const std::string& name) const { return lookup(name) != nullptr; }

  const TensorInfo& info(const std::string& name) const {
    if (const TensorInfo* t = lookup(name)) return *t;
    std::string known;
    for (std::size_t i = 0; i < tensors_.size() && i < 8; ++i)
      known += (i ? ", '" : "'") + tensors_[i].name + "'";
    if (tensors_.size() > 8) known += ", ...";
    malformed(path_, name, "",
              "not in the file (it has " + std::to_string(tensors_.size()) +
                  (tensors_.empty() ? " tensors)" : " tensors: " + known + ")"));
  }

  // The tensor's bytes inside the read-only mapping, valid while this object lives, or while
  // something holds mapping().
  const std::uint8_t* data(const std::string& name) const { return data_ + info(name).begin; }

  // The mapping of an open()ed file, shared: whoever holds it keeps every tensor's bytes valid
  // after this object is gone (load_model's mapped tables do). Null for from_memory(), whose
  // bytes the caller owns.
  const std::shared_ptr<const void>& mapping() const { return mapping_; }

  // [shape[0], product of the other dims] (1-D: [1, n], 0-D: [1, 1]), converted to Scalar.
  template <class Scalar>
  RowMatrix<Scalar> matrix(const std::string& name) const {
    const auto [rows, cols] = matrix_shape(info(name));
    RowMatrix<Scalar> m(rows, cols);
    read(name, m.data());
    return m;
  }

  // The tensor's numel() values, converted to Scalar, into out (no intermediate copy).
  template <class Scalar>
  void read(const std::string& name, Scalar* out) const {
    read_elements(name, 0, info(name).numel(), out);
  }

  // Elements [first, first + count) of the tensor in row-major order, converted to Scalar, into
  // out: a slice of a tensor without touching the rest of its bytes.
  template <class Scalar>
  void read_elements(const std::string& name, std::int64_t first, std::int64_t count, Scalar* out) const {
    static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                  "read into float or double");
    const TensorInfo& t = info(name);
    if (first < 0 || count < 0 || first > t.numel() - count)
      memoryformer::detail::fail("SafetensorsFile::read_elements", "elements",
                                 "[" + std::to_string(first) + ", " + std::to_string(first + count) + ")",
                                 "a range within the " + std::to_string(t.numel()) + " elements of '" + name + "'");
    const std::uint8_t* p = data_ + t.begin + static_cast<std::size_t>(first) * dtype_size(t.dtype);
    const auto n = static_cast<std::size_t>(count);
    switch (t.dtype) {
      case DType::F64:
        convert<double>(p, out, n, [](double v) { return v; });
        break;
      case DType::F32:
        convert<float>(p, out, n, [](float v) { return v; });
        break;
      case DType::F16:
        convert<std::uint16_t>(p, out, n, f16_to_float);
        break;
      case DType::BF16:
        convert<std::uint16_t>(p, out, n, bf16_to_float);
        break;
      case DType::I64:
        convert<std::int64_t>(p, out, n, [](std::int64_t v) { return v; });
        break;
      case DType::I32:
        convert<std::int32_t>(p, out, n, [](std::int32_t v) { return v; });
        break;
      case DType::I16:
        convert<std::int16_t>(p, out, n, [](std::int16_t v) { return v; });
        break;
      case DType::I8:
        convert<std::int8_t>(p, out, n, [](std::int8_t v) { return v; });
        break;
      case DType::U8:
        convert<std::uint8_t>(p, out, n, [](std::uint8_t v) { return v; });
        break;
      case DType::BOOL:
        convert<std::uint8_t>(p, out, n, [](std::uint8_t v) { return v != 0 ? 1 : 0; });
        break;
    }
  }

  // Zero-copy view with the same [rows, cols] as matrix(); only when the stored dtype is Scalar's
  // and the bytes are aligned for Scalar.
  template <class Scalar>
  Eigen::Map<const RowMatrix<Scalar>> view(const std::string& name) const {
    const TensorInfo& t = info(name);
    constexpr DType want = dtype_of<Scalar>();
    if (t.dtype != want)
      cannot_view(name, std::string("stored as ") + to_string(t.dtype) + ", so a view of " + to_string(want) +
                            " is impossible; use matrix() to convert");
    const auto [rows, cols] = matrix_shape(t);
    if (t.end == t.begin)
      return Eigen::Map<const RowMatrix<Scalar>>(nullptr, rows, cols);  // nothing to align
    const std::uint8_t* p = data_ + t.begin;
    if (reinterpret_cast<std::uintptr_t>(p) % alignof(Scalar) != 0)
      cannot_view(name, "data at data-section offset " + std::to_string(t.begin) + " is not aligned to " +
                            std::to_string(alignof(Scalar)) +
                            " bytes, so it cannot be viewed in place; use matrix() to copy");
    return Eigen::Map<const RowMatrix<Scalar>>(reinterpret_cast<const Scalar*>(p), rows, cols);
  }

 private:
  SafetensorsFile() = default;

  [[noreturn]] static void malformed(const std::string& path, const std::string& tensor,
                                     const std::string& field, const std::string& problem) {
    throw FormatError(path, tensor, field, problem);
  }
  // The file is fine; the view asked of it is not possible.
  [[noreturn]] void cannot_view(const std::string& tensor, const std::string& problem) const {
    throw ArgumentError("memoryformer: SafetensorsFile::view: file '" + path_ + "': tensor '" + tensor +
                        "': " + problem);
  }
  [[noreturn]] static void too_short(const std::string& path, std::uint64_t size) {
    malformed(path, "", "header length",
              "file of " + std::to_string(size) + " bytes is shorter than the 8-byte header length");
  }

  const TensorInfo* lookup(const std::string& name) const {
    const auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                                     [](const TensorInfo& t, const std::string& n) { return t.name < n; });
    return it != tensors_.end() && it->name == name ? &*it : nullptr;
  }

  static std::pair<Eigen::Index, Eigen::Index> matrix_shape(const TensorInfo& t) {
    if (t.shape.empty()) return {1, 1};
    if (t.shape.size() == 1) return {1, static_cast<Eigen::Index>(t.shape[0])};
    std::int64_t cols = 1;
    for (std::size_t i = 1; i < t.shape.size(); ++i) cols *= t.shape[i];
    return {static_cast<Eigen::Index>(t.shape[0]), static_cast<Eigen::Index>(cols)};
  }

  // memcpy per element: tensor data need not be aligned for Raw.
  template <class Raw, class Scalar, class F>
  static void convert(const std::uint8_t* p, Scalar* out, std::size_t n, F f) {
    for (std::size_t i = 0; i < n; ++i) {
      Raw raw;
      std::memcpy(&raw, p + i * sizeof(Raw), sizeof(Raw));
      out[i] = static_cast<Scalar>(f(raw));
    }
  }

  void take(SafetensorsFile& other) noexcept {
    path_ = std::move(other.path_);
    mapping_ = std::move(other.mapping_);
    data_ = std::exchange(other.data_, nullptr);
    data_size_ = std::exchange(other.data_size_, 0);
    metadata_ = std::move(other.metadata_);
    tensors_ = std::move(other.tensors_);
    has_checksums_ = std::exchange(other.has_checksums_, false);
    checksums_ = std::move(other.checksums_);
  }
  void parse(const std::uint8_t* bytes, std::uint64_t size, Checksums checksums);
  void parse_header(std::string_view header);
  TensorInfo parse_tensor(const std::string& name, const JsonValue& entry) const;
  void check_overlaps() const;
  void parse_checksums();
  static std::string hex64(std::uint64_t v);

  std::string path_;
  std::shared_ptr<const void> mapping_;  // unmaps when its last holder goes
  const std::uint8_t* data_ = nullptr;
  std::size_t data_size_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> tensors_;
  bool has_checksums_ = false;
  std::map<std::string, std::string> checksums_;  // tensor -> stored hex
};

}  // namespace io

namespace detail {
inline std::string hex64(std::uint64_t v) {
  static const char* const digits = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[static_cast<std::size_t>(i)] = digits[v & 15];
  return s;
}
// a * b, or false on overflow of 64 bits.
inline bool multiply(std::uint64_t a, std::uint64_t b, std::uint64_t& out) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return false;
  out = a * b;
  return true;
}
}  // namespace detail

namespace io {

inline std::string SafetensorsFile::hex64(std::uint64_t v) { return detail::hex64(v); }

inline SafetensorsFile SafetensorsFile::open(const std::string& path, Checksums checksums) {
  SafetensorsFile file;
  file.path_ = path;
  // Tables read in place (load_model's Weights::map) are read a row per page: with 4 KiB pages
  // every row is a TLB miss and a page walk, so the mapping asks for huge pages.
  detail::MappedFile mapped = detail::map_file(path, detail::HugePages::advise);
  if (mapped.size < 8) too_short(path, mapped.size);
  file.mapping_ = std::move(mapped.bytes);
  file.parse(static_cast<const std::uint8_t*>(file.mapping_.get()), mapped.size, checksums);
  return file;
}

inline SafetensorsFile SafetensorsFile::from_memory(const void* bytes, std::size_t size, std::string name) {
  SafetensorsFile file;
  file.path_ = std::move(name);
  if (bytes == nullptr)
    memoryformer::detail::fail("SafetensorsFile::from_memory", "bytes", "nullptr",
                               "the address of " + std::to_string(size) + " bytes of '" + file.path_ + "'");
  if (size < 8) too_short(file.path_, size);
  file.parse(static_cast<const std::uint8_t*>(bytes), size, Checksums::verify);
  return file;
}

// Everything after the bytes are in memory: header length, JSON, tensors, overlaps, checksums.
inline void SafetensorsFile::parse(const std::uint8_t* bytes, std::uint64_t size, Checksums checksums) {
  const std::string& path = path_;
  std::uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | bytes[i];
  if (header_bytes > size - 8)
    malformed(path, "", "header length",
              std::to_string(header_bytes) + " exceeds the " + std::to_string(size - 8) +
                  " bytes after the 8-byte length field");
  if (header_bytes > max_header_bytes)
    malformed(path, "", "header length",
              std::to_string(header_bytes) + " exceeds the limit of " + std::to_string(max_header_bytes) +
                  " bytes");
  data_ = bytes + 8 + header_bytes;
  data_size_ = static_cast<std::size_t>(size - 8 - header_bytes);
  parse_header(
      std::string_view(reinterpret_cast<const char*>(bytes + 8), static_cast<std::size_t>(header_bytes)));
  check_overlaps();
  std::sort(tensors_.begin(), tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  parse_checksums();
  if (checksums == Checksums::verify) {
    const std::vector<ChecksumMismatch> bad = checksum_mismatches();
    if (!bad.empty())
      malformed(path, bad.front().tensor, "checksum",
                "mismatch, header says " + bad.front().stored + ", data hashes to " + bad.front().actual);
  }
}

inline void SafetensorsFile::parse_header(std::string_view header) {
  const JsonValue root = parse_json(header, path_, "header");
  if (!root.is_object())
    malformed(path_, "", "header",
              std::string(JsonValue::type_name(root.type())) + ", expected a JSON object");
  const auto& keys = root.object_keys();
  const auto& values = root.object_values();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (keys[i] != "__metadata__") {
      tensors_.push_back(parse_tensor(keys[i], values[i]));
      continue;
    }
    if (!values[i].is_object())
      malformed(path_, "", "__metadata__",
                std::string(JsonValue::type_name(values[i].type())) + ", expected an object of strings");
    for (std::size_t k = 0; k < values[i].object_keys().size(); ++k) {
      const JsonValue& v = values[i].object_values()[k];
      const std::string& key = values[i].object_keys()[k];
      if (!v.is_string())
        malformed(path_, "", "__metadata__." + key,
                  std::string(JsonValue::type_name(v.type())) + ", expected a string");
      metadata_.emplace(key, v.as_string());
    }
  }
}

inline TensorInfo SafetensorsFile::parse_tensor(const std::string& name, const JsonValue& entry) const {
  const auto bad = [&](const std::string& field, const std::string& problem) {
    malformed(path_, name, field, problem);
  };
  if (!entry.is_object())
    bad("", std::string("entry is ") + JsonValue::type_name(entry.type()) +
                ", expected an object with dtype, shape and data_offsets");
  for (const std::string& key : entry.object_keys())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      bad(key, "unexpected key, expected exactly dtype, shape and data_offsets");
  const auto field = [&](const char* key, JsonValue::Type type) -> const JsonValue& {
    const JsonValue* v = entry.find(key);
    if (v == nullptr) bad(key, "missing");
    if (v->type() != type)
      bad(key, std::string(JsonValue::type_name(v->type())) + ", expected " + JsonValue::type_name(type));
    return *v;
  };
  // Exact non-negative integers from the number's text, never via double.
  const auto natural = [&](const JsonValue& v, const std::string& what) -> std::uint64_t {
    if (!v.is_number() || !v.is_integer())
      bad(what, (v.is_number() ? "the non-integer " + v.number_text() : JsonValue::type_name(v.type())) +
                    ", expected a non-negative integer");
    if (v.number_text()[0] == '-') bad(what, v.number_text() + " is negative");
    const std::string& text = v.number_text();
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) bad(what, text + " does not fit in 64 bits");
    return value;
  };

  TensorInfo t;
  t.name = name;
  const std::string& dtype = field("dtype", JsonValue::Type::string).as_string();
  const auto known = memoryformer::detail::enum_named<DType>(dtype);
  if (!known)
    bad("dtype", "unknown " + json_quote(dtype) + ", expected one of " +
                     memoryformer::detail::enum_name_list<DType>());
  t.dtype = *known;

  const auto& dims = field("shape", JsonValue::Type::array).as_array();
  std::uint64_t bytes = dtype_size(t.dtype);
  bool overflow = false;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    const std::uint64_t d = natural(dims[i], "shape[" + std::to_string(i) + "]");
    if (d > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      bad("shape[" + std::to_string(i) + "]", std::to_string(d) + " does not fit in 63 bits");
    t.shape.push_back(static_cast<std::int64_t>(d));
    overflow = !detail::multiply(bytes, d, bytes) || overflow;
  }
  const bool has_zero = std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end();
  if (overflow && !has_zero)
    bad("shape", detail::shape_string(t.shape) + " of " + to_string(t.dtype) + " overflows 64 bits of bytes");
  if (has_zero) {
    // Empty, but numel() and matrix() still multiply the other dims in 63 bits.
    std::uint64_t elements = 1;
    for (const std::int64_t d : t.shape)
      if (d != 0 && (!detail::multiply(elements, static_cast<std::uint64_t>(d), elements) ||
                     elements > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())))
        bad("shape",
            detail::shape_string(t.shape) + " is empty, but the product of its non-zero dims overflows 63 bits");
    bytes = 0;
  }

  const auto& offsets = field("data_offsets", JsonValue::Type::array).as_array();
  if (offsets.size() != 2)
    bad("data_offsets", std::to_string(offsets.size()) + " entries, expected 2 ([begin, end])");
  const std::uint64_t begin = natural(offsets[0], "data_offsets[0]"),
                      end = natural(offsets[1], "data_offsets[1]");
  const std::string range = "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
  if (begin > end) bad("data_offsets", range + " end before they begin");
  if (end > data_size_)
    bad("data_offsets", range + " exceed the data section of " + std::to_string(data_size_) + " bytes");
  if (end - begin != bytes)
    bad("data_offsets", range + " span " + std::to_string(end - begin) + " bytes, but shape " +
                            detail::shape_string(t.shape) + " of " + to_string(t.dtype) + " needs " +
                            std::to_string(bytes));
  t.begin = static_cast<std::size_t>(begin);
  t.end = static_cast<std::size_t>(end);
  return t;
}

// Sorted by begin, a non-empty tensor overlaps an earlier one iff it begins before the furthest
// end seen so far. Empty tensors occupy no bytes and overlap nothing.
inline void SafetensorsFile::check_overlaps() const {
  std::vector<const TensorInfo*> order;
  for (const TensorInfo& t : tensors_)
    if (t.end > t.begin) order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  const TensorInfo* furthest = nullptr;
  for (const TensorInfo* t : order) {
    if (furthest != nullptr && t->begin < furthest->end)
      malformed(path_, t->name, "data_offsets",
                "[" + std::to_string(t->begin) + ", " + std::to_string(t->end) +
                    "] overlap those of tensor '" + furthest->name + "' [" + std::to_string(furthest->begin) +
                    ", " + std::to_string(furthest->end) + "]");
    if (furthest == nullptr || t->end > furthest->end) furthest = t;
  }
}

inline void SafetensorsFile::parse_checksums() {
  const auto it = metadata_.find("checksums");
  if (it == metadata_.end()) return;
  has_checksums_ = true;
  const JsonValue sums = parse_json(it->second, path_, "__metadata__.checksums");
  if (!sums.is_object())
    malformed(path_, "", "__metadata__.checksums",
              std::string(JsonValue::type_name(sums.type())) + ", expected an object {tensor: hex}");
  for (std::size_t i = 0; i < sums.object_keys().size(); ++i) {
    const std::string& name = sums.object_keys()[i];
    const JsonValue& value = sums.object_values()[i];
    if (lookup(name) == nullptr)
      malformed(path_, name, "checksum",
                "listed in __metadata__.checksums, but no such tensor is in the file");
    const bool hex = value.is_string() && value.as_string().size() == 16 &&
                     value.as_string().find_first_not_of("0123456789abcdef") == std::string::npos;
    if (!hex)
      malformed(path_, name, "checksum",
                (value.is_string() ? json_quote(value.as_string()) : JsonValue::type_name(value.type())) +
                    std::string(" is not 16 lowercase hex digits"));
    checksums_[name] = value.as_string();
  }
}

// ---- Writing

struct TensorData {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  const void* data = nullptr;  // numel * dtype_size bytes, little-endian; read during the write only
};

template <class Scalar>
TensorData tensor(const std::string& name, const Scalar* data, std::vector<std::int64_t> shape) {
  return TensorData{name, dtype_of<Scalar>(), std::move(shape), data};
}

// A [rows, cols] tensor over the matrix's storage; the matrix must outlive the write.
template <class Scalar>
TensorData tensor(const std::string& name, const RowMatrix<Scalar>& m) {
  return TensorData{name,
                    dtype_of<Scalar>(),
                    {static_cast<std::int64_t>(m.rows()), static_cast<std::int64_t>(m.cols())},
                    m.data()};
}
template <class Scalar>
TensorData tensor(const std::string& name, RowMatrix<Scalar>&& m) = delete;  // would dangle

// A tensor whose bytes are produced while the file is written: produce(sink) calls sink(bytes, n)
// with the tensor's bytes, in order, in pieces of any size. What a writer of a model larger than
// memory needs (`memoryformer init`).
using ByteSink = std::function<void(const void*, std::size_t)>;
struct StreamedTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::function<void(const ByteSink&)> produce;
};

// Tensor data in the file starts on this boundary wherever the format allows it, so that a reader
// can use tables in place from a mapping (load_model's Weights::map).
inline constexpr std::size_t kTensorAlignment = 64;

// Writes the tensors to `path`, atomically, streaming each one's bytes from its producer. The data
// section starts at a multiple of kTensorAlignment bytes in the file (the header is padded with
// spaces, as the format allows). The format allows no gaps between tensors, so tensors whose size
// is a multiple of kTensorAlignment come first, in the given order, and all of them start aligned;
// the others follow. With `checksums`, metadata gains "checksums", filled in once the data is
// written.
inline void write_safetensors_streamed(const std::string& path, const std::vector<StreamedTensor>& tensors,
                                       std::map<std::string, std::string> metadata = {}, bool checksums = true) {
  const char* where = "write_safetensors";
  using memoryformer::detail::fail;
  std::set<std::string> names;
  std::vector<std::uint64_t> sizes;
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const StreamedTensor& t = tensors[i];
    const std::string arg = "tensors[" + std::to_string(i) + "]";
    if (t.name.empty()) fail(where, (arg + ".name").c_str(), "\"\"", "a non-empty name");
    if (t.name == "__metadata__")
      fail(where, (arg + ".name").c_str(), "\"__metadata__\"", "a name other than the reserved __metadata__");
    if (!is_valid_utf8(t.name)) fail(where, (arg + ".name").c_str(), json_quote(t.name), "valid UTF-8");
    if (!names.insert(t.name).second)
      fail(where, (arg + ".name").c_str(), json_quote(t.name), "a name not used by an earlier tensor");
    std::uint64_t bytes = dtype_size(t.dtype);
    bool overflow = false;
    for (const std::int64_t d : t.shape) {
      if (d < 0) fail(where, (arg + ".shape").c_str(), detail::shape_string(t.shape), "non-negative dims");
      overflow = !detail::multiply(bytes, static_cast<std::uint64_t>(d), bytes) || overflow;
    }
    if (std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end()) bytes = 0;
    if (overflow && bytes != 0)
      fail(where, (arg + ".shape").c_str(), detail::shape_string(t.shape), "a size that fits in 64 bits");
    if (bytes > 0 && !t.produce)
      fail(where, (arg + ".data").c_str(), "nullptr", "the tensor's " + std::to_string(bytes) + " bytes");
    if (bytes > std::numeric_limits<std::uint64_t>::max() - total)
      fail(where, (arg + ".shape").c_str(), detail::shape_string(t.shape), "a total size that fits in 64 bits");
    total += bytes;
    sizes.push_back(bytes);
  }
  for (const auto& [key, value] : metadata)
    if (!is_valid_utf8(key) || !is_valid_utf8(value))
      fail(where, "metadata key", json_quote(key), "valid UTF-8 key and value");
  if (checksums && metadata.count("checksums") != 0)
    fail(where, "metadata key", "\"checksums\"",
         "no \"checksums\" entry when checksums = true (it is written automatically)");

  std::vector<std::size_t> order;
  for (const bool aligned : {true, false})
    for (std::size_t i = 0; i < tensors.size(); ++i)
      if ((sizes[i] % kTensorAlignment == 0) == aligned) order.push_back(i);

  // The header for a given set of checksums: every checksum is 16 hex digits, so the header written
  // first with zeros has the length of the final one.
  const auto header_for = [&](const std::map<std::string, std::string>& sums) {
    std::map<std::string, std::string> meta = metadata;
    if (checksums) {
      std::string json = "{";
      for (const auto& [name, hex] : sums) json += (json.size() > 1 ? "," : "") + json_quote(name) + ":\"" + hex + "\"";
      meta["checksums"] = json + "}";
    }
    std::string header = "{";
    if (!meta.empty()) {
      header += "\"__metadata__\":{";
      bool first = true;
      for (const auto& [key, value] : meta) {
        header += (first ? "" : ",") + json_quote(key) + ":" + json_quote(value);
        first = false;
      }
      header += "}";
    }
    std::uint64_t offset = 0;
    for (const std::size_t i : order) {
      const StreamedTensor& t = tensors[i];
      std::string shape = "[";
      for (std::size_t k = 0; k < t.shape.size(); ++k) shape += (k ? "," : "") + std::to_string(t.shape[k]);
      header += (header.size() > 1 ? "," : "") + json_quote(t.name) + ":{\"dtype\":\"" + to_string(t.dtype) +
                "\",\"shape\":" + shape + "],\"data_offsets\":[" + std::to_string(offset) + "," +
                std::to_string(offset + sizes[i]) + "]}";
      offset += sizes[i];
    }
    header += "}";
    header.append((kTensorAlignment - (8 + header.size()) % kTensorAlignment) % kTensorAlignment, ' ');
    if (header.size() > SafetensorsFile::max_header_bytes)
      fail(where, "header size", header.size(),
           "at most " + std::to_string(SafetensorsFile::max_header_bytes) + " bytes");
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i)
      bytes[static_cast<std::size_t>(i)] = static_cast<char>((static_cast<std::uint64_t>(header.size()) >> (8 * i)) & 0xFF);
    return bytes + header;
  };

  std::map<std::string, std::string> sums;
  for (const StreamedTensor& t : tensors) sums[t.name] = std::string(16, '0');
  const std::string placeholder = header_for(sums);
  AtomicFile file(path);
  file.write(placeholder.data(), placeholder.size());
  XXH3_state_t state;
  for (const std::size_t i : order) {
    if (sizes[i] == 0) {
      sums[tensors[i].name] = detail::hex64(XXH3_64bits(nullptr, 0));
      continue;
    }
    XXH3_64bits_reset(&state);
    std::uint64_t given = 0;
    tensors[i].produce([&](const void* bytes, std::size_t n) {
      if (n > sizes[i] - given)
        fail(where, ("tensors[" + std::to_string(i) + "]").c_str(), "more bytes than its shape",
             std::to_string(sizes[i]) + " bytes");
      XXH3_64bits_update(&state, bytes, n);
      file.write(bytes, n);
      given += n;
    });
    if (given != sizes[i])
      fail(where, ("tensors[" + std::to_string(i) + "]").c_str(), std::to_string(given) + " bytes produced",
           std::to_string(sizes[i]) + " bytes (its shape)");
    sums[tensors[i].name] = detail::hex64(XXH3_64bits_digest(&state));
  }
  if (checksums) {
    const std::string header = header_for(sums);
    file.write_at(header.data(), header.size(), 0);
  }
  file.commit();
}

// A tensor in memory as a streamed one: its bytes in one piece (none when data is null; the writer
// checks the shape before it asks).
inline StreamedTensor streamed(const TensorData& t) {
  StreamedTensor s{t.name, t.dtype, t.shape, {}};
  if (t.data != nullptr) {
    std::uint64_t bytes = dtype_size(t.dtype);
    for (const std::int64_t d : t.shape) bytes *= static_cast<std::uint64_t>(std::max<std::int64_t>(d, 0));
    s.produce = [data = t.data, bytes](const ByteSink& sink) { sink(data, static_cast<std::size_t>(bytes)); };
  }
  return s;
}

// The same from tensors in memory.
inline void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                              std::map<std::string, std::string> metadata = {}, bool checksums = true) {
  std::vector<StreamedTensor> all;
  all.reserve(tensors.size());
  for (const TensorData& t : tensors) all.push_back(streamed(t));
  write_safetensors_streamed(path, all, std::move(metadata), checksums);
}

}  // namespace io
}  // namespace v0
}  // namespace memoryformer
