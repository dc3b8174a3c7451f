//! Bilinear resampling of a map to the input resolution.
//!
//! Same sampling as PyTorch's `F.interpolate(mode="bilinear", align_corners=False)` (no
//! antialiasing): output pixel `x` reads source coordinate `(x + 0.5) * in / out - 0.5`, clamped at
//! 0 below and to the last pixel above. Pixel *areas* line up (the map's cell `j` covers the input
//! pixels under it), which is what an activation map's receptive field means; `align_corners=True`
//! would stretch the map so its corner cells sit on the image's corner pixels.

/// One axis: for each output index, the two source indices and the weight of the second.
fn axis(in_len: usize, out_len: usize) -> Vec<(usize, usize, f32)> {
    let scale = in_len as f64 / out_len as f64;
    (0..out_len)
        .map(|o| {
            let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(in_len - 1);
            let i1 = (i0 + 1).min(in_len - 1);
            (i0, i1, (src - i0 as f64) as f32)
        })
        .collect()
}

/// Resizes a row-major `in_h x in_w` map to `out_h x out_w`.
pub fn bilinear(values: &[f32], in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> Vec<f32> {
    debug_assert_eq!(values.len(), in_w * in_h);
    if in_w == 0 || in_h == 0 {
        return vec![0.0; out_w * out_h];
    }
    let xs = axis(in_w, out_w);
    let ys = axis(in_h, out_h);
    let mut out = Vec::with_capacity(out_w * out_h);
    for &(y0, y1, fy) in &ys {
        let (r0, r1) = (&values[y0 * in_w..(y0 + 1) * in_w], &values[y1 * in_w..(y1 + 1) * in_w]);
        for &(x0, x1, fx) in &xs {
            let top = r0[x0] + (r0[x1] - r0[x0]) * fx;
            let bottom = r1[x0] + (r1[x1] - r1[x0]) * fx;
            out.push(top + (bottom - top) * fy);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_torch_interpolate_on_a_2x2_map() {
        // torch.nn.functional.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]), size=(4, 4),
        //     mode="bilinear", align_corners=False)
        let expected = [1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0];
        assert_eq!(bilinear(&[1.0, 2.0, 3.0, 4.0], 2, 2, 4, 4), expected);
    }

    #[test]
    fn same_size_is_identity_and_constant_stays_constant() {
        let v: Vec<f32> = (0..12).map(|i| i as f32).collect();
        assert_eq!(bilinear(&v, 4, 3, 4, 3), v);
        assert!(bilinear(&[2.5; 6], 3, 2, 7, 5).iter().all(|&x| (x - 2.5).abs() < 1e-6));
    }
}
