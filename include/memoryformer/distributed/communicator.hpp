// The MPI the distributed part of the library uses (docs/distributed.md): the process's MPI
// session and a communicator with the few collectives sharded inference and data-parallel
// training need. Part of MemoryFormer::mpi (CMake option MF_MPI); the core never includes it.
// MPI errors abort the job (MPI's default handler), so a lost peer ends every rank, never a hang.
#pragma once

#include "../config.hpp"
#include "../errors.hpp"

#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace memoryformer {
inline namespace v0 {
namespace distributed {

// The kind of library error (errors.hpp) a failing rank threw, which every rank learns.
enum class ErrorKind : int { argument, file, format, other };

// An error on one rank of a distributed step, rethrown on every rank (Communicator::raise_first):
// what() is the failing rank's message with its rank after the library's prefix; kind() is what
// it threw.
class DistributedError : public Error, public std::runtime_error {
 public:
  DistributedError(int rank, ErrorKind kind, const std::string& message)
      : std::runtime_error("memoryformer: rank " + std::to_string(rank) + ": " + without_prefix(message)),
        rank_(rank),
        kind_(kind) {}
  int rank() const noexcept { return rank_; }
  ErrorKind kind() const noexcept { return kind_; }
  const char* what() const noexcept override { return std::runtime_error::what(); }

 private:
  static std::string without_prefix(const std::string& message) {
    const std::string prefix = "memoryformer: ";
    return message.compare(0, prefix.size(), prefix) == 0 ? message.substr(prefix.size()) : message;
  }

  int rank_;
  ErrorKind kind_;
};

// MPI for this process: initialised (threads: funneled, only the calling thread talks to MPI) by
// the first session unless something else did, finalised by that session's destructor. Started
// without mpirun, MPI runs as a single process of rank 0.
class MpiSession {
 public:
  MpiSession(int* argc = nullptr, char*** argv = nullptr) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (initialised != 0) return;
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    owner_ = true;
  }
  ~MpiSession() {
    int finalised = 0;
    MPI_Finalized(&finalised);
    if (owner_ && finalised == 0) MPI_Finalize();
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  bool owner_ = false;
};

namespace detail {

template <class T>
MPI_Datatype mpi_type() {
  if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
  else if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
  else if constexpr (std::is_same_v<T, std::int64_t>) return MPI_INT64_T;
  else if constexpr (std::is_same_v<T, int>) return MPI_INT;
  else if constexpr (std::is_same_v<T, char>) return MPI_CHAR;
  else static_assert(sizeof(T) == 0, "mpi_type<T>: no MPI type for T");
}

// A count MPI takes (an int), or an error naming what was too large.
inline int mpi_count(const char* where, std::size_t n) {
  if (n > static_cast<std::size_t>(INT_MAX))
    memoryformer::detail::fail(where, "count", std::to_string(n), "at most INT_MAX values per message");
  return static_cast<int>(n);
}

}  // namespace detail

// A group of ranks (MPI_COMM_WORLD by default); a small value, copies name the same group.
class Communicator {
 public:
  explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm handle() const { return comm_; }

  // Every rank's `local` values, rank after rank, into `out` (sum of `counts`, one per rank).
  template <class T>
  void all_gather(const T* local, const std::vector<int>& counts, T* out) const {
    std::vector<int> offsets(counts.size(), 0);
    for (std::size_t r = 1; r < counts.size(); ++r) offsets[r] = offsets[r - 1] + counts[r - 1];
    MPI_Allgatherv(local, counts[static_cast<std::size_t>(rank_)], detail::mpi_type<T>(), out, counts.data(),
                   offsets.data(), detail::mpi_type<T>(), comm_);
  }

  // values[i] = the sum over ranks of values[i], on every rank.
  template <class T>
  void all_reduce_sum(T* values, std::size_t n) const {
    MPI_Allreduce(MPI_IN_PLACE, values, detail::mpi_count("Communicator::all_reduce_sum", n),
                  detail::mpi_type<T>(), MPI_SUM, comm_);
  }

  // The same values on every rank, from rank `root`.
  template <class T>
  void broadcast(T* values, std::size_t n, int root = 0) const {
    MPI_Bcast(values, detail::mpi_count("Communicator::broadcast", n), detail::mpi_type<T>(), root, comm_);
  }

  // Ends a step that may have failed on some ranks: `local_error` is this rank's message, empty if
  // it succeeded. If any rank failed, every rank throws DistributedError with the message of the
  // lowest failing rank, so that no rank goes on to a collective the others will never join.
  void raise_first(const std::string& local_error, ErrorKind kind = ErrorKind::other) const {
    int failing = local_error.empty() ? size_ : rank_;
    MPI_Allreduce(MPI_IN_PLACE, &failing, 1, MPI_INT, MPI_MIN, comm_);
    if (failing == size_) return;
    std::int64_t header[2] = {static_cast<std::int64_t>(local_error.size()), static_cast<std::int64_t>(kind)};
    broadcast(header, 2, failing);
    std::string message(static_cast<std::size_t>(header[0]), '\0');
    if (rank_ == failing) message = local_error;
    broadcast(message.data(), message.size(), failing);
    throw DistributedError(failing, static_cast<ErrorKind>(header[1]), message);
  }

  // Runs step(); an exception on any rank becomes DistributedError on every rank (raise_first).
  template <class Step>
  void run_together(const Step& step) const {
    std::string error;
    ErrorKind kind = ErrorKind::other;
    try {
      step();
    } catch (const ArgumentError& e) {
      error = e.what(), kind = ErrorKind::argument;
    } catch (const FileError& e) {
      error = e.what(), kind = ErrorKind::file;
    } catch (const FormatError& e) {
      error = e.what(), kind = ErrorKind::format;
    } catch (const std::exception& e) {
      error = e.what();
      if (error.empty()) error = "an exception without a message";
    }
    raise_first(error, kind);
  }

  // Ends every rank of the job with `status` (MPI_Abort): for a failure the other ranks cannot
  // learn of, e.g. one thrown between collectives.
  [[noreturn]] void abort(int status) const {
    MPI_Abort(comm_, status);
    std::abort();  // not reached: MPI_Abort does not return
  }

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace distributed
}  // namespace v0
}  // namespace memoryformer
