// Channel concatenation and split: both copy a block of channels between two NCHW tensors with
// different channel counts. CPU twin: src/backend/cpu/concat.rs.
#include "common.cuh"

// dst[n, dst_off + c, p] = src[n, src_off + c, p] for c < count (n = batch * count * plane).
extern "C" __global__ void copy_channels_f32(float* __restrict__ dst, const float* __restrict__ src, int plane, int count, int src_channels, int src_off, int dst_channels, int dst_off, int n) {
    CXR_GRID_STRIDE(i, n) {
        int p = i % plane, c = (i / plane) % count, b = i / (plane * count);
        dst[(b * dst_channels + dst_off + c) * plane + p] = src[(b * src_channels + src_off + c) * plane + p];
    }
}
