//! Launch configurations: the ONE place that turns op sizes into grid, block and argument sizes,
//! used by the GPU and the emulation alike. Sizes are validated here, never trusted: a size whose
//! 32-bit index arithmetic could overflow in a kernel, or a grid beyond the hardware limits,
//! comes back as an error naming the op and the sizes.

use crate::error::{Error, Result};

/// Threads per block of the 1-D kernels and of the per-channel reductions (`CXR_BLOCK` in
/// kernels/common.cuh).
pub const BLOCK_1D: u32 = 256;
/// Grid-stride kernels use at most this many blocks; enough to fill the largest GPU several
/// times over, and each thread then loops.
const MAX_BLOCKS_1D: usize = 8192;
/// Largest element count a kernel indexes with `int` (room left so `i + grid stride` cannot
/// overflow).
pub const MAX_ELEMS: usize = i32::MAX as usize - (1 << 25);
/// Partial sums of the two-pass whole-tensor reductions.
pub const MAX_PARTIALS: usize = 1024;
/// Tile of C one SGEMM block computes, and its thread count (`CXR_TM`, `CXR_TN`,
/// `CXR_GEMM_THREADS` in kernels/matmul.cu).
pub const GEMM_TILE_M: usize = 64;
pub const GEMM_TILE_N: usize = 64;
pub const GEMM_THREADS: u32 = 256;
/// CUDA's limit on grid.y and grid.z.
const MAX_GRID_YZ: usize = 65535;

/// Grid and block of one launch (dynamic shared memory is never used: every tile is static).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
}

fn too_large(op: &'static str, detail: String) -> Error {
    Error::InvalidArgument {
        op,
        detail: format!("{detail} is too large for the CUDA kernels (limit {MAX_ELEMS} elements)"),
    }
}

/// `value` as a kernel `int`, or an error naming `op` and `what`.
pub fn int(op: &'static str, what: &str, value: usize) -> Result<i32> {
    if value > MAX_ELEMS {
        return Err(too_large(op, format!("{what} = {value}")));
    }
    Ok(value as i32)
}

/// Checks that a product of sizes (an index range a kernel walks) fits `int`.
pub fn check_product(op: &'static str, what: &str, dims: &[usize]) -> Result<()> {
    let total = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    match total {
        Some(t) if t <= MAX_ELEMS => Ok(()),
        _ => Err(too_large(op, format!("{what} {dims:?}"))),
    }
}

/// A grid-stride 1-D launch over `n` elements (n > 0).
pub fn grid_stride(op: &'static str, n: usize) -> Result<LaunchConfig> {
    int(op, "element count", n)?;
    let blocks = n.div_ceil(BLOCK_1D as usize).clamp(1, MAX_BLOCKS_1D);
    Ok(LaunchConfig { grid: [blocks as u32, 1, 1], block: [BLOCK_1D, 1, 1] })
}

/// One block per channel, for the per-channel reductions over `per_channel` values each.
pub fn per_channel(op: &'static str, channels: usize, per_channel: usize) -> Result<LaunchConfig> {
    check_product(op, "channels x values per channel", &[channels, per_channel])?;
    if channels == 0 || channels > i32::MAX as usize {
        return Err(Error::InvalidArgument { op, detail: format!("{channels} channels") });
    }
    Ok(LaunchConfig { grid: [channels as u32, 1, 1], block: [BLOCK_1D, 1, 1] })
}

/// The first pass of a whole-tensor reduction: the launch and how many partials it writes.
pub fn reduce_partials(op: &'static str, n: usize) -> Result<(LaunchConfig, usize)> {
    int(op, "element count", n)?;
    let blocks = n.div_ceil(BLOCK_1D as usize).clamp(1, MAX_PARTIALS);
    Ok((LaunchConfig { grid: [blocks as u32, 1, 1], block: [BLOCK_1D, 1, 1] }, blocks))
}

/// The second pass: one block over the partials.
pub fn reduce_final() -> LaunchConfig {
    LaunchConfig { grid: [1, 1, 1], block: [BLOCK_1D, 1, 1] }
}

/// SGEMM of C[m x n] with inner size k: one block per 64x64 tile of C (columns on grid.x, which
/// has no practical limit, rows on grid.y).
pub fn gemm(op: &'static str, m: usize, n: usize, k: usize) -> Result<LaunchConfig> {
    check_product(op, "A (m x k)", &[m, k])?;
    check_product(op, "B (k x n)", &[k, n])?;
    check_product(op, "C (m x n)", &[m, n])?;
    let rows = m.div_ceil(GEMM_TILE_M);
    if rows > MAX_GRID_YZ {
        return Err(too_large(op, format!("m = {m}")));
    }
    let cols = n.div_ceil(GEMM_TILE_N);
    Ok(LaunchConfig { grid: [cols as u32, rows as u32, 1], block: [GEMM_THREADS, 1, 1] })
}

/// Transpose of x[rows x cols] in 32x32 tiles with 32x8 threads.
pub fn transpose(op: &'static str, rows: usize, cols: usize) -> Result<LaunchConfig> {
    check_product(op, "matrix", &[rows, cols])?;
    let tiles_y = rows.div_ceil(32);
    if tiles_y > MAX_GRID_YZ {
        return Err(too_large(op, format!("rows = {rows}")));
    }
    Ok(LaunchConfig { grid: [cols.div_ceil(32) as u32, tiles_y as u32, 1], block: [32, 8, 1] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_cover_every_element_and_reject_overflow() {
        let c = grid_stride("t", 1000).unwrap();
        assert_eq!(c.grid, [4, 1, 1]);
        assert_eq!(grid_stride("t", 1 << 30).unwrap().grid[0] as usize, MAX_BLOCKS_1D);
        assert!(grid_stride("t", i32::MAX as usize).is_err());
        let g = gemm("t", 65, 129, 3).unwrap();
        assert_eq!(g.grid, [3, 2, 1]);
        assert!(gemm("t", 1 << 20, 1 << 12, 1).is_err());
        let e = gemm("matmul", 1 << 22, 1, 1 << 10).unwrap_err().to_string();
        assert!(e.contains("matmul") && e.contains("4194304"), "{e}");
        assert_eq!(transpose("t", 33, 65).unwrap().grid, [3, 2, 1]);
        assert_eq!(reduce_partials("t", 1 << 24).unwrap().1, MAX_PARTIALS);
    }
}
