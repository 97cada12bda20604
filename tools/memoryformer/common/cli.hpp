// A small command-line parser shared by the examples and the memoryformer tool: typed flags with
// ranges, switches, "--flag value" and "--flag=value", positional arguments, required flags,
// --help, and errors that name the flag, the value and what was expected.
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

// A bad command line: the program prints it and exits with status 2.
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

  // A switch: true when given. It takes no value ("--flag=x" is an error).
  void add(const std::string& name, bool* target, const std::string& help) {
    add_flag(name, "", help, [=](const std::string& value) {
      if (!value.empty()) throw UsageError(name + " = \"" + value + "\": a switch, expected no value");
      *target = true;
    });
  }

  // A positional argument (a word not starting with '-'), filled in the order they were added.
  void add_positional(const std::string& name, std::string* target, const std::string& help) {
    positionals_.push_back({name, "", help, [target](const std::string& value) { *target = value; }});
  }

  // The flag (or positional argument) must be given: parse() fails naming it otherwise.
  void require(const std::string& name) { required_.push_back(name); }

  // Parses argv; returns false when --help was asked for (the usage is then on stdout).
  bool parse(int argc, char** argv) const {
    seen_.clear();
    std::size_t next_positional = 0;
    for (int i = 1; i < argc; ++i) {
      std::string name = argv[i];
      if (name == "--help" || name == "-h") {
        std::fputs(usage().c_str(), stdout);
        return false;
      }
      if (!name.empty() && name[0] != '-' && next_positional < positionals_.size()) {
        const Flag& p = positionals_[next_positional++];
        p.set(name);
        seen_.push_back(p.name);
        continue;
      }
      std::string value;
      const std::size_t eq = name.find('=');
      const bool inline_value = name.rfind("--", 0) == 0 && eq != std::string::npos;
      if (inline_value) {
        value = name.substr(eq + 1);
        name.resize(eq);
      }
      const Flag* flag = find(name);
      if (flag == nullptr && !name.empty() && name[0] != '-' && !positionals_.empty()) {
        std::string names;
        for (const Flag& p : positionals_) names += (names.empty() ? "" : " ") + p.name;
        throw UsageError("unexpected argument \"" + name + "\", expected only " + names + " besides flags");
      }
      if (flag == nullptr) {
        std::string known;
        for (const Flag& f : flags_) known += (known.empty() ? "" : ", ") + f.name;
        throw UsageError("unknown argument \"" + std::string(argv[i]) + "\", expected one of " + known +
                         (known.empty() ? "--help" : " or --help"));
      }
      if (!inline_value && !flag->is_switch()) {
        if (i + 1 >= argc) throw UsageError(name + ": missing value");
        value = argv[++i];
      }
      flag->set(value);
      seen_.push_back(name);
    }
    for (const std::string& name : required_)
      if (!given(name)) {
        const Flag* f = find(name);
        throw UsageError(name + ": missing, expected " + (f ? f->help : lookup_positional(name)));
      }
    return true;
  }

  // Whether the last parse() met this flag or positional argument.
  bool given(const std::string& name) const {
    return std::find(seen_.begin(), seen_.end(), name) != seen_.end();
  }

  std::string usage() const {
    std::string out = "usage: " + synopsis_ + "\n";
    for (const Flag& f : positionals_) {
      std::string left = "  " + f.name;
      left.resize(std::max<std::size_t>(left.size() + 1, 24), ' ');
      out += left + f.help + "\n";
    }
    for (const Flag& f : flags_) {
      std::string left = "  " + f.name + (f.is_switch() ? "" : " " + f.metavar);
      left.resize(std::max<std::size_t>(left.size() + 1, 24), ' ');
      out += left + f.help + "\n";
    }
    return out;
  }

 private:
  struct Flag {
    std::string name, metavar, help;
    std::function<void(const std::string&)> set;
    bool is_switch() const { return metavar.empty(); }
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

  std::string lookup_positional(const std::string& name) const {
    for (const Flag& f : positionals_)
      if (f.name == name) return f.help;
    return "a value";
  }

  std::string synopsis_;
  std::vector<Flag> flags_, positionals_;
  std::vector<std::string> required_;
  mutable std::vector<std::string> seen_;  // what the last parse() met, for given()
};

}  // namespace cli
