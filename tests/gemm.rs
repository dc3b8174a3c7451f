//! SGEMM against a naive f64 reference, for every SIMD level this CPU supports.
//!
//! Tolerance: each C element may differ from the exact product by at most
//! `1e-6 * (k + 2) * (sum_p |a_ip| |b_pj| + |beta c_ij|)`. The worst-case rounding error of an
//! f32 dot product of length k (plus the beta term) is about `(k + 2) * 6e-8` of that same sum,
//! so the bound is loose for honest rounding yet far below the O(1) relative error of a wrong
//! index, a dropped k block or a mishandled edge tile.

use cxr::backend::cpu::gemm::{
    pack_a, panel_rows, sgemm, sgemm_with, AOperand, BOperand, Epilogue, Layout, MatRef, RowNorm,
};
use cxr::backend::cpu::simd::SimdLevel;
use proptest::prelude::*;

/// Marks C's padding columns; any change to them is a bug.
const SENTINEL: f32 = -7777.0;

/// Deterministic values in [-1, 1) from a seed (xorshift), so failures reproduce.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// One stored operand: its data, leading dimension and layout.
struct Operand {
    data: Vec<f32>,
    ld: usize,
    layout: Layout,
}

impl Operand {
    /// A logical `rows x cols` matrix stored with `layout`, leading dimension padded by `pad`.
    /// The slice is exactly as long as needed, so an overrun past its end would panic.
    fn new(rows: usize, cols: usize, layout: Layout, pad: usize, seed: u64) -> Operand {
        let (outer, inner) = if layout == Layout::Normal { (rows, cols) } else { (cols, rows) };
        let ld = inner + pad;
        Operand { data: values((outer - 1) * ld + inner, seed), ld, layout }
    }

    fn at(&self, i: usize, j: usize) -> f64 {
        let idx = if self.layout == Layout::Normal { i * self.ld + j } else { j * self.ld + i };
        self.data[idx] as f64
    }

    fn mat(&self) -> MatRef<'_> {
        MatRef { data: &self.data, ld: self.ld, layout: self.layout }
    }
}

/// One test case: sizes, layouts, paddings, beta.
#[derive(Debug, Clone, Copy)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    a_layout: Layout,
    b_layout: Layout,
    pad_a: usize,
    pad_b: usize,
    pad_c: usize,
    beta: f32,
    seed: u64,
    /// How A reaches the kernel, and what follows the product.
    mode: Mode,
}

/// A plain `sgemm`, or `sgemm_with` on A packed beforehand with the fused epilogue.
#[derive(Debug, Clone, Copy, Default)]
struct Mode {
    /// A packed by `pack_a` as rows `skip_panels * MR ..` of a taller matrix.
    packed: Option<usize>,
    bias: bool,
    /// A per-row affine map (an eval-mode batch norm) after the bias.
    norm: bool,
    residual: bool,
    relu: bool,
}

/// Runs `case` at `level` and checks every element of C (and that the padding is untouched).
fn check(level: SimdLevel, case: Case) -> Result<(), String> {
    let Case { m, n, k, beta, .. } = case;
    let a = Operand::new(m, k, case.a_layout, case.pad_a, case.seed);
    let b = Operand::new(k, n, case.b_layout, case.pad_b, case.seed + 1);
    let ldc = n + case.pad_c;
    // With beta == 0 the old C is NaN: it must be ignored, not multiplied by zero.
    let mut c: Vec<f32> = if beta == 0.0 { vec![f32::NAN; m * ldc] } else { values(m * ldc, case.seed + 2) };
    for row in c.chunks_mut(ldc) {
        row[n..].fill(SENTINEL);
    }
    let c0 = c.clone();
    let bias = values(m, case.seed + 3);
    let residual = values(m * ldc, case.seed + 4);
    let (mean, norm_scale, shift) = (values(m, case.seed + 6), values(m, case.seed + 7), values(m, case.seed + 8));
    let mode = case.mode;
    let epilogue = Epilogue {
        row_bias: mode.bias.then_some(&bias[..]),
        row_norm: mode.norm.then_some(RowNorm { mean: &mean, scale: &norm_scale, shift: &shift }),
        residual: mode.residual.then_some((&residual[..], ldc)),
        relu: mode.relu,
    };
    match mode.packed {
        None if !mode.bias && !mode.norm && !mode.residual && !mode.relu => {
            sgemm(level, m, n, k, a.mat(), b.mat(), beta, &mut c, ldc)
        }
        None => sgemm_with(
            level,
            m,
            n,
            k,
            AOperand::Matrix(a.mat()),
            BOperand::Matrix(b.mat()),
            beta,
            &mut c,
            ldc,
            &epilogue,
        ),
        Some(skip_panels) => {
            // A taller matrix whose rows from `first_row` on are A: the product must use exactly
            // those panels.
            let first_row = skip_panels * panel_rows(level);
            let mut tall = values(first_row * k, case.seed + 5);
            tall.extend((0..m).flat_map(|i| (0..k).map(move |p| (i, p))).map(|(i, p)| a.at(i, p) as f32));
            let packed = pack_a(level, first_row + m, k, MatRef::normal(&tall, k));
            let a_op = AOperand::Packed { packed: &packed, first_row };
            sgemm_with(level, m, n, k, a_op, BOperand::Matrix(b.mat()), beta, &mut c, ldc, &epilogue);
        }
    }

    for i in 0..m {
        for j in 0..n {
            let (mut exact, mut scale) = (0.0f64, 0.0f64);
            for p in 0..k {
                exact += a.at(i, p) * b.at(p, j);
                scale += (a.at(i, p) * b.at(p, j)).abs();
            }
            if beta != 0.0 {
                let old = beta as f64 * c0[i * ldc + j] as f64;
                exact += old;
                scale += old.abs();
            }
            if mode.bias {
                exact += bias[i] as f64;
                scale += (bias[i] as f64).abs();
            }
            if mode.norm {
                let (mu, s, b) = (mean[i] as f64, norm_scale[i] as f64, shift[i] as f64);
                exact = (exact - mu) * s + b;
                scale = (scale + mu.abs()) * s.abs() + b.abs();
            }
            if mode.residual {
                exact += residual[i * ldc + j] as f64;
                scale += (residual[i * ldc + j] as f64).abs();
            }
            if mode.relu {
                exact = exact.max(0.0);
            }
            let got = c[i * ldc + j] as f64;
            let tol = 1e-6 * (k as f64 + 2.0) * scale + 1e-30;
            // Written so that a NaN result fails too.
            let close = (got - exact).abs() <= tol;
            if !close {
                return Err(format!("{level:?} {case:?}: C[{i},{j}] = {got}, expected {exact} (tol {tol})"));
            }
        }
        if c[i * ldc + n..(i + 1) * ldc].iter().any(|&v| v != SENTINEL) {
            return Err(format!("{level:?} {case:?}: padding of row {i} overwritten"));
        }
    }
    Ok(())
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::Normal), Just(Layout::Transposed)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn matches_reference_on_small_shapes(
        m in 1usize..70,
        n in 1usize..70,
        k in 1usize..70,
        a_layout in layout(),
        b_layout in layout(),
        pad_a in 0usize..4,
        pad_b in 0usize..4,
        pad_c in 0usize..4,
        beta in prop_oneof![Just(0.0f32), Just(1.0f32), Just(-0.5f32)],
        seed in any::<u32>(),
    ) {
        let case = Case { m, n, k, a_layout, b_layout, pad_a, pad_b, pad_c, beta, seed: seed as u64, mode: Mode::default() };
        for level in SimdLevel::supported() {
            if let Err(e) = check(level, case) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}

/// Shapes that cross the k, row and column blocks and run on the thread pool.
#[test]
fn matches_reference_across_blocks_multithreaded() {
    let layouts = [Layout::Normal, Layout::Transposed];
    for level in SimdLevel::supported() {
        for (idx, &(a_layout, b_layout)) in
            layouts.iter().flat_map(|a| layouts.iter().map(move |b| (*a, *b))).collect::<Vec<_>>().iter().enumerate()
        {
            let beta = if idx % 2 == 0 { 0.0 } else { 1.0 };
            let case = Case {
                m: 300,
                n: 513,
                k: 700,
                a_layout,
                b_layout,
                pad_a: 3,
                pad_b: 1,
                pad_c: 5,
                beta,
                seed: 7 + idx as u64,
                mode: Mode::default(),
            };
            check(level, case).unwrap();
        }
    }
}

/// Skinny and conv-like shapes: one tile row or column, tiles regrouped for the threads.
#[test]
fn matches_reference_on_skinny_shapes() {
    let shapes =
        [(64, 3136, 27), (512, 49, 300), (7, 2000, 33), (2000, 5, 40), (1, 1, 5000), (3000, 1, 17), (1, 4000, 3)];
    for level in SimdLevel::supported() {
        for (idx, &(m, n, k)) in shapes.iter().enumerate() {
            let a_layout = if idx % 2 == 0 { Layout::Normal } else { Layout::Transposed };
            let b_layout = if idx % 3 == 0 { Layout::Transposed } else { Layout::Normal };
            let beta = if idx % 2 == 0 { 1.0 } else { 0.0 };
            let case = Case {
                m,
                n,
                k,
                a_layout,
                b_layout,
                pad_a: 0,
                pad_b: 2,
                pad_c: 1,
                beta,
                seed: idx as u64,
                mode: Mode::default(),
            };
            check(level, case).unwrap();
        }
    }
}

/// Calls from inside rayon tasks (as conv over a batch does), on a pool with an odd thread count:
/// nested use of the pool and of the per-thread packing buffers.
#[test]
fn nested_calls_inside_rayon_tasks() {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    pool.install(|| {
        (0..6u64).into_par_iter().for_each(|seed| {
            let case = Case {
                m: 150 + seed as usize,
                n: 140,
                k: 130,
                a_layout: Layout::Normal,
                b_layout: Layout::Transposed,
                pad_a: 0,
                pad_b: 0,
                pad_c: 0,
                beta: 0.0,
                seed,
                // Odd seeds take the prepacked path with the epilogue, also nested.
                mode: Mode {
                    packed: (seed % 2 == 1).then_some(1),
                    bias: true,
                    norm: true,
                    residual: false,
                    relu: true,
                },
            };
            check(SimdLevel::best_supported(), case).unwrap();
        });
    });
}

#[test]
fn beta_zero_ignores_nan_in_c() {
    for level in SimdLevel::supported() {
        for &(m, n, k) in &[(5, 7, 3), (40, 70, 300), (200, 200, 200)] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let mut c = vec![f32::NAN; m * n];
            sgemm(level, m, n, k, MatRef::normal(&a, k), MatRef::normal(&b, n), 0.0, &mut c, n);
            assert!(c.iter().all(|v| v.is_finite()), "{level:?} {m}x{n}x{k}: NaN leaked from C");
        }
    }
}

#[test]
fn k_zero_scales_c() {
    for level in SimdLevel::supported() {
        let (m, n, ldc) = (3, 4, 6);
        let empty: [f32; 0] = [];
        let mut c = vec![2.0f32; m * ldc];
        sgemm(level, m, n, 0, MatRef::normal(&empty, 0), MatRef::normal(&empty, n), 0.5, &mut c, ldc);
        for row in c.chunks(ldc) {
            assert_eq!(&row[..n], &[1.0; 4], "{level:?}: beta * C expected");
            assert_eq!(&row[n..], &[2.0; 2], "{level:?}: padding touched");
        }
        let mut c = vec![f32::NAN; m * ldc];
        sgemm(level, m, n, 0, MatRef::normal(&empty, 0), MatRef::normal(&empty, n), 0.0, &mut c, ldc);
        for row in c.chunks(ldc) {
            assert!(row[..n].iter().all(|&v| v == 0.0), "{level:?}: beta == 0 with k == 0 must zero C");
            assert!(row[n..].iter().all(|v| v.is_nan()), "{level:?}: padding touched");
        }
    }
}

#[test]
fn empty_output_is_a_no_op() {
    for level in SimdLevel::supported() {
        let a = values(12, 3);
        let mut c: Vec<f32> = Vec::new();
        sgemm(level, 0, 4, 3, MatRef::normal(&a, 3), MatRef::normal(&a, 4), 0.0, &mut c, 4);
        sgemm(level, 4, 0, 3, MatRef::normal(&a, 3), MatRef::normal(&a, 0), 0.0, &mut c, 0);
    }
}

#[test]
fn repeated_calls_of_different_sizes_reuse_buffers_correctly() {
    // A big call grows the per-thread buffer; the small ones after it must not see stale data in
    // their zero padding.
    for level in SimdLevel::supported() {
        for &(m, n, k) in &[(257, 259, 261), (3, 5, 7), (33, 17, 65), (1, 2, 3)] {
            let case = Case {
                m,
                n,
                k,
                a_layout: Layout::Transposed,
                b_layout: Layout::Transposed,
                pad_a: 1,
                pad_b: 0,
                pad_c: 2,
                beta: 1.0,
                seed: 11,
                mode: Mode::default(),
            };
            check(level, case).unwrap();
        }
    }
}

/// A operand packed once and cut at a panel boundary (as convolution tasks split a layer's
/// packed weights by output channel), with every combination of the fused epilogue.
#[test]
fn prepacked_a_and_epilogue_match_reference() {
    let shapes = [(64, 3136, 27), (512, 49, 300), (30, 70, 600), (1, 33, 5), (100, 1, 17), (14, 32, 256)];
    for level in SimdLevel::supported() {
        for (idx, &(m, n, k)) in shapes.iter().enumerate() {
            for variant in 0..16 {
                let mode = Mode {
                    packed: (variant % 2 == 0).then_some(idx % 3),
                    bias: variant & 2 != 0,
                    residual: variant & 4 != 0,
                    norm: variant & 8 != 0,
                    relu: variant % 3 != 1,
                };
                let b_layout = if idx % 2 == 0 { Layout::Normal } else { Layout::Transposed };
                let case = Case {
                    m,
                    n,
                    k,
                    a_layout: Layout::Normal,
                    b_layout,
                    pad_a: 0,
                    pad_b: 1,
                    pad_c: 3,
                    beta: 0.0,
                    seed: 100 + idx as u64,
                    mode,
                };
                check(level, case).unwrap();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    #[test]
    fn prepacked_a_matches_reference_on_small_shapes(
        m in 1usize..50,
        n in 1usize..50,
        k in 1usize..300,
        skip_panels in 0usize..3,
        bias in any::<bool>(),
        norm in any::<bool>(),
        residual in any::<bool>(),
        relu in any::<bool>(),
        beta in prop_oneof![Just(0.0f32), Just(1.0f32)],
        seed in any::<u32>(),
    ) {
        let mode = Mode { packed: Some(skip_panels), bias, norm, residual, relu };
        let case = Case {
            m, n, k, a_layout: Layout::Normal, b_layout: Layout::Normal, pad_a: 0, pad_b: 0, pad_c: 1, beta,
            seed: seed as u64, mode,
        };
        for level in SimdLevel::supported() {
            if let Err(e) = check(level, case) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}

/// A B operand that packs its own panels (as a convolution's implicit im2col does): here from a
/// plain row-major matrix, one float at a time.
struct MatrixPanels<'a> {
    data: &'a [f32],
    ld: usize,
    k: usize,
}

impl cxr::backend::cpu::gemm::PanelSource for MatrixPanels<'_> {
    fn pack(&self, dst: &mut [f32], nr: usize, j0: usize, n: usize, p0: usize, kc: usize) {
        assert!(p0 + kc <= self.k, "asked for rows past k");
        for (i, panel) in dst.chunks_exact_mut(kc * nr).enumerate() {
            for p in 0..kc {
                for w in 0..nr {
                    let j = j0 + i * nr + w;
                    panel[p * nr + w] = if j < n { self.data[(p0 + p) * self.ld + j] } else { 0.0 };
                }
            }
        }
    }
}

/// A self-packing B gives the same C, bit for bit, as the same matrix packed by the GEMM, both
/// when B's panels are packed per tile (n >= m) and when B is the shared operand (m > n).
#[test]
fn panel_source_b_equals_matrix_b() {
    for level in SimdLevel::supported() {
        for (m, n, k) in [(37, 300, 600), (700, 45, 530), (5, 3, 2), (64, 1024, 257)] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let mut want = vec![0.0; m * n];
            let mut got = vec![f32::NAN; m * n];
            let a_op = AOperand::Matrix(MatRef::normal(&a, k));
            sgemm_with(
                level,
                m,
                n,
                k,
                a_op,
                BOperand::Matrix(MatRef::normal(&b, n)),
                0.0,
                &mut want,
                n,
                &Epilogue::NONE,
            );
            let source = MatrixPanels { data: &b, ld: n, k };
            sgemm_with(level, m, n, k, a_op, BOperand::Panels(&source), 0.0, &mut got, n, &Epilogue::NONE);
            assert!(want == got, "{level:?} {m}x{n}x{k}: self-packed B differs");
        }
    }
}
