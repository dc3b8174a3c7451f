//! 2-D convolution on the CPU: forward, gradient w.r.t. input, weight and bias.
//!
//! PLACEHOLDER BODIES: correct direct loops, to be replaced by im2col/1x1 GEMM versions with the
//! same signatures. Layouts: x [N, C_in, H, W], w [C_out, C_in, kh, kw], y [N, C_out, OH, OW].

use super::simd::SimdLevel;
use crate::backend::geometry::Conv2dGeometry;

/// y = conv(x, w) + bias. `y` is overwritten.
pub fn conv2d_forward(
    level: SimdLevel,
    g: &Conv2dGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let _ = level;
    let (oh, ow) = (g.out_h(), g.out_w());
    for n in 0..g.batch {
        for co in 0..g.out_channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |b| b[co]);
                    for ci in 0..g.in_channels {
                        for ky in 0..g.kernel_h {
                            for kx in 0..g.kernel_w {
                                let iy = (oy * g.stride_h + ky) as isize - g.pad_h as isize;
                                let ix = (ox * g.stride_w + kx) as isize - g.pad_w as isize;
                                if iy < 0 || ix < 0 || iy >= g.in_h as isize || ix >= g.in_w as isize {
                                    continue;
                                }
                                let xi = ((n * g.in_channels + ci) * g.in_h + iy as usize) * g.in_w
                                    + ix as usize;
                                let wi = ((co * g.in_channels + ci) * g.kernel_h + ky) * g.kernel_w + kx;
                                acc += x[xi] * w[wi];
                            }
                        }
                    }
                    y[((n * g.out_channels + co) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
}

/// dx = conv_transpose(dy, w). `dx` is overwritten.
pub fn conv2d_backward_input(
    level: SimdLevel,
    g: &Conv2dGeometry,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) {
    let _ = level;
    dx.fill(0.0);
    let (oh, ow) = (g.out_h(), g.out_w());
    for n in 0..g.batch {
        for co in 0..g.out_channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[((n * g.out_channels + co) * oh + oy) * ow + ox];
                    for ci in 0..g.in_channels {
                        for ky in 0..g.kernel_h {
                            for kx in 0..g.kernel_w {
                                let iy = (oy * g.stride_h + ky) as isize - g.pad_h as isize;
                                let ix = (ox * g.stride_w + kx) as isize - g.pad_w as isize;
                                if iy < 0 || ix < 0 || iy >= g.in_h as isize || ix >= g.in_w as isize {
                                    continue;
                                }
                                let xi = ((n * g.in_channels + ci) * g.in_h + iy as usize) * g.in_w
                                    + ix as usize;
                                let wi = ((co * g.in_channels + ci) * g.kernel_h + ky) * g.kernel_w + kx;
                                dx[xi] += d * w[wi];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// dw = correlation of x with dy, summed over the batch. `dw` is overwritten.
pub fn conv2d_backward_weight(
    level: SimdLevel,
    g: &Conv2dGeometry,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) {
    let _ = level;
    dw.fill(0.0);
    let (oh, ow) = (g.out_h(), g.out_w());
    for n in 0..g.batch {
        for co in 0..g.out_channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[((n * g.out_channels + co) * oh + oy) * ow + ox];
                    for ci in 0..g.in_channels {
                        for ky in 0..g.kernel_h {
                            for kx in 0..g.kernel_w {
                                let iy = (oy * g.stride_h + ky) as isize - g.pad_h as isize;
                                let ix = (ox * g.stride_w + kx) as isize - g.pad_w as isize;
                                if iy < 0 || ix < 0 || iy >= g.in_h as isize || ix >= g.in_w as isize {
                                    continue;
                                }
                                let xi = ((n * g.in_channels + ci) * g.in_h + iy as usize) * g.in_w
                                    + ix as usize;
                                let wi = ((co * g.in_channels + ci) * g.kernel_h + ky) * g.kernel_w + kx;
                                dw[wi] += d * x[xi];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// db[c] = sum of dy over batch and pixels. `db` is overwritten.
pub fn conv2d_backward_bias(g: &Conv2dGeometry, dy: &[f32], db: &mut [f32]) {
    let plane = g.out_h() * g.out_w();
    db.fill(0.0);
    for n in 0..g.batch {
        for (co, d) in db.iter_mut().enumerate() {
            let start = (n * g.out_channels + co) * plane;
            *d += dy[start..start + plane].iter().sum::<f32>();
        }
    }
}
