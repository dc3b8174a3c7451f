//! The input gradient of a stride-1 convolution, computed as a forward convolution.
//!
//! With stride 1, `dx = conv_transpose(dy, w)` is itself a stride-1 convolution of `dy` with the
//! kernel flipped in both axes and its channel axes swapped (`w'[ci, co, i, j] =
//! w[co, ci, kh-1-i, kw-1-j]`), padded by `k - 1 - p`. Running it through the forward path means
//! the GEMM unrolls `dy` as it packs (no column matrix, no col2im scatter) and its rows are the
//! input channels (C_in) with a reduction over C_out * kh * kw, instead of C_in * kh * kw rows
//! reducing over only C_out. For DenseNet's growth convolutions (C_out = 32) that reduction was
//! too short to amortise loading and storing the GEMM's output tiles.

use rayon::prelude::*;

use crate::backend::geometry::Conv2dGeometry;

/// Whether [`transposed_geometry`] applies: stride 1 both ways and padding no larger than the
/// kernel minus one.
pub(super) fn applies(g: &Conv2dGeometry) -> bool {
    g.stride_h == 1 && g.stride_w == 1 && g.pad_h < g.kernel_h && g.pad_w < g.kernel_w
}

/// Whether the flipped forward beats W^T * dY plus col2im. Measured on ResNet18's and DenseNet121's
/// 3x3 layers at batch 1-32: it wins whenever the old product's reduction (C_out) is short, at
/// training batch sizes, and on large planes. On late layers at batch 1-4 the old path's per-image
/// tasks, whose col2im stays in L2, are up to 25% faster. A 1x1 kernel's old path has no col2im
/// (W^T * dY is dx, image by image), which only loses on tiny planes: 1x1 maps (a cropped 3x3,
/// ResNet18's layer4 on 28x28 inputs) made it one matrix-vector product per image, while on
/// DenseNet's 7x7 bottlenecks at batch 16 it was faster (0.71-0.79 ms against 1.12-1.20 ms).
pub(super) fn pays(g: &Conv2dGeometry) -> bool {
    if g.kernel_h * g.kernel_w == 1 {
        return g.batch > 1 && g.out_h() * g.out_w() < TINY_PLANE;
    }
    g.out_channels < SHORT_REDUCTION || g.batch >= TRAINING_BATCH || g.batch * g.in_h * g.in_w >= LARGE_PLANES
}

/// Output pixels per image below which a 1x1 kernel's per-image products are too thin.
const TINY_PLANE: usize = 16;

/// Output channels below which W^T * dY reduces too little to amortise its output tiles.
const SHORT_REDUCTION: usize = 64;
/// Batches from which the flipped forward won on every measured layer.
const TRAINING_BATCH: usize = 8;
/// Input pixels (batch times plane) from which it won at any batch.
const LARGE_PLANES: usize = 3136;

/// The forward convolution whose input is `dy` and whose output is `dx`.
pub(super) fn transposed_geometry(g: &Conv2dGeometry) -> Conv2dGeometry {
    Conv2dGeometry {
        batch: g.batch,
        in_channels: g.out_channels,
        out_channels: g.in_channels,
        in_h: g.out_h(),
        in_w: g.out_w(),
        kernel_h: g.kernel_h,
        kernel_w: g.kernel_w,
        stride_h: 1,
        stride_w: 1,
        pad_h: g.kernel_h - 1 - g.pad_h,
        pad_w: g.kernel_w - 1 - g.pad_w,
    }
}

/// `w'[ci, co, i, j] = w[co, ci, kh-1-i, kw-1-j]`, written into `out` (`w`'s length).
pub(super) fn flip_weights(g: &Conv2dGeometry, w: &[f32], out: &mut [f32]) {
    let kk = g.kernel_h * g.kernel_w;
    let (c_in, c_out) = (g.in_channels, g.out_channels);
    // One input channel's row of w' per task: C_out kernels, each read from a strided place.
    out[..g.weight_len()].par_chunks_mut(c_out * kk).enumerate().for_each(|(ci, row)| {
        for (co, taps) in row.chunks_exact_mut(kk).enumerate() {
            let src = &w[(co * c_in + ci) * kk..][..kk];
            // Reversing the taps in row-major order flips both kernel axes at once.
            for (t, s) in taps.iter_mut().zip(src.iter().rev()) {
                *t = *s;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(k: usize, p: usize, s: usize) -> Conv2dGeometry {
        Conv2dGeometry {
            batch: 2,
            in_channels: 3,
            out_channels: 5,
            in_h: 7,
            in_w: 6,
            kernel_h: k,
            kernel_w: k,
            stride_h: s,
            stride_w: s,
            pad_h: p,
            pad_w: p,
        }
    }

    #[test]
    fn transposed_geometry_maps_dy_back_to_dx() {
        for (k, p) in [(3, 1), (3, 0), (5, 2), (7, 3), (2, 1)] {
            let g = geometry(k, p, 1);
            let t = transposed_geometry(&g);
            assert_eq!((t.out_h(), t.out_w()), (g.in_h, g.in_w), "k={k} p={p}");
            assert_eq!((t.in_channels, t.out_channels), (g.out_channels, g.in_channels));
        }
    }

    #[test]
    fn applies_only_to_stride_one_kernels_with_padding_below_the_kernel() {
        assert!(applies(&geometry(3, 1, 1)));
        assert!(applies(&geometry(1, 0, 1)));
        assert!(!applies(&geometry(3, 1, 2)));
        assert!(!applies(&geometry(3, 3, 1)));
    }

    #[test]
    fn pays_for_short_reductions_training_batches_and_large_planes() {
        let layer = |batch, c_out, size| Conv2dGeometry {
            batch,
            out_channels: c_out,
            in_h: size,
            in_w: size,
            ..geometry(3, 1, 1)
        };
        assert!(pays(&layer(1, 32, 7)), "DenseNet growth convolution");
        assert!(!pays(&layer(1, 512, 7)), "ResNet18 layer4 at batch 1");
        assert!(pays(&layer(8, 512, 7)), "ResNet18 layer4 at batch 8");
        assert!(pays(&layer(1, 64, 56)), "ResNet18 layer1 at batch 1");
        let pointwise = |batch, size| Conv2dGeometry { batch, in_h: size, in_w: size, ..geometry(1, 0, 1) };
        assert!(pays(&pointwise(128, 1)), "cropped layer4 3x3 on 28x28 inputs");
        assert!(!pays(&pointwise(1, 1)), "one image: one product either way");
        assert!(!pays(&pointwise(16, 7)), "DenseNet block 4 bottleneck");
    }

    #[test]
    fn flipped_weights_swap_channels_and_reverse_taps() {
        let g = geometry(3, 1, 1);
        let w: Vec<f32> = (0..g.weight_len()).map(|i| i as f32).collect();
        let mut f = vec![0.0; w.len()];
        flip_weights(&g, &w, &mut f);
        for co in 0..g.out_channels {
            for ci in 0..g.in_channels {
                for i in 0..3 {
                    for j in 0..3 {
                        let original = w[((co * g.in_channels + ci) * 3 + (2 - i)) * 3 + (2 - j)];
                        assert_eq!(f[((ci * g.out_channels + co) * 3 + i) * 3 + j], original);
                    }
                }
            }
        }
    }
}
