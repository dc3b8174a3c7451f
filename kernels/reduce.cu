// Reductions: whole-tensor sums (two passes: per-block partials, then one block over the
// partials), per-channel sums and per-row means. Accumulation is in double and in a fixed tree
// order, so results are deterministic run to run. CPU twin: src/backend/cpu/elementwise.rs,
// optim.rs (sum of squares), matmul.rs (column sums).
#include "common.cuh"

// What reduce_partial_f64 sums: the values, their squares, or a count of non-finite values.
#define CXR_REDUCE_SUM 0
#define CXR_REDUCE_SUM_SQUARES 1
#define CXR_REDUCE_NON_FINITE 2

extern "C" __global__ void __launch_bounds__(CXR_BLOCK) reduce_partial_f64(double* partials, const float* x, int n, int mode) {
    __shared__ double scratch[CXR_BLOCK];
    double acc = 0.0;
    CXR_GRID_STRIDE(i, n) {
        double v = (double)x[i];
        acc += mode == CXR_REDUCE_SUM ? v : mode == CXR_REDUCE_SUM_SQUARES ? v * v : (isfinite(x[i]) ? 0.0 : 1.0);
    }
    double total = cxr_block_sum(acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// One block adds `count` partials into out[0].
extern "C" __global__ void __launch_bounds__(CXR_BLOCK) reduce_final_f64(double* out, const double* partials, int count) {
    __shared__ double scratch[CXR_BLOCK];
    double acc = 0.0;
    for (int i = (int)threadIdx.x; i < count; i += CXR_BLOCK) acc += partials[i];
    double total = cxr_block_sum(acc, scratch);
    if (threadIdx.x == 0) out[0] = total;
}

// y[c] = sum over n, p of x[n, c, p]; one block per channel (grid.x = channels).
extern "C" __global__ void __launch_bounds__(CXR_BLOCK) channel_sum_f32(float* y, const float* x, int batch, int channels, int plane) {
    __shared__ double scratch[CXR_BLOCK];
    int c = (int)blockIdx.x;
    int count = batch * plane;
    double acc = 0.0;
    for (int j = (int)threadIdx.x; j < count; j += CXR_BLOCK) {
        int n = j / plane, p = j % plane;
        acc += (double)x[(n * channels + c) * plane + p];
    }
    double total = cxr_block_sum(acc, scratch);
    if (threadIdx.x == 0) y[c] = (float)total;
}
