// Parameter updates, exactly as torch.optim.SGD / Adam / AdamW define them. CPU twin:
// src/backend/cpu/optim.rs (the bias corrections are computed once on the host, as there).
#include "common.cuh"

// x, or zero when subnormal: decaying optimizer state must not sit in the subnormal range, where
// the CPU twin's arithmetic is a hundred times slower (see flush_subnormal in optim.rs).
__device__ __forceinline__ float flush_subnormal(float x) {
    return fabsf(x) < 1.17549435e-38f ? 0.0f : x;
}

// `first` is 1 on the first momentum step (the buffer is set to the gradient).
extern "C" __global__ void sgd_step_f32(float* p, const float* grad, float* buf, float lr, float momentum, float dampening, float weight_decay, int nesterov, int first, int n) {
    CXR_GRID_STRIDE(i, n) {
        float g = grad[i] + weight_decay * p[i];
        if (momentum != 0.0f) {
            float b = flush_subnormal(first ? g : momentum * buf[i] + (1.0f - dampening) * g);
            buf[i] = b;
            g = nesterov ? g + momentum * b : b;
        }
        p[i] -= lr * g;
    }
}

// step_size = lr / (1 - beta1^t), bias2_sqrt = sqrt(1 - beta2^t), decay = 1 - lr * weight_decay.
extern "C" __global__ void adam_step_f32(float* p, const float* grad, float* m, float* v, float beta1, float beta2, float eps, float weight_decay, int decoupled, float step_size, float bias2_sqrt, float decay, int n) {
    CXR_GRID_STRIDE(i, n) {
        float g = grad[i];
        float pi = p[i];
        if (decoupled) {
            pi *= decay;
        } else {
            g = g + weight_decay * pi;
        }
        float mi = flush_subnormal(beta1 * m[i] + (1.0f - beta1) * g);
        float vi = flush_subnormal(beta2 * v[i] + (1.0f - beta2) * g * g);
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * mi / (sqrtf(vi) / bias2_sqrt + eps);
    }
}
