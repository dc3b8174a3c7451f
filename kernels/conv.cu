// Convolution by im2col + SGEMM (matmul.cu), one image at a time so the column buffer stays small:
//   forward:         y_n[Cout x OHW]  = W[Cout x K] * col_n[K x OHW]           (K = Cin*kh*kw)
//   backward-data:   dcol[K x OHW]    = W^T * dy_n, then col2im into dx_n
//   backward-weight: dW[Cout x K]    += dy_n * col_n^T
// 1x1 stride-1 unpadded convolutions skip im2col (the image is its own column matrix).
// col2im gathers (each input pixel sums the columns that read it): deterministic, no atomics.
// CPU twin: src/backend/cpu/conv/.
#include "common.cuh"

struct CxrConv {
    int in_channels, in_h, in_w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
};

// col[(ci*kh + ky)*kw + kx, oy*OW + ox] = x[ci, oy*s - p + ky, ox*s - p + kx] (0 in the padding).
extern "C" __global__ void im2col_f32(float* __restrict__ col, const float* __restrict__ x, CxrConv g, int n) {
    int plane = g.out_h * g.out_w;
    CXR_GRID_STRIDE(i, n) {
        int q = i % plane, row = i / plane;
        int ox = q % g.out_w, oy = q / g.out_w;
        int kx = row % g.kernel_w, ky = (row / g.kernel_w) % g.kernel_h, ci = row / (g.kernel_w * g.kernel_h);
        int iy = oy * g.stride_h - g.pad_h + ky, ix = ox * g.stride_w - g.pad_w + kx;
        bool inside = iy >= 0 && iy < g.in_h && ix >= 0 && ix < g.in_w;
        col[i] = inside ? x[(ci * g.in_h + iy) * g.in_w + ix] : 0.0f;
    }
}

// dx[ci, iy, ix] = sum of dcol over the (ky, kx, oy, ox) that im2col read it from.
extern "C" __global__ void col2im_f32(float* __restrict__ dx, const float* __restrict__ dcol, CxrConv g, int n) {
    int plane = g.out_h * g.out_w;
    CXR_GRID_STRIDE(i, n) {
        int ix = i % g.in_w, iy = (i / g.in_w) % g.in_h, ci = i / (g.in_w * g.in_h);
        float acc = 0.0f;
        for (int ky = 0; ky < g.kernel_h; ++ky) {
            int ty = iy + g.pad_h - ky;
            if (ty < 0 || ty % g.stride_h != 0) continue;
            int oy = ty / g.stride_h;
            if (oy >= g.out_h) continue;
            for (int kx = 0; kx < g.kernel_w; ++kx) {
                int tx = ix + g.pad_w - kx;
                if (tx < 0 || tx % g.stride_w != 0) continue;
                int ox = tx / g.stride_w;
                if (ox >= g.out_w) continue;
                acc += dcol[((ci * g.kernel_h + ky) * g.kernel_w + kx) * plane + oy * g.out_w + ox];
            }
        }
        dx[i] = acc;
    }
}
