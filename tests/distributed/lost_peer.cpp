// A rank that dies mid-job (here the last one, before a collective the others are waiting in) must
// end the whole job with a non-zero status, not leave the others waiting: ctest runs this under
// mpiexec and expects it to fail well before its timeout (tests/distributed/CMakeLists.txt).
#include <memoryformer/distributed/communicator.hpp>

#include <cstdlib>

int main(int argc, char** argv) {
  const memoryformer::distributed::MpiSession mpi(&argc, &argv);
  const memoryformer::distributed::Communicator world;
  if (world.rank() == world.size() - 1) std::_Exit(3);  // lost: no MPI_Finalize, no message
  int value = 1;
  world.all_reduce_sum(&value, 1);  // never completes: the last rank is gone
  return 0;
}
