// The one definition of the instantiations tests/instantiations.hpp declares.
#define MF_TEST_INSTANTIATE template
#include "instantiations.hpp"
