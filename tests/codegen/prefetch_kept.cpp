// One SIMD row kernel, chosen by MF_KERNEL_UNDER_TEST, for check_prefetch_kept.cmake to compile to
// assembly: the kernel must still contain its software prefetches (row_selection.hpp).
#include <memoryformer/detail/kernels/avx2.hpp>
#include <memoryformer/detail/kernels/avx512.hpp>

#include <cstdint>

namespace detail = memoryformer::detail;

#if MF_KERNEL_UNDER_TEST == 0
void kernel(const std::int8_t* table, const detail::RowSelection& sel, const float* scores, float* y,
            int width) {
  detail::avx512::gather(table, sel, scores, y, width);
}
#elif MF_KERNEL_UNDER_TEST == 1
void kernel(float* grad, const detail::RowSelection& sel, const float* scores, const float* dy, int width) {
  detail::avx512::scatter(grad, sel, scores, dy, width);
}
#elif MF_KERNEL_UNDER_TEST == 2
void kernel(const std::int8_t* table, const detail::RowSelection& sel, const float* scores, float* y,
            int width) {
  detail::avx2::gather(table, sel, scores, y, width);
}
#elif MF_KERNEL_UNDER_TEST == 3
void kernel(float* grad, const detail::RowSelection& sel, const float* scores, const float* dy, int width) {
  detail::avx2::scatter(grad, sel, scores, dy, width);
}
#else
#error "MF_KERNEL_UNDER_TEST: 0..3"
#endif
