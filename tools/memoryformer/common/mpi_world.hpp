// MPI_COMM_WORLD for the memoryformer tool's sharded (--shard tables) and data-parallel
// (train --data-parallel) runs, in builds with MPI (MF_HAVE_MPI; docs/distributed.md).
#pragma once

#if MF_HAVE_MPI
#include <memoryformer/distributed/communicator.hpp>

namespace tool {

// MPI_COMM_WORLD, MPI started on first use and finalised at exit: under mpirun the ranks of the
// job, without it one process of rank 0.
inline const memoryformer::distributed::Communicator& world() {
  static memoryformer::distributed::MpiSession session;
  static const memoryformer::distributed::Communicator comm;
  return comm;
}

// Whether MPI was started (by world()): only then can an error be reported per rank.
inline bool mpi_started() {
  int started = 0;
  MPI_Initialized(&started);
  return started != 0;
}

}  // namespace tool
#endif
