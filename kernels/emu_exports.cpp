// The emulation build's entry point: every kernel of this folder, compiled for the host with
// cuda_emu.h, and a name -> launcher table so Rust launches a kernel by the same name the GPU path
// passes to cuModuleGetFunction. Built only with the `cuda-emu` feature (build.rs).
#include "cuda_emu.h"

#include "concat.cu"
#include "conv.cu"
#include "elementwise.cu"
#include "gradcam.cu"
#include "loss.cu"
#include "matmul.cu"
#include "norm.cu"
#include "optim.cu"
#include "pool.cu"
#include "reduce.cu"

namespace {
using Launcher = int (*)(const unsigned*, const unsigned*, void**);
struct Entry {
    const char* name;
    Launcher launch;
};
#define CXR_EXPORT(k) {#k, [](const unsigned* g, const unsigned* b, void** a) { return cxr_emu::launch_kernel(k, g, b, a); }},
const Entry kKernels[] = {
    CXR_EXPORT(copy_channels_f32)
    CXR_EXPORT(im2col_f32)
    CXR_EXPORT(col2im_f32)
    CXR_EXPORT(fill_f32)
    CXR_EXPORT(copy_f32)
    CXR_EXPORT(add_f32)
    CXR_EXPORT(add_assign_f32)
    CXR_EXPORT(mul_f32)
    CXR_EXPORT(scale_f32)
    CXR_EXPORT(relu_f32)
    CXR_EXPORT(relu_backward_f32)
    CXR_EXPORT(sigmoid_f32)
    CXR_EXPORT(sigmoid_backward_f32)
    CXR_EXPORT(dropout_mask_f32)
    CXR_EXPORT(add_row_bias_f32)
    CXR_EXPORT(add_channel_bias_f32)
    CXR_EXPORT(inv_std_f32)
    CXR_EXPORT(gradcam_weighted_sum_f32)
    CXR_EXPORT(bce_forward_f32)
    CXR_EXPORT(bce_backward_f32)
    CXR_EXPORT(sgemm_f32)
    CXR_EXPORT(transpose_f32)
    CXR_EXPORT(batch_norm_stats_f32)
    CXR_EXPORT(batch_norm_apply_f32)
    CXR_EXPORT(batch_norm_backward_reduce_f32)
    CXR_EXPORT(batch_norm_backward_input_f32)
    CXR_EXPORT(sgd_step_f32)
    CXR_EXPORT(adam_step_f32)
    CXR_EXPORT(max_pool_forward_f32)
    CXR_EXPORT(max_pool_backward_f32)
    CXR_EXPORT(avg_pool_forward_f32)
    CXR_EXPORT(avg_pool_backward_f32)
    CXR_EXPORT(global_avg_pool_forward_f32)
    CXR_EXPORT(global_avg_pool_backward_f32)
    CXR_EXPORT(reduce_partial_f64)
    CXR_EXPORT(reduce_final_f64)
    CXR_EXPORT(channel_sum_f32)
};
}  // namespace

// Launches kernel `name`; returns 0, or 1 for a bad launch shape, 2 for an unknown kernel.
extern "C" int cxr_emu_launch(const char* name, const unsigned* grid, const unsigned* block, void** args) {
    for (const Entry& e : kKernels)
        if (std::strcmp(e.name, name) == 0) return e.launch(grid, block, args);
    return 2;
}

// Chooses the scheduler: 1 = fibers (fast, one OS thread), 0 = one OS thread per CUDA thread.
extern "C" void cxr_emu_use_fibers(int on) {
    std::lock_guard<std::mutex> lock(cxr_emu::launch_mutex());
    cxr_emu::use_fibers = on != 0;
}
