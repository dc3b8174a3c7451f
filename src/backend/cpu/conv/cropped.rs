//! Convolutions whose kernel reaches past the input on every output pixel: taps that only ever
//! meet padding are dropped before the GEMM.
//!
//! A 3x3, padding-1 convolution of a 1x1 map (ResNet18's layer4 on 28x28 inputs) reads its
//! input through the centre tap alone; the other eight multiply zeros, 8/9 of the work. Along
//! each axis the taps that meet the input for some output position form a range; cutting the
//! kernel to it, with the padding shifted by as much as the range starts late, gives the same
//! output from a smaller convolution (up to the order of rounding: the dropped terms were exact
//! zeros, but the GEMM blocks the shorter reduction differently). The weight gradient of the
//! dropped taps is zero.

use std::ops::Range;

use rayon::prelude::*;

use crate::backend::geometry::Conv2dGeometry;

/// The kernel taps a convolution's output ever reads input through: rows `ky`, columns `kx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Crop {
    ky: Range<usize>,
    kx: Range<usize>,
}

/// The taps along one axis that meet the input (`input` long) for some output position.
fn used_taps(kernel: usize, stride: usize, pad: usize, input: usize, output: usize) -> Range<usize> {
    // Tap t at output o reads input o * stride + t - pad, inside 0..input for some o in 0..output.
    let first = pad.saturating_sub((output - 1) * stride);
    let end = kernel.min(pad + input);
    first..end.max(first)
}

/// The crop of `g` and the smaller geometry it computes with, or None when every tap is used
/// (or the cut would change the output size, which symmetric padding cannot always express).
pub(super) fn crop(g: &Conv2dGeometry) -> Option<(Crop, Conv2dGeometry)> {
    let (out_h, out_w) = (g.out_h(), g.out_w());
    if out_h == 0 || out_w == 0 || g.in_h == 0 || g.in_w == 0 {
        return None;
    }
    let ky = used_taps(g.kernel_h, g.stride_h, g.pad_h, g.in_h, out_h);
    let kx = used_taps(g.kernel_w, g.stride_w, g.pad_w, g.in_w, out_w);
    if ky.is_empty() || kx.is_empty() || (ky.len() == g.kernel_h && kx.len() == g.kernel_w) {
        return None;
    }
    let cropped = Conv2dGeometry {
        kernel_h: ky.len(),
        kernel_w: kx.len(),
        pad_h: g.pad_h - ky.start,
        pad_w: g.pad_w - kx.start,
        ..*g
    };
    (cropped.out_h() == out_h && cropped.out_w() == out_w).then_some((Crop { ky, kx }, cropped))
}

impl Crop {
    /// The used taps of `w` ([C_out, C_in, kh, kw] of `g`), as the cropped geometry's weights.
    pub(super) fn weights(&self, g: &Conv2dGeometry, w: &[f32]) -> Vec<f32> {
        let taps: Vec<usize> =
            self.ky.clone().flat_map(|ky| self.kx.clone().map(move |kx| ky * g.kernel_w + kx)).collect();
        let (kk, used) = (g.kernel_h * g.kernel_w, taps.len());
        let mut out = vec![0.0; g.out_channels * g.in_channels * used];
        // In parallel: layer4's 2.4M weights per call, read a ninth at a time.
        out.par_chunks_mut(used * g.in_channels).zip(w[..g.weight_len()].par_chunks(kk * g.in_channels)).for_each(
            |(dst, src)| {
                for (d, kernel) in dst.chunks_exact_mut(used).zip(src.chunks_exact(kk)) {
                    d.iter_mut().zip(&taps).for_each(|(d, &t)| *d = kernel[t]);
                }
            },
        );
        out
    }

    /// The full weight gradient of `g` from the cropped one: zero at the dropped taps.
    pub(super) fn expand_weight_grad(&self, g: &Conv2dGeometry, cropped: &[f32], dw: &mut [f32]) {
        let (kk, used) = (g.kernel_h * g.kernel_w, self.ky.len() * self.kx.len());
        let rows =
            dw[..g.weight_len()].par_chunks_mut(kk * g.in_channels).zip(cropped.par_chunks(used * g.in_channels));
        rows.for_each(|(dst, src)| {
            for (kernel, part) in dst.chunks_exact_mut(kk).zip(src.chunks_exact(used)) {
                kernel.fill(0.0);
                for (row, ky) in part.chunks_exact(self.kx.len()).zip(self.ky.clone()) {
                    kernel[ky * g.kernel_w..][self.kx.clone()].copy_from_slice(row);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(size: usize, kernel: usize, stride: usize, pad: usize) -> Conv2dGeometry {
        Conv2dGeometry {
            batch: 2,
            in_channels: 3,
            out_channels: 4,
            in_h: size,
            in_w: size,
            kernel_h: kernel,
            kernel_w: kernel,
            stride_h: stride,
            stride_w: stride,
            pad_h: pad,
            pad_w: pad,
        }
    }

    #[test]
    fn a_3x3_convolution_of_a_1x1_map_keeps_the_centre_tap() {
        let (c, g) = crop(&geometry(1, 3, 1, 1)).unwrap();
        assert_eq!(c, Crop { ky: 1..2, kx: 1..2 });
        assert_eq!((g.kernel_h, g.pad_h, g.out_h()), (1, 0, 1));
    }

    #[test]
    fn a_strided_3x3_of_a_2x2_map_keeps_the_lower_right_taps() {
        // ResNet18's layer4.0.conv1 on 28x28 inputs: 2x2 -> 1x1.
        let (c, g) = crop(&geometry(2, 3, 2, 1)).unwrap();
        assert_eq!(c, Crop { ky: 1..3, kx: 1..3 });
        assert_eq!((g.kernel_h, g.pad_h, g.out_h()), (2, 0, 1));
    }

    #[test]
    fn convolutions_that_use_every_tap_are_left_alone() {
        for (size, kernel, stride, pad) in [(2, 3, 1, 1), (7, 3, 1, 1), (4, 3, 2, 1), (5, 1, 1, 0), (224, 7, 2, 3)] {
            assert_eq!(crop(&geometry(size, kernel, stride, pad)), None, "{size} {kernel} {stride} {pad}");
        }
    }

    #[test]
    fn weights_round_trip_through_the_crop() {
        let g = geometry(1, 3, 1, 1);
        let (c, _) = crop(&g).unwrap();
        let w: Vec<f32> = (0..g.weight_len()).map(|i| i as f32).collect();
        let cropped = c.weights(&g, &w);
        assert_eq!(cropped, (0..12).map(|k| (k * 9 + 4) as f32).collect::<Vec<_>>());
        let mut dw = vec![7.0; g.weight_len()];
        c.expand_weight_grad(&g, &cropped, &mut dw);
        let expect: Vec<f32> = (0..g.weight_len()).map(|i| if i % 9 == 4 { i as f32 } else { 0.0 }).collect();
        assert_eq!(dw, expect);
    }
}
