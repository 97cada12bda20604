// A small, strict JSON reader (RFC 8259) for headers of files we do not trust, and json_quote for
// writing them. Strict means: one value and nothing after it but whitespace, no duplicate object
// keys, no leading zeros, no raw control characters or invalid UTF-8 in strings, no unpaired
// surrogates, at most 64 nested arrays/objects (so hostile input cannot exhaust the stack).
// Every error is a FormatError naming the file the text came from and the field it holds: the
// byte offset for malformed text, the key path for accessors ("__metadata__.config.tau").
#pragma once

#include "../config.hpp"

#include <charconv>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace memoryformer {
inline namespace v0 {

namespace detail {

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 if it is malformed (overlong,
// surrogate, above U+10FFFF, truncated).
inline std::size_t utf8_length(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned b0 = byte(i);
  if (b0 < 0x80) return 1;
  std::size_t n = 0;
  unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return 0;
  }
  if (i + n > s.size() || byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  return n;
}

class JsonParser;

// Where a document's text comes from: a file, and the field of it the text fills (empty for a
// whole-file document).
struct JsonSource {
  std::string file, field;

  // The field a value at `path` ("$", "$.a[1]") is: the path itself in a whole-file document,
  // else appended to the field ("header" + "$.a" -> "header.a").
  std::string field_at(const std::string& path) const {
    return field.empty() ? path : field + path.substr(1);
  }
};

}  // namespace detail

namespace io {

inline bool is_valid_utf8(std::string_view s) {
  for (std::size_t i = 0, n = 0; i < s.size(); i += n)
    if ((n = detail::utf8_length(s, i)) == 0) return false;
  return true;
}

// `s` as a JSON string literal, quotes included. Bytes >= 0x80 pass through (UTF-8 is expected).
inline std::string json_quote(std::string_view s) {
  constexpr std::string_view plain = "\"\\\b\f\n\r\t", escaped = "\"\\bfnrt";
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (const std::size_t k = plain.find(ch); k != std::string_view::npos) {
      out += '\\';
      out += escaped[k];
    } else if (c < 0x20) {
      out += "\\u00";
      out += "0123456789abcdef"[c >> 4];
      out += "0123456789abcdef"[c & 15];
    } else {
      out += ch;
    }
  }
  return out + '"';
}

class JsonValue {
 public:
  enum class Type { null, boolean, number, string, array, object };

  Type type() const { return type_; }
  // Where this value sits in the document: "$", "$.shape[0]", "$[\"embed.weight\"]".
  const std::string& path() const { return path_; }
  bool is_null() const { return type_ == Type::null; }
  bool is_bool() const { return type_ == Type::boolean; }
  bool is_number() const { return type_ == Type::number; }
  bool is_string() const { return type_ == Type::string; }
  bool is_array() const { return type_ == Type::array; }
  bool is_object() const { return type_ == Type::object; }
  // A number written without fraction or exponent, so as_int64/as_uint64 may read it exactly.
  bool is_integer() const { return type_ == Type::number && text_.find_first_of(".eE") == std::string::npos; }

  bool as_bool() const { return expect(Type::boolean).bool_; }
  double as_number() const { return expect(Type::number).number_; }
  // The number exactly as written in the document.
  const std::string& number_text() const { return expect(Type::number).text_; }
  std::int64_t as_int64() const { return integer<std::int64_t>("an integer in [-2^63, 2^63)"); }
  std::uint64_t as_uint64() const { return integer<std::uint64_t>("an integer in [0, 2^64)"); }
  const std::string& as_string() const { return expect(Type::string).text_; }
  const std::vector<JsonValue>& as_array() const { return expect(Type::array).items_; }
  // An object's keys in document order; object_values()[i] belongs to object_keys()[i].
  const std::vector<std::string>& object_keys() const { return expect(Type::object).keys_; }
  const std::vector<JsonValue>& object_values() const { return expect(Type::object).items_; }
  // nullptr when the object has no such key.
  const JsonValue* find(std::string_view key) const {
    const auto& keys = object_keys();
    for (std::size_t i = 0; i < keys.size(); ++i)
      if (keys[i] == key) return &items_[i];
    return nullptr;
  }
  const JsonValue& at(std::string_view key) const {
    if (const JsonValue* v = find(key)) return *v;
    malformed("no key " + io::json_quote(key));
  }

  static const char* type_name(Type type) {
    static const char* const names[] = {"null", "a boolean", "a number", "a string", "an array", "an object"};
    return names[static_cast<int>(type)];
  }

 private:
  friend class memoryformer::detail::JsonParser;

  [[noreturn]] void malformed(const std::string& problem) const {
    const memoryformer::detail::JsonSource none{"json", ""};  // a JsonValue{} belongs to no document
    const auto& source = source_ ? *source_ : none;
    throw FormatError(source.file, "", source.field_at(path_), problem);
  }
  const JsonValue& expect(Type want) const {
    if (type_ != want) malformed(std::string(type_name(type_)) + ", expected " + type_name(want));
    return *this;
  }
  template <class Int>
  Int integer(const char* expected) const {
    const std::string& text = number_text();
    Int value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (!is_integer() || ec != std::errc() || end != text.data() + text.size())
      malformed(text + ", expected " + expected);
    return value;
  }

  Type type_ = Type::null;
  bool bool_ = false;
  double number_ = 0;
  std::string text_;  // a string's value, or a number as written
  std::vector<std::string> keys_;
  std::vector<JsonValue> items_;  // array elements, or object values in key order
  std::string path_ = "$";
  std::shared_ptr<const memoryformer::detail::JsonSource> source_;  // shared by every value of a document
};

}  // namespace io

namespace detail {

class JsonParser {
 public:
  JsonParser(std::string_view text, JsonSource source)
      : text_(text), source_(std::make_shared<const JsonSource>(std::move(source))) {}

  io::JsonValue document() {
    skip_whitespace();
    io::JsonValue root = value("$", 0);
    skip_whitespace();
    if (pos_ != text_.size()) error("unexpected " + describe() + " after the JSON value");
    return root;
  }

 private:
  static constexpr int max_depth = 64;

  [[noreturn]] void error(const std::string& problem) const { error_at(pos_, problem); }
  [[noreturn]] void error_at(std::size_t at, const std::string& problem) const {
    throw FormatError(source_->file, "", source_->field,
                      "invalid JSON at byte " + std::to_string(at) + ": " + problem);
  }
  std::string describe() const {
    if (pos_ >= text_.size()) return "end of input";
    const auto c = static_cast<unsigned char>(text_[pos_]);
    if (c >= 0x20 && c < 0x7F) return std::string("character '") + text_[pos_] + "'";
    static const char* const hex = "0123456789abcdef";
    return std::string("byte 0x") + hex[c >> 4] + hex[c & 15];
  }
  bool at(char c) const { return pos_ < text_.size() && text_[pos_] == c; }
  bool at_digit() const { return pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9'; }
  void skip_whitespace() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }
  void expect_char(char c, const char* context) {
    if (!at(c)) error(std::string("expected '") + c + "' " + context + ", found " + describe());
    ++pos_;
  }

  io::JsonValue value(std::string path, int depth) {
    io::JsonValue v;
    v.path_ = std::move(path);
    v.source_ = source_;
    if (pos_ >= text_.size()) error("expected a value, found end of input");
    const char c = text_[pos_];
    if (c == '{' || c == '[') {
      if (depth >= max_depth)
        error("arrays and objects nested deeper than " + std::to_string(max_depth) + " levels");
      if (c == '{')
        object(v, depth + 1);
      else
        array(v, depth + 1);
    } else if (c == '"') {
      v.type_ = io::JsonValue::Type::string;
      v.text_ = string();
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      number(v);
    } else if (!literal("true", v, true) && !literal("false", v, false) && !literal("null", v, false)) {
      error("expected a value, found " + describe());
    }
    return v;
  }

  bool literal(std::string_view word, io::JsonValue& v, bool flag) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    v.type_ = word == "null" ? io::JsonValue::Type::null : io::JsonValue::Type::boolean;
    v.bool_ = flag;
    return true;
  }

  void object(io::JsonValue& v, int depth) {
    v.type_ = io::JsonValue::Type::object;
    ++pos_;
    skip_whitespace();
    if (at('}')) return void(++pos_);
    std::set<std::string> seen;
    for (;;) {
      skip_whitespace();
      const std::size_t key_at = pos_;
      if (!at('"')) error("expected a string key, found " + describe());
      std::string key = string();
      if (!seen.insert(key).second)
        error_at(key_at, "duplicate key " + io::json_quote(key) + " in " + v.path_);
      skip_whitespace();
      expect_char(':', "after an object key");
      skip_whitespace();
      v.items_.push_back(value(v.path_ + child_suffix(key), depth));
      v.keys_.push_back(std::move(key));
      skip_whitespace();
      if (at('}')) return void(++pos_);
      expect_char(',', "or '}' in an object");
    }
  }

  void array(io::JsonValue& v, int depth) {
    v.type_ = io::JsonValue::Type::array;
    ++pos_;
    skip_whitespace();
    if (at(']')) return void(++pos_);
    for (;;) {
      skip_whitespace();
      v.items_.push_back(value(v.path_ + "[" + std::to_string(v.items_.size()) + "]", depth));
      skip_whitespace();
      if (at(']')) return void(++pos_);
      expect_char(',', "or ']' in an array");
    }
  }

  // ".key" for identifier-like keys, otherwise ["key"], so that paths stay unambiguous.
  static std::string child_suffix(const std::string& key) {
    bool plain = !key.empty() && !(key[0] >= '0' && key[0] <= '9');
    for (const char c : key)
      plain =
          plain && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_');
    return plain ? "." + key : "[" + io::json_quote(key) + "]";
  }

  void number(io::JsonValue& v) {
    const std::size_t start = pos_;
    if (at('-')) ++pos_;
    if (!at_digit()) error("expected a digit, found " + describe());
    if (at('0')) {
      ++pos_;
      if (at_digit()) error("leading zeros are not allowed in numbers");
    }
    while (at_digit()) ++pos_;
    if (at('.')) {
      ++pos_;
      if (!at_digit()) error("expected a digit after '.', found " + describe());
      while (at_digit()) ++pos_;
    }
    if (at('e') || at('E')) {
      ++pos_;
      if (at('+') || at('-')) ++pos_;
      if (!at_digit()) error("expected a digit in the exponent, found " + describe());
      while (at_digit()) ++pos_;
    }
    v.type_ = io::JsonValue::Type::number;
    v.text_ = std::string(text_.substr(start, pos_ - start));
    const auto [end, ec] = std::from_chars(v.text_.data(), v.text_.data() + v.text_.size(), v.number_);
    if (ec != std::errc() || end != v.text_.data() + v.text_.size())
      error_at(start, "number " + v.text_ + " is out of the range of a double");
  }

  unsigned hex4() {
    unsigned code = 0;
    for (int k = 0; k < 4; ++k, ++pos_) {
      const char c = pos_ < text_.size() ? text_[pos_] : '\0';
      const int digit = c >= '0' && c <= '9'   ? c - '0'
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                               : -1;
      if (digit < 0) error("expected 4 hex digits after \\u, found " + describe());
      code = code * 16 + static_cast<unsigned>(digit);
    }
    return code;
  }

  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) return void(out += static_cast<char>(cp));
    const int tail = cp < 0x800 ? 1 : cp < 0x10000 ? 2 : 3;  // continuation bytes
    static const unsigned lead[] = {0, 0xC0, 0xE0, 0xF0};
    out += static_cast<char>(lead[tail] | (cp >> (6 * tail)));
    for (int k = tail - 1; k >= 0; --k) out += static_cast<char>(0x80 | ((cp >> (6 * k)) & 0x3F));
  }

  std::string string() {
    const std::size_t start = pos_++;
    std::string out;
    for (;;) {
      if (pos_ >= text_.size()) error_at(start, "unterminated string");
      const auto c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) error("control character " + describe() + " in a string must be escaped");
      if (c != '\\') {
        const std::size_t n = detail::utf8_length(text_, pos_);
        if (n == 0) error("invalid UTF-8 (" + describe() + ") in a string");
        out.append(text_.substr(pos_, n));
        pos_ += n;
        continue;
      }
      const std::size_t escape_at = pos_++;
      const char e = pos_ < text_.size() ? text_[pos_] : '\0';
      static const std::string_view from = "\"\\/bfnrt", to = "\"\\/\b\f\n\r\t";
      if (const std::size_t k = from.find(e); e != '\0' && k != std::string_view::npos) {
        out += to[k];
        ++pos_;
        continue;
      }
      if (e != 'u') error("invalid escape sequence \\" + describe());
      ++pos_;
      unsigned cp = hex4();
      if (cp >= 0xDC00 && cp <= 0xDFFF) error_at(escape_at, "unpaired low surrogate in \\u escape");
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (text_.substr(pos_, 2) != "\\u")
          error_at(escape_at, "high surrogate not followed by a \\u low surrogate");
        pos_ += 2;
        const unsigned low = hex4();
        if (low < 0xDC00 || low > 0xDFFF)
          error_at(escape_at, "high surrogate not followed by a low surrogate");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
      }
      append_utf8(out, cp);
    }
  }

  std::string_view text_;
  std::shared_ptr<const JsonSource> source_;
  std::size_t pos_ = 0;
};

}  // namespace detail

namespace io {

// Parses one JSON document: the text of `file`, or of its `field` when the document is one field
// of a larger file ("header" of a safetensors file). Both name the place in every FormatError.
inline JsonValue parse_json(std::string_view text, std::string_view file, std::string_view field = {}) {
  return detail::JsonParser(text, {std::string(file), std::string(field)}).document();
}

}  // namespace io
}  // namespace v0
}  // namespace memoryformer
