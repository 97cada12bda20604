// A small command-line parser shared by the examples: typed flags with ranges, "--flag value" and
// "--flag=value", --help, and errors that name the flag, the value and what was expected.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace cli {

// A bad command line: the example prints it with the usage and exits with status 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Flags {
 public:
  explicit Flags(std::string synopsis) : synopsis_(std::move(synopsis)) {}

  // An integer in [min, max].
  void add(const std::string& name, int* target, const std::string& help, int min, int max) {
    add_flag(name, "N", help + " (default " + std::to_string(*target) + ")", [=](const std::string& text) {
      long long value = 0;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
      if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < min || value > max)
        throw UsageError(name + " = \"" + text + "\": expected an integer in [" + std::to_string(min) + ", " +
                         std::to_string(max) + "]");
      *target = static_cast<int>(value);
    });
  }

  // A finite number in [min, max].
  void add(const std::string& name, double* target, const std::string& help, double min, double max) {
    std::ostringstream def;
    def << *target;
    add_flag(name, "X", help + " (default " + def.str() + ")", [=](const std::string& text) {
      char* end = nullptr;
      const double value = std::strtod(text.c_str(), &end);
      if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(value) || value < min ||
          value > max) {
        std::ostringstream msg;
        msg << name << " = \"" << text << "\": expected a number in [" << min << ", " << max << "]";
        throw UsageError(msg.str());
      }
      *target = value;
    });
  }

  // Free text (a path, a prompt); `choices`, when given, lists the only accepted values.
  void add(const std::string& name, std::string* target, const std::string& help,
           std::vector<std::string> choices = {}) {
    std::string text = help;
    if (!choices.empty()) {
      text += " (";
      for (std::size_t i = 0; i < choices.size(); ++i) text += (i ? "|" : "") + choices[i];
      text += ")";
    }
    if (!target->empty()) text += " (default " + *target + ")";
    add_flag(name, choices.empty() ? "TEXT" : "NAME", text, [=](const std::string& value) {
      if (!choices.empty() && std::find(choices.begin(), choices.end(), value) == choices.end()) {
        std::string list;
        for (const std::string& c : choices) list += (list.empty() ? "" : ", ") + c;
        throw UsageError(name + " = \"" + value + "\": expected one of " + list);
      }
      *target = value;
    });
  }

  // Parses argv; returns false when --help was asked for (the usage is then on stdout).
  bool parse(int argc, char** argv) const {
    for (int i = 1; i < argc; ++i) {
      std::string name = argv[i];
      if (name == "--help" || name == "-h") {
        std::fputs(usage().c_str(), stdout);
        return false;
      }
      std::string value;
      const std::size_t eq = name.find('=');
      const bool inline_value = name.rfind("--", 0) == 0 && eq != std::string::npos;
      if (inline_value) {
        value = name.substr(eq + 1);
        name.resize(eq);
      }
      const Flag* flag = find(name);
      if (flag == nullptr) throw UsageError("unknown argument \"" + std::string(argv[i]) + "\"");
      if (!inline_value) {
        if (i + 1 >= argc) throw UsageError(name + ": missing value");
        value = argv[++i];
      }
      flag->set(value);
    }
    return true;
  }

  std::string usage() const {
    std::string out = "usage: " + synopsis_ + "\n";
    for (const Flag& f : flags_) {
      std::string left = "  " + f.name + " " + f.metavar;
      left.resize(std::max<std::size_t>(left.size() + 1, 24), ' ');
      out += left + f.help + "\n";
    }
    return out;
  }

 private:
  struct Flag {
    std::string name, metavar, help;
    std::function<void(const std::string&)> set;
  };

  void add_flag(const std::string& name, const std::string& metavar, const std::string& help,
                std::function<void(const std::string&)> set) {
    flags_.push_back({name, metavar, help, std::move(set)});
  }

  const Flag* find(const std::string& name) const {
    for (const Flag& f : flags_)
      if (f.name == name) return &f;
    return nullptr;
  }

  std::string synopsis_;
  std::vector<Flag> flags_;
};

}  // namespace cli
