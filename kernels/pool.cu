// Max, average and global average pooling with backward. Backward kernels gather (each input
// element sums the windows that cover it) instead of scattering with atomics, so they are
// deterministic. CPU twin: src/backend/cpu/pool.rs.
#include "common.cuh"

struct CxrPool {
    int channels, in_h, in_w, out_h, out_w, kernel, stride, pad;
};

// The first maximum of the window of output (nc, oy, ox), as an index into the plane, or -1 when
// the window holds only padding. Ties and NaN resolve as the CPU kernel: strict `>` keeps the first.
__device__ __forceinline__ int cxr_max_index(const float* plane, CxrPool g, int oy, int ox, float* best_out) {
    float best = CXR_NEG_INF;
    int arg = -1;
    for (int ky = 0; ky < g.kernel; ++ky) {
        int iy = oy * g.stride - g.pad + ky;
        if (iy < 0 || iy >= g.in_h) continue;
        for (int kx = 0; kx < g.kernel; ++kx) {
            int ix = ox * g.stride - g.pad + kx;
            if (ix < 0 || ix >= g.in_w) continue;
            float v = plane[iy * g.in_w + ix];
            if (arg < 0 || v > best || isnan(v)) {
                best = v;
                arg = iy * g.in_w + ix;
                if (isnan(v)) {
                    *best_out = v;
                    return arg;
                }
            }
        }
    }
    *best_out = best;
    return arg;
}

extern "C" __global__ void max_pool_forward_f32(float* __restrict__ y, const float* __restrict__ x, CxrPool g, int n) {
    CXR_GRID_STRIDE(i, n) {
        int ox = i % g.out_w, oy = (i / g.out_w) % g.out_h, nc = i / (g.out_w * g.out_h);
        float best;
        cxr_max_index(x + nc * g.in_h * g.in_w, g, oy, ox, &best);
        y[i] = best;
    }
}

// The output windows covering input coordinate `ix` along one axis: [lo, hi).
__device__ __forceinline__ void cxr_windows(int ix, int in_len, int out_len, int kernel, int stride, int pad, int* lo, int* hi) {
    int first = ix + pad - kernel + 1;
    *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    int last = (ix + pad) / stride + 1;
    *hi = last < out_len ? last : out_len;
    (void)in_len;
}

extern "C" __global__ void max_pool_backward_f32(float* __restrict__ dx, const float* __restrict__ x, const float* __restrict__ dy, CxrPool g, int n) {
    CXR_GRID_STRIDE(i, n) {
        int ix = i % g.in_w, iy = (i / g.in_w) % g.in_h, nc = i / (g.in_w * g.in_h);
        const float* plane = x + nc * g.in_h * g.in_w;
        int y0, y1, x0, x1;
        cxr_windows(iy, g.in_h, g.out_h, g.kernel, g.stride, g.pad, &y0, &y1);
        cxr_windows(ix, g.in_w, g.out_w, g.kernel, g.stride, g.pad, &x0, &x1);
        float acc = 0.0f;
        for (int oy = y0; oy < y1; ++oy) {
            for (int ox = x0; ox < x1; ++ox) {
                float best;
                if (cxr_max_index(plane, g, oy, ox, &best) == iy * g.in_w + ix) acc += dy[(nc * g.out_h + oy) * g.out_w + ox];
            }
        }
        dx[i] = acc;
    }
}

// Padding counts in the divisor (PyTorch's count_include_pad=True).
extern "C" __global__ void avg_pool_forward_f32(float* __restrict__ y, const float* __restrict__ x, CxrPool g, int n) {
    CXR_GRID_STRIDE(i, n) {
        int ox = i % g.out_w, oy = (i / g.out_w) % g.out_h, nc = i / (g.out_w * g.out_h);
        const float* plane = x + nc * g.in_h * g.in_w;
        float acc = 0.0f;
        for (int ky = 0; ky < g.kernel; ++ky) {
            int iy = oy * g.stride - g.pad + ky;
            if (iy < 0 || iy >= g.in_h) continue;
            for (int kx = 0; kx < g.kernel; ++kx) {
                int ix = ox * g.stride - g.pad + kx;
                if (ix >= 0 && ix < g.in_w) acc += plane[iy * g.in_w + ix];
            }
        }
        y[i] = acc * (1.0f / (float)(g.kernel * g.kernel));
    }
}

extern "C" __global__ void avg_pool_backward_f32(float* __restrict__ dx, const float* __restrict__ dy, CxrPool g, int n) {
    CXR_GRID_STRIDE(i, n) {
        int ix = i % g.in_w, iy = (i / g.in_w) % g.in_h, nc = i / (g.in_w * g.in_h);
        int y0, y1, x0, x1;
        cxr_windows(iy, g.in_h, g.out_h, g.kernel, g.stride, g.pad, &y0, &y1);
        cxr_windows(ix, g.in_w, g.out_w, g.kernel, g.stride, g.pad, &x0, &x1);
        float inv = 1.0f / (float)(g.kernel * g.kernel);
        float acc = 0.0f;
        for (int oy = y0; oy < y1; ++oy)
            for (int ox = x0; ox < x1; ++ox) acc += dy[(nc * g.out_h + oy) * g.out_w + ox] * inv;
        dx[i] = acc;
    }
}

// [rows, plane] -> [rows] mean; one thread per row (the planes that reach a global pool are small).
extern "C" __global__ void global_avg_pool_forward_f32(float* __restrict__ y, const float* __restrict__ x, int plane, int rows) {
    CXR_GRID_STRIDE(r, rows) {
        double acc = 0.0;
        for (int p = 0; p < plane; ++p) acc += (double)x[r * plane + p];
        y[r] = (float)(acc / (double)plane);
    }
}

extern "C" __global__ void global_avg_pool_backward_f32(float* __restrict__ dx, const float* __restrict__ dy, int plane, int n) {
    CXR_GRID_STRIDE(i, n) dx[i] = dy[i / plane] * (1.0f / (float)plane);
}
