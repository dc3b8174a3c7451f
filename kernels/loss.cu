// BCE-with-logits with per-class pos_weight and class weights, forward (per-element losses that
// reduce.cu sums in double) and backward. Stable form, as src/backend/cpu/loss.rs.
#include "common.cuh"

__device__ __forceinline__ float cxr_bce_sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

// loss[i] = w * ((1 - t) x + (1 + (p - 1) t) (log1p(exp(-|x|)) + max(-x, 0))). `pos` and `cls`
// may be null (weight 1).
extern "C" __global__ void bce_forward_f32(float* __restrict__ loss, const float* x, const float* t, const float* pos, const float* cls, int classes, int n) {
    CXR_GRID_STRIDE(i, n) {
        int c = i % classes;
        float p = pos ? pos[c] : 1.0f, w = cls ? cls[c] : 1.0f;
        float l = 1.0f + (p - 1.0f) * t[i];
        float softplus_neg = log1pf(expf(-fabsf(x[i]))) + fmaxf(-x[i], 0.0f);
        loss[i] = w * ((1.0f - t[i]) * x[i] + l * softplus_neg);
    }
}

// d(mean loss)/dx * scale, with k = scale / n.
extern "C" __global__ void bce_backward_f32(float* __restrict__ dx, const float* x, const float* t, const float* pos, const float* cls, int classes, float k, int n) {
    CXR_GRID_STRIDE(i, n) {
        int c = i % classes;
        float p = pos ? pos[c] : 1.0f, w = cls ? cls[c] : 1.0f;
        float l = 1.0f + (p - 1.0f) * t[i];
        dx[i] = k * w * ((1.0f - t[i]) - l * cxr_bce_sigmoid(-x[i]));
    }
}
