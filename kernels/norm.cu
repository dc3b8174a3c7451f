// Batch norm: training statistics (with the running-stat update), normalisation, and backward.
// Per-channel reductions run one block per channel in double, as the CPU backend's f64 sums.
// CPU twin: src/backend/cpu/norm.rs.
#include "common.cuh"

// x[n, c, p] for the j-th element of channel c (j over n and p).
__device__ __forceinline__ float cxr_channel_elem(const float* x, int c, int j, int channels, int plane) {
    int n = j / plane, p = j % plane;
    return x[(n * channels + c) * plane + p];
}

// One block per channel: biased batch mean and variance (two passes; the CPU's single shifted
// pass agrees to rounding), the saved
// mean and 1/sqrt(var + eps), and the running statistics updated with unbiased variance.
extern "C" __global__ void __launch_bounds__(CXR_BLOCK) batch_norm_stats_f32(float* mean_out, float* inv_std_out, float* running_mean, float* running_var, const float* x, int batch, int channels, int plane, float momentum, float eps) {
    __shared__ double scratch[CXR_BLOCK];
    int c = (int)blockIdx.x;
    int count = batch * plane;
    double acc = 0.0;
    for (int j = (int)threadIdx.x; j < count; j += CXR_BLOCK) acc += (double)cxr_channel_elem(x, c, j, channels, plane);
    double mean = cxr_block_sum(acc, scratch) / (double)count;
    acc = 0.0;
    for (int j = (int)threadIdx.x; j < count; j += CXR_BLOCK) {
        double d = (double)cxr_channel_elem(x, c, j, channels, plane) - mean;
        acc += d * d;
    }
    double var = cxr_block_sum(acc, scratch) / (double)count;
    if (threadIdx.x == 0) {
        double unbias = count > 1 ? (double)count / (double)(count - 1) : 1.0;
        double m = (double)momentum;
        running_mean[c] = (float)((1.0 - m) * (double)running_mean[c] + m * mean);
        running_var[c] = (float)((1.0 - m) * (double)running_var[c] + m * var * unbias);
        mean_out[c] = (float)mean;
        inv_std_out[c] = (float)(1.0 / sqrt(var + (double)eps));
    }
}

// y = (x - mean[c]) * inv_std[c] * gamma[c] + beta[c].
extern "C" __global__ void batch_norm_apply_f32(float* __restrict__ y, const float* __restrict__ x, const float* mean, const float* inv_std, const float* gamma, const float* beta, int channels, int plane, int n) {
    CXR_GRID_STRIDE(i, n) {
        int c = (i / plane) % channels;
        y[i] = (x[i] - mean[c]) * (inv_std[c] * gamma[c]) + beta[c];
    }
}

// One block per channel: dbeta = sum dy, dgamma = sum dy * xhat, and what the input gradient
// subtracts (the CPU's MeanTerms): offset = mean of (x - mean), how far the f32 mean is from
// the data's, and mean_dyx = mean of dy * xhat with xhat centred on mean + offset. Without the
// offset, channels of few values whose spread is small next to their mean lose dx's precision.
extern "C" __global__ void __launch_bounds__(CXR_BLOCK) batch_norm_backward_reduce_f32(float* dgamma, float* dbeta, float* offset_out, float* mean_dyx_out, const float* x, const float* dy, const float* mean, const float* inv_std, int batch, int channels, int plane) {
    __shared__ double scratch[CXR_BLOCK];
    int c = (int)blockIdx.x;
    int count = batch * plane;
    double sdy = 0.0, sdyx = 0.0, sxc = 0.0;
    for (int j = (int)threadIdx.x; j < count; j += CXR_BLOCK) {
        float d = cxr_channel_elem(dy, c, j, channels, plane);
        float centred = cxr_channel_elem(x, c, j, channels, plane) - mean[c];
        float xhat = centred * inv_std[c];
        sdy += (double)d;
        sdyx += (double)(d * xhat);
        sxc += (double)centred;
    }
    double total_dy = cxr_block_sum(sdy, scratch);
    double total_dyx = cxr_block_sum(sdyx, scratch);
    double total_xc = cxr_block_sum(sxc, scratch);
    if (threadIdx.x == 0) {
        dbeta[c] = (float)total_dy;
        dgamma[c] = (float)total_dyx;
        double offset = total_xc / (double)count;
        offset_out[c] = (float)offset;
        mean_dyx_out[c] = (float)((total_dyx - offset * (double)inv_std[c] * total_dy) / (double)count);
    }
}

// dx; with batch statistics the gradient also flows through the mean and variance.
extern "C" __global__ void batch_norm_backward_input_f32(float* __restrict__ dx, const float* x, const float* dy, const float* gamma, const float* mean, const float* inv_std, const float* offset, const float* mean_dyx, const float* dbeta, int channels, int plane, int per_channel, int batch_stats, int n) {
    CXR_GRID_STRIDE(i, n) {
        int c = (i / plane) % channels;
        float k = gamma[c] * inv_std[c];
        if (batch_stats) {
            float count = (float)per_channel;
            float xhat = ((x[i] - mean[c]) - offset[c]) * inv_std[c];
            dx[i] = k * (dy[i] - dbeta[c] / count - xhat * mean_dyx[c]);
        } else {
            dx[i] = k * dy[i];
        }
    }
}
