// libFuzzer target: bytes -> parse_json, every accessor on every value, and config_from_json.
// A parsed string must be valid UTF-8 and survive json_quote -> parse_json unchanged.
#include <memoryformer/io/json.hpp>
#include <memoryformer/io/model_file.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace mf = memoryformer;
namespace io = memoryformer::io;

namespace {

void check_string(const std::string& s) {
  if (!io::is_valid_utf8(s)) std::abort();
  if (io::parse_json(io::json_quote(s), "quoted").as_string() != s) std::abort();
}

void walk(const io::JsonValue& v) {
  switch (v.type()) {
    case io::JsonValue::Type::number:
      try {
        (void)v.as_int64();
      } catch (const mf::Error&) {
      }
      try {
        (void)v.as_uint64();
      } catch (const mf::Error&) {
      }
      break;
    case io::JsonValue::Type::string:
      check_string(v.as_string());
      break;
    case io::JsonValue::Type::array:
      for (const io::JsonValue& item : v.as_array()) walk(item);
      break;
    case io::JsonValue::Type::object:
      for (std::size_t i = 0; i < v.object_keys().size(); ++i) {
        check_string(v.object_keys()[i]);
        if (v.find(v.object_keys()[i]) != &v.object_values()[i]) std::abort();  // keys are unique
        walk(v.object_values()[i]);
      }
      break;
    default:
      break;
  }
  try {  // a wrong-type accessor names the path; it must throw Error, nothing else
    (void)v.as_string();
  } catch (const mf::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    walk(io::parse_json(text, "fuzz-input"));
  } catch (const mf::Error&) {
  }
  try {
    (void)io::config_from_json(std::string(text), "fuzz-input");
  } catch (const mf::Error&) {
  }
  return 0;
}
