//! Launch wrappers of kernels/matmul.cu.

use super::ctx::Ctx;
use super::exec::{Arg, DeviceStorage};
use super::launch;
use crate::backend::Layout;
use crate::error::{Error, Result};

/// One SGEMM on raw addresses: C = alpha * op(A) op(B) + beta * C, C[m x n], inner size k. The
/// callers (matmul, conv) have checked that each address range lies in its buffer.
#[allow(clippy::too_many_arguments)]
pub fn gemm_at(
    ctx: &Ctx,
    op: &'static str,
    c: u64,
    a: (u64, Layout),
    b: (u64, Layout),
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    beta: f32,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let cfg = launch::gemm(op, m, n, k)?;
    let flag = |l: Layout| Arg::I32((l == Layout::Transposed) as i32);
    let sizes = [m, n, k].map(|v| Arg::I32(v as i32));
    let args = [
        &[Arg::Ptr(c), Arg::Ptr(a.0), Arg::Ptr(b.0)][..],
        &sizes,
        &[flag(a.1), flag(b.1), Arg::F32(alpha), Arg::F32(beta)],
    ]
    .concat();
    ctx.launch("sgemm_f32", cfg, &args)
}

/// C[m x n] = op(A) op(B) into a new buffer.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    ctx: &Ctx,
    a: &DeviceStorage,
    a_layout: Layout,
    b: &DeviceStorage,
    b_layout: Layout,
    m: usize,
    k: usize,
    n: usize,
) -> Result<DeviceStorage> {
    let op = "matmul";
    if a.len != m * k || b.len != k * n {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!("A has {} and B {} elements for m={m} k={k} n={n}", a.len, b.len),
        });
    }
    let c = ctx.alloc(op, m * n)?;
    if k == 0 {
        ctx.launch_1d(op, "fill_f32", m * n, &[c.arg(), Arg::F32(0.0)])?;
        return Ok(c);
    }
    gemm_at(ctx, op, c.ptr_at(0), (a.ptr_at(0), a_layout), (b.ptr_at(0), b_layout), m, n, k, 1.0, 0.0)?;
    Ok(c)
}

/// y[cols x rows] = x[rows x cols]^T.
pub fn transpose(ctx: &Ctx, x: &DeviceStorage, rows: usize, cols: usize) -> Result<DeviceStorage> {
    let op = "transpose2d";
    if x.len != rows * cols {
        return Err(Error::ShapeMismatch { op, detail: format!("{} elements for {rows} x {cols}", x.len) });
    }
    let y = ctx.alloc(op, x.len)?;
    if x.len > 0 {
        let cfg = launch::transpose(op, rows, cols)?;
        ctx.launch("transpose_f32", cfg, &[y.arg(), x.arg(), Arg::I32(rows as i32), Arg::I32(cols as i32)])?;
    }
    Ok(y)
}
