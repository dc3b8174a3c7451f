//! The kernel sources, embedded in the binary so a GPU run needs no files besides the driver and
//! NVRTC. `common.cuh` is spliced in place of its `#include` (NVRTC has no file system here).

/// The shared header every kernel file includes.
const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// (file name, source) of every kernel file, in kernels/.
pub const SOURCES: &[(&str, &str)] = &[
    ("concat.cu", include_str!("../../../kernels/concat.cu")),
    ("conv.cu", include_str!("../../../kernels/conv.cu")),
    ("elementwise.cu", include_str!("../../../kernels/elementwise.cu")),
    ("gradcam.cu", include_str!("../../../kernels/gradcam.cu")),
    ("loss.cu", include_str!("../../../kernels/loss.cu")),
    ("matmul.cu", include_str!("../../../kernels/matmul.cu")),
    ("norm.cu", include_str!("../../../kernels/norm.cu")),
    ("optim.cu", include_str!("../../../kernels/optim.cu")),
    ("pool.cu", include_str!("../../../kernels/pool.cu")),
    ("reduce.cu", include_str!("../../../kernels/reduce.cu")),
];

/// Every kernel the launch wrappers call, with the file that defines it.
pub const KERNELS: &[(&str, &str)] = &[
    ("copy_channels_f32", "concat.cu"),
    ("im2col_f32", "conv.cu"),
    ("col2im_f32", "conv.cu"),
    ("fill_f32", "elementwise.cu"),
    ("copy_f32", "elementwise.cu"),
    ("add_f32", "elementwise.cu"),
    ("add_assign_f32", "elementwise.cu"),
    ("mul_f32", "elementwise.cu"),
    ("scale_f32", "elementwise.cu"),
    ("relu_f32", "elementwise.cu"),
    ("relu_backward_f32", "elementwise.cu"),
    ("sigmoid_f32", "elementwise.cu"),
    ("sigmoid_backward_f32", "elementwise.cu"),
    ("dropout_mask_f32", "elementwise.cu"),
    ("add_row_bias_f32", "elementwise.cu"),
    ("add_channel_bias_f32", "elementwise.cu"),
    ("inv_std_f32", "elementwise.cu"),
    ("gradcam_weighted_sum_f32", "gradcam.cu"),
    ("bce_forward_f32", "loss.cu"),
    ("bce_backward_f32", "loss.cu"),
    ("sgemm_f32", "matmul.cu"),
    ("transpose_f32", "matmul.cu"),
    ("batch_norm_stats_f32", "norm.cu"),
    ("batch_norm_apply_f32", "norm.cu"),
    ("batch_norm_backward_reduce_f32", "norm.cu"),
    ("batch_norm_backward_input_f32", "norm.cu"),
    ("sgd_step_f32", "optim.cu"),
    ("adam_step_f32", "optim.cu"),
    ("max_pool_forward_f32", "pool.cu"),
    ("max_pool_backward_f32", "pool.cu"),
    ("avg_pool_forward_f32", "pool.cu"),
    ("avg_pool_backward_f32", "pool.cu"),
    ("global_avg_pool_forward_f32", "pool.cu"),
    ("global_avg_pool_backward_f32", "pool.cu"),
    ("reduce_partial_f64", "reduce.cu"),
    ("reduce_final_f64", "reduce.cu"),
    ("channel_sum_f32", "reduce.cu"),
];

/// The source of `file` as NVRTC compiles it: the shared header spliced in.
pub fn nvrtc_source(file: &str) -> Option<String> {
    let (_, src) = SOURCES.iter().find(|(name, _)| *name == file)?;
    Some(src.replace("#include \"common.cuh\"", COMMON))
}

/// The file defining `kernel`.
pub fn file_of(kernel: &str) -> Option<&'static str> {
    KERNELS.iter().find(|(k, _)| *k == kernel).map(|(_, f)| *f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_is_defined_in_its_file() {
        for (kernel, file) in KERNELS {
            let src = nvrtc_source(file).unwrap();
            assert!(src.contains(&format!("{kernel}(")), "{kernel} not in {file}");
            assert!(!src.contains("#include \"common.cuh\""));
        }
    }
}
