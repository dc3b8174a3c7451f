// Helpers shared by every kernel file. Sizes are `int`: the launch code (src/backend/cuda/launch.rs)
// rejects any size that does not fit, so 32-bit index arithmetic never overflows.
#pragma once

// Threads of a 1-D grid walk [0, n) with a stride of the whole grid, so any n works with the
// capped grid the launch code computes.
#define CXR_GRID_STRIDE(i, n) \
    for (int i = (int)(blockIdx.x * blockDim.x + threadIdx.x); i < (n); i += (int)(blockDim.x * gridDim.x))

// -inf without math.h (NVRTC has no host headers): the IEEE bit pattern.
#define CXR_NEG_INF __int_as_float(0xff800000)

// Threads per block of the 1-D kernels and of the per-channel reductions (launch.rs: BLOCK_1D).
#define CXR_BLOCK 256

// Sums v over the block (blockDim.x == CXR_BLOCK) through shared memory in a fixed tree order, so
// the result does not depend on scheduling. Every thread must call it; thread 0 gets the sum.
__device__ __forceinline__ double cxr_block_sum(double v, double* scratch) {
    unsigned t = threadIdx.x;
    scratch[t] = v;
    __syncthreads();
    for (unsigned half = CXR_BLOCK / 2; half > 0; half /= 2) {
        if (t < half) scratch[t] += scratch[t + half];
        __syncthreads();
    }
    double total = scratch[0];
    // The scratch is reused by the caller's next reduction: nobody may overwrite it before all
    // threads have read the total.
    __syncthreads();
    return total;
}
