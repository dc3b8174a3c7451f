// SGEMM and transpose. C[M x N] = alpha * op(A)[M x K] * op(B)[K x N] + beta * C, row-major, with
// either operand stored transposed (the linear and conv backward passes need both).
//
// Shared-memory tiling: a block of 256 threads computes a 64x64 tile of C, stepping through K in
// slices of 16. Each slice of A and B is loaded once into shared memory with coalesced reads (the
// thread-to-element map follows the operand's storage order, so consecutive threads read
// consecutive addresses in both layouts), stored k-major so the inner loop reads rows of the tile.
// Each thread keeps a 4x4 block of C in registers: 8 shared loads feed 16 FMAs per k step.
// CPU twin: src/backend/cpu/matmul.rs over gemm/.
#include "common.cuh"

#define CXR_TM 64
#define CXR_TN 64
#define CXR_TK 16
#define CXR_GEMM_THREADS 256

extern "C" __global__ void __launch_bounds__(CXR_GEMM_THREADS) sgemm_f32(float* C, const float* __restrict__ A, const float* __restrict__ B, int M, int N, int K, int trans_a, int trans_b, float alpha, float beta) {
    // +4 keeps the transposing stores of the k-major tiles off a single shared-memory bank.
    __shared__ float As[CXR_TK][CXR_TM + 4];
    __shared__ float Bs[CXR_TK][CXR_TN + 4];
    int tid = (int)threadIdx.x;
    int tx = tid % 16, ty = tid / 16;
    int row0 = (int)blockIdx.y * CXR_TM, col0 = (int)blockIdx.x * CXR_TN;
    float acc[4][4];
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += CXR_TK) {
        for (int e = tid; e < CXR_TM * CXR_TK; e += CXR_GEMM_THREADS) {
            int r = trans_a ? e % CXR_TM : e / CXR_TK;
            int kk = trans_a ? e / CXR_TM : e % CXR_TK;
            int gr = row0 + r, gk = k0 + kk;
            float v = 0.0f;
            if (gr < M && gk < K) v = trans_a ? A[gk * M + gr] : A[gr * K + gk];
            As[kk][r] = v;
        }
        for (int e = tid; e < CXR_TK * CXR_TN; e += CXR_GEMM_THREADS) {
            int c = trans_b ? e / CXR_TK : e % CXR_TN;
            int kk = trans_b ? e % CXR_TK : e / CXR_TN;
            int gc = col0 + c, gk = k0 + kk;
            float v = 0.0f;
            if (gc < N && gk < K) v = trans_b ? B[gc * K + gk] : B[gk * N + gc];
            Bs[kk][c] = v;
        }
        __syncthreads();
        for (int kk = 0; kk < CXR_TK; ++kk) {
            float a[4], b[4];
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty * 4 + i];
            for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx * 4 + j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        // The next slice overwrites the tiles: every thread must be done reading them.
        __syncthreads();
    }

    for (int i = 0; i < 4; ++i) {
        int r = row0 + ty * 4 + i;
        if (r >= M) continue;
        for (int j = 0; j < 4; ++j) {
            int c = col0 + tx * 4 + j;
            if (c >= N) continue;
            // beta == 0 must not read C: it may hold uninitialised memory (NaN * 0 is NaN).
            float prior = beta == 0.0f ? 0.0f : beta * C[r * N + c];
            C[r * N + c] = alpha * acc[i][j] + prior;
        }
    }
}

// y[cols x rows] = x[rows x cols]^T through a 32x32 shared tile (+1 column against bank
// conflicts), so both the read and the write are coalesced. Block 32x8: each thread moves 4 values.
extern "C" __global__ void __launch_bounds__(256) transpose_f32(float* __restrict__ y, const float* __restrict__ x, int rows, int cols) {
    __shared__ float tile[32][33];
    int cx = (int)blockIdx.x * 32 + (int)threadIdx.x;
    int ry = (int)blockIdx.y * 32 + (int)threadIdx.y;
    for (int j = 0; j < 32; j += 8)
        if (cx < cols && ry + j < rows) tile[threadIdx.y + j][threadIdx.x] = x[(ry + j) * cols + cx];
    __syncthreads();
    int ox = (int)blockIdx.y * 32 + (int)threadIdx.x;
    int oy = (int)blockIdx.x * 32 + (int)threadIdx.y;
    for (int j = 0; j < 32; j += 8)
        if (ox < rows && oy + j < cols) y[(oy + j) * rows + ox] = tile[threadIdx.x][threadIdx.y + j];
}
