//! Launch wrappers of kernels/conv.cu: im2col + SGEMM one image at a time.

use super::ctx::Ctx;
use super::exec::{Arg, DeviceStorage};
use super::launch;
use super::matmul::gemm_at;
use crate::backend::{Conv2dGeometry, Layout};
use crate::error::{Error, Result};

/// Checks the geometry and the sizes the kernels index with `int`, and returns the kernel's
/// `CxrConv` struct.
fn geometry_arg(op: &'static str, g: &Conv2dGeometry) -> Result<Arg> {
    if !g.is_valid() {
        return Err(Error::InvalidArgument { op, detail: format!("invalid convolution geometry {g:?}") });
    }
    let k = g.in_channels * g.kernel_h * g.kernel_w;
    launch::check_product(op, "column matrix (Cin*kh*kw x OH*OW)", &[k, g.out_h() * g.out_w()])?;
    launch::check_product(op, "weight", &[g.out_channels, k])?;
    launch::check_product(op, "input", &[g.batch, g.in_channels, g.in_h, g.in_w])?;
    launch::check_product(op, "output", &[g.batch, g.out_channels, g.out_h(), g.out_w()])?;
    let fields = [
        g.in_channels,
        g.in_h,
        g.in_w,
        g.out_h(),
        g.out_w(),
        g.kernel_h,
        g.kernel_w,
        g.stride_h,
        g.stride_w,
        g.pad_h,
        g.pad_w,
    ];
    Ok(Arg::Ints(fields.iter().map(|&v| v as i32).collect()))
}

/// A 1x1, stride-1, unpadded convolution reads its input as the column matrix directly.
fn is_pointwise(g: &Conv2dGeometry) -> bool {
    g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0
}

fn check_len(op: &'static str, what: &str, s: &DeviceStorage, len: usize) -> Result<()> {
    if s.len != len {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!("{what} has {} elements, the geometry needs {len}", s.len),
        });
    }
    Ok(())
}

/// Sizes of one image: (input, output, column rows K, output plane).
fn per_image(g: &Conv2dGeometry) -> (usize, usize, usize, usize) {
    let plane = g.out_h() * g.out_w();
    (g.in_channels * g.in_h * g.in_w, g.out_channels * plane, g.in_channels * g.kernel_h * g.kernel_w, plane)
}

/// Address of image n's column matrix: im2col into `col`, or the image itself when pointwise.
fn columns(
    ctx: &Ctx,
    op: &'static str,
    g: &Conv2dGeometry,
    geo: &Arg,
    x: &DeviceStorage,
    col: &Option<DeviceStorage>,
    n: usize,
) -> Result<u64> {
    let (in_len, _, k, plane) = per_image(g);
    match col {
        None => Ok(x.ptr_at(n * in_len)),
        Some(col) => {
            ctx.launch_1d(op, "im2col_f32", k * plane, &[col.arg(), Arg::Ptr(x.ptr_at(n * in_len)), geo.clone()])?;
            Ok(col.ptr_at(0))
        }
    }
}

fn column_buffer(ctx: &Ctx, op: &'static str, g: &Conv2dGeometry) -> Result<Option<DeviceStorage>> {
    let (_, _, k, plane) = per_image(g);
    if is_pointwise(g) {
        Ok(None)
    } else {
        ctx.alloc(op, k * plane).map(Some)
    }
}

/// y = conv2d(x, w) + bias.
pub fn forward(
    ctx: &Ctx,
    g: &Conv2dGeometry,
    x: &DeviceStorage,
    w: &DeviceStorage,
    bias: Option<&DeviceStorage>,
) -> Result<DeviceStorage> {
    let op = "conv2d";
    let geo = geometry_arg(op, g)?;
    check_len(op, "input", x, g.input_len())?;
    check_len(op, "weight", w, g.weight_len())?;
    let (_, out_len, k, plane) = per_image(g);
    let y = ctx.alloc(op, g.output_len())?;
    let col = column_buffer(ctx, op, g)?;
    for n in 0..g.batch {
        let cols = columns(ctx, op, g, &geo, x, &col, n)?;
        let a = (w.ptr_at(0), Layout::Normal);
        gemm_at(ctx, op, y.ptr_at(n * out_len), a, (cols, Layout::Normal), g.out_channels, plane, k, 1.0, 0.0)?;
    }
    if let Some(b) = bias {
        check_len(op, "bias", b, g.out_channels)?;
        super::elementwise::add_channel_bias(ctx, &y, b, g.out_channels, plane)?;
    }
    Ok(y)
}

/// dx: dcol = W^T dy_n, then col2im (or dcol is dx_n itself when pointwise).
pub fn backward_input(ctx: &Ctx, g: &Conv2dGeometry, dy: &DeviceStorage, w: &DeviceStorage) -> Result<DeviceStorage> {
    let op = "conv2d_backward_input";
    let geo = geometry_arg(op, g)?;
    check_len(op, "output gradient", dy, g.output_len())?;
    check_len(op, "weight", w, g.weight_len())?;
    let (in_len, out_len, k, plane) = per_image(g);
    let dx = ctx.alloc(op, g.input_len())?;
    let dcol = column_buffer(ctx, op, g)?;
    for n in 0..g.batch {
        let target = dcol.as_ref().map_or(dx.ptr_at(n * in_len), |c| c.ptr_at(0));
        let a = (w.ptr_at(0), Layout::Transposed);
        gemm_at(ctx, op, target, a, (dy.ptr_at(n * out_len), Layout::Normal), k, plane, g.out_channels, 1.0, 0.0)?;
        if let Some(dcol) = &dcol {
            ctx.launch_1d(op, "col2im_f32", in_len, &[Arg::Ptr(dx.ptr_at(n * in_len)), dcol.arg(), geo.clone()])?;
        }
    }
    Ok(dx)
}

/// dW = sum over images of dy_n col_n^T (accumulated by the GEMM's beta, in image order).
pub fn backward_weight(ctx: &Ctx, g: &Conv2dGeometry, x: &DeviceStorage, dy: &DeviceStorage) -> Result<DeviceStorage> {
    let op = "conv2d_backward_weight";
    let geo = geometry_arg(op, g)?;
    check_len(op, "input", x, g.input_len())?;
    check_len(op, "output gradient", dy, g.output_len())?;
    let (_, out_len, k, plane) = per_image(g);
    let dw = ctx.full(op, g.weight_len(), 0.0)?;
    let col = column_buffer(ctx, op, g)?;
    for n in 0..g.batch {
        let cols = columns(ctx, op, g, &geo, x, &col, n)?;
        let a = (dy.ptr_at(n * out_len), Layout::Normal);
        gemm_at(ctx, op, dw.ptr_at(0), a, (cols, Layout::Transposed), g.out_channels, k, plane, 1.0, 1.0)?;
    }
    Ok(dw)
}
