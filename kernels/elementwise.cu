// Elementwise kernels: arithmetic, activations and their backward, dropout masks, bias adds.
// Memory-bound; each is one coalesced grid-stride pass. CPU twin: src/backend/cpu/elementwise.rs.
#include "common.cuh"

extern "C" __global__ void fill_f32(float* y, float v, int n) {
    CXR_GRID_STRIDE(i, n) y[i] = v;
}

extern "C" __global__ void copy_f32(float* __restrict__ y, const float* __restrict__ x, int n) {
    CXR_GRID_STRIDE(i, n) y[i] = x[i];
}

extern "C" __global__ void add_f32(float* __restrict__ y, const float* a, const float* b, int n) {
    CXR_GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

extern "C" __global__ void add_assign_f32(float* dst, const float* src, int n) {
    CXR_GRID_STRIDE(i, n) dst[i] += src[i];
}

extern "C" __global__ void mul_f32(float* __restrict__ y, const float* a, const float* b, int n) {
    CXR_GRID_STRIDE(i, n) y[i] = a[i] * b[i];
}

extern "C" __global__ void scale_f32(float* __restrict__ y, const float* __restrict__ x, float s, int n) {
    CXR_GRID_STRIDE(i, n) y[i] = x[i] * s;
}

extern "C" __global__ void relu_f32(float* __restrict__ y, const float* __restrict__ x, int n) {
    CXR_GRID_STRIDE(i, n) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

extern "C" __global__ void relu_backward_f32(float* __restrict__ dx, const float* y, const float* dy, int n) {
    CXR_GRID_STRIDE(i, n) dx[i] = y[i] <= 0.0f ? 0.0f : dy[i];
}

// Same branches as the CPU's sigmoid_scalar: exp of a non-positive argument only, so no overflow.
__device__ __forceinline__ float cxr_sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

extern "C" __global__ void sigmoid_f32(float* __restrict__ y, const float* __restrict__ x, int n) {
    CXR_GRID_STRIDE(i, n) y[i] = cxr_sigmoid(x[i]);
}

extern "C" __global__ void sigmoid_backward_f32(float* __restrict__ dx, const float* y, const float* dy, int n) {
    CXR_GRID_STRIDE(i, n) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

// Philox-4x32-10 (Salmon et al., SC'11), bit for bit as src/backend/philox.rs.
__device__ __forceinline__ unsigned cxr_philox_word(unsigned long long block, unsigned word, unsigned k0, unsigned k1) {
    unsigned c0 = (unsigned)block, c1 = (unsigned)(block >> 32), c2 = 0, c3 = 0;
    for (int r = 0; r < 10; ++r) {
        unsigned long long p0 = 0xD2511F53ull * c0;
        unsigned long long p1 = 0xCD9E8D57ull * c2;
        unsigned n0 = (unsigned)(p1 >> 32) ^ c1 ^ k0;
        unsigned n2 = (unsigned)(p0 >> 32) ^ c3 ^ k1;
        c1 = (unsigned)p1;
        c3 = (unsigned)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    unsigned w[4] = {c0, c1, c2, c3};
    return w[word];
}

// Inverted-dropout mask: element i is 0 when uniform(seed, i) < p, else 1/(1-p).
extern "C" __global__ void dropout_mask_f32(float* y, float p, unsigned seed_lo, unsigned seed_hi, int n) {
    float keep_scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    CXR_GRID_STRIDE(i, n) {
        unsigned bits = cxr_philox_word((unsigned long long)i / 4, (unsigned)i % 4, seed_lo, seed_hi);
        float u = (float)(bits >> 8) * (1.0f / 16777216.0f);
        y[i] = u >= p ? keep_scale : 0.0f;
    }
}

// x[r, c] += bias[c] over a [rows x cols] matrix (n = rows * cols).
extern "C" __global__ void add_row_bias_f32(float* x, const float* bias, int cols, int n) {
    CXR_GRID_STRIDE(i, n) x[i] += bias[i % cols];
}

// y[n, c, p] += bias[c] over an NCHW tensor (conv bias).
extern "C" __global__ void add_channel_bias_f32(float* y, const float* bias, int channels, int plane, int n) {
    CXR_GRID_STRIDE(i, n) y[i] += bias[(i / plane) % channels];
}

// 1/sqrt(var + eps), in double as the CPU backend computes it.
extern "C" __global__ void inv_std_f32(float* __restrict__ y, const float* __restrict__ var, float eps, int n) {
    CXR_GRID_STRIDE(i, n) y[i] = (float)(1.0 / sqrt((double)var[i] + (double)eps));
}
