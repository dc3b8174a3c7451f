// Grad-CAM weighting: channel weights are the spatial means of the gradients, the map is the
// ReLU of the weighted sum of activation channels (Selvaraju et al.). One thread per output pixel;
// the weights are computed first by global_avg_pool_forward_f32 (pool.cu) over the gradients.
#include "common.cuh"

// cam[n, p] = max(0, sum_c weights[n, c] * act[n, c, p]) (n_out = batch * plane).
extern "C" __global__ void gradcam_weighted_sum_f32(float* __restrict__ cam, const float* __restrict__ act, const float* __restrict__ weights, int channels, int plane, int n_out) {
    CXR_GRID_STRIDE(i, n_out) {
        int b = i / plane, p = i % plane;
        float acc = 0.0f;
        for (int c = 0; c < channels; ++c) acc += weights[b * channels + c] * act[(b * channels + c) * plane + p];
        cam[i] = acc > 0.0f ? acc : 0.0f;
    }
}
