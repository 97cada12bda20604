// The library's errors: one base that callers catch, and a kind for each way things go wrong, so
// that a program can react by type (the memoryformer tool's exit status does) instead of by message.
//
//   Error              every library error; catch it for "anything memoryformer threw"
//     ArgumentError    a bad argument, option, shape or setting          (a std::invalid_argument)
//     FileError        the file system refused: open, stat, map, write    (a std::system_error:
//                      code() is the errno, path() the file)
//     FormatError      a file's content is malformed                      (a std::runtime_error:
//                      file(), tensor() and field() say where)
//
// Error is deliberately not a std::exception: each kind derives from Error and from exactly one
// standard exception, so `catch (const std::exception&)` reaches every kind through one
// unambiguous base, and `catch (const Error&)` with what() works as it did when Error was the only
// type. Every what() starts with "memoryformer: ".
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>

namespace memoryformer {
inline namespace v0 {

class Error {
 public:
  virtual ~Error() = default;
  // The message: where, what was found and what was expected.
  virtual const char* what() const noexcept = 0;

 protected:
  Error() = default;
  Error(const Error&) = default;
  Error& operator=(const Error&) = default;
};

// A caller's mistake: an argument, option, shape or environment setting out of range. The message
// names the argument, the value received and what was expected (detail::fail builds it).
class ArgumentError : public Error, public std::invalid_argument {
 public:
  explicit ArgumentError(const std::string& message) : std::invalid_argument(message) {}
  const char* what() const noexcept override { return std::invalid_argument::what(); }
};

// A system call on a file failed. code() holds the errno (generic_category, so it compares equal
// to std::errc values); what() names the path, the step that failed and the system's reason.
class FileError : public Error, public std::system_error {
 public:
  FileError(int errno_value, const std::string& path, const std::string& step)
      : std::system_error(errno_value, std::generic_category(), "memoryformer: file '" + path + "': " + step),
        path_(std::make_shared<const std::string>(path)) {}
  const std::string& path() const noexcept { return *path_; }
  const char* what() const noexcept override { return std::system_error::what(); }

 private:
  std::shared_ptr<const std::string> path_;  // shared: copying an exception must not throw
};

// A file (or in-memory document) whose bytes do not follow its format. file() names it, tensor()
// the tensor concerned and field() the entry ("dtype", "data_offsets", "header",
// "__metadata__.config.d_model"); either is empty where the problem is not about one. what() is
// "memoryformer: file 'F': tensor 'T': FIELD: problem", leaving out the parts that are empty.
class FormatError : public Error, public std::runtime_error {
 public:
  FormatError(const std::string& file, const std::string& tensor, const std::string& field,
              const std::string& problem)
      : std::runtime_error("memoryformer: file '" + file +
                           "': " + (tensor.empty() ? "" : "tensor '" + tensor + "': ") +
                           (field.empty() ? "" : field + ": ") + problem),
        where_(std::make_shared<const Where>(Where{file, tensor, field})) {}
  const std::string& file() const noexcept { return where_->file; }
  const std::string& tensor() const noexcept { return where_->tensor; }
  const std::string& field() const noexcept { return where_->field; }
  const char* what() const noexcept override { return std::runtime_error::what(); }

 private:
  struct Where {
    std::string file, tensor, field;
  };
  std::shared_ptr<const Where> where_;  // shared: copying an exception must not throw
};

}  // namespace v0
}  // namespace memoryformer
