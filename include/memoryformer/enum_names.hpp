// The names of the library's enums, each declared once next to its enum, and the functions that use
// them: to_string, operator<< and detail::enum_named (a value by name). An enum gets names by a
// specialisation of EnumNames in namespace memoryformer, a {value, "name"} pair a line:
//
//   template <>
//   struct EnumNames<Score> {
//     static constexpr EnumName<Score> table[] = {{Score::paper, "paper"}, {Score::l1, "l1"}};
//   };
//
// An enum of a nested namespace (io::DType) also brings to_string and operator<< into its own with
// `using memoryformer::to_string; using memoryformer::operator<<;`, so that argument-dependent
// lookup finds them there.
#pragma once

#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>

namespace memoryformer {
inline namespace v0 {

template <class Enum>
struct EnumName {
  Enum value;
  const char* name;
};

// Specialised for each named enum with `static constexpr EnumName<Enum> table[]`, in the order the
// names are listed (in errors and help).
template <class Enum>
struct EnumNames;

namespace detail {

// Whether Enum has names: what admits it to to_string and operator<<.
template <class Enum, class = void>
struct has_enum_names : std::false_type {};

template <class Enum>
struct has_enum_names<Enum, std::void_t<decltype(EnumNames<Enum>::table)>> : std::true_type {};

}  // namespace detail

// The name of `value`, "unknown" for a value outside the enum's table.
template <class Enum, std::enable_if_t<detail::has_enum_names<Enum>::value, int> = 0>
constexpr const char* to_string(Enum value) {
  for (const EnumName<Enum>& e : EnumNames<Enum>::table)
    if (e.value == value) return e.name;
  return "unknown";
}

template <class Enum, std::enable_if_t<detail::has_enum_names<Enum>::value, int> = 0>
std::ostream& operator<<(std::ostream& os, Enum value) {
  return os << to_string(value);
}

namespace detail {

// The value named `name`, or nothing: how a config file, the command line and MEMORYFORMER_PATH
// read an enum.
template <class Enum>
std::optional<Enum> enum_named(std::string_view name) {
  for (const EnumName<Enum>& e : EnumNames<Enum>::table)
    if (name == e.name) return e.value;
  return std::nullopt;
}

// The names in table order, each between `quote`s, `separator` between them: what an error lists
// as expected ("scalar, avx2, avx512"; "\"paper\" or \"l1\"").
template <class Enum>
std::string enum_name_list(std::string_view separator = ", ", std::string_view quote = "") {
  std::string list;
  for (const EnumName<Enum>& e : EnumNames<Enum>::table) {
    if (!list.empty()) list += separator;
    list.append(quote).append(e.name).append(quote);
  }
  return list;
}

}  // namespace detail
}  // namespace v0
}  // namespace memoryformer
