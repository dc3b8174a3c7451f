//! SGEMM throughput in GFLOP/s (2mnk / median time) for square and conv-like shapes, at every
//! SIMD level this CPU supports.
//!
//! `cargo bench --bench gemm [-- FILTER...]`: a filter word keeps the levels (`avx512`, `avx2`,
//! `portable`) or shape names containing it. Threads come from rayon's global pool, so
//! `RAYON_NUM_THREADS=1` measures one core. On a shared machine wall time suffers from other
//! processes, so the `cpu GF/s` column (Linux only) divides by the process's CPU time instead and
//! multiplies by the thread count: what the code achieves while it actually runs. Idle workers
//! spinning while one thread finishes count as CPU time, so load imbalance still shows.

use std::time::{Duration, Instant};

use cxr::backend::cpu::gemm::{sgemm, Layout, MatRef};
use cxr::backend::cpu::simd::SimdLevel;

/// One benchmarked product: name, sizes and operand layouts.
struct Shape {
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
    a: Layout,
    b: Layout,
}

const fn shape(name: &'static str, m: usize, n: usize, k: usize, a: Layout, b: Layout) -> Shape {
    Shape { name, m, n, k, a, b }
}

use Layout::{Normal as N, Transposed as T};

const SHAPES: &[Shape] = &[
    shape("square 256", 256, 256, 256, N, N),
    shape("square 1024", 1024, 1024, 1024, N, N),
    shape("square 2048", 2048, 2048, 2048, N, N),
    shape("square 1024 A^T", 1024, 1024, 1024, T, N),
    shape("square 1024 B^T", 1024, 1024, 1024, N, T),
    // Forward convolutions as im2col GEMMs: W[cout x cin*9] * cols[cin*9 x h*w].
    shape("conv fwd 64x3136x576", 64, 3136, 576, N, N),
    shape("conv fwd 128x784x1152", 128, 784, 1152, N, N),
    shape("conv fwd 512x49x4608", 512, 49, 4608, N, N),
    // Backward: dW = dY * cols^T (B transposed), dcols = W^T * dY (A transposed).
    shape("conv dW 64x576x3136 B^T", 64, 576, 3136, N, T),
    shape("conv dX 576x3136x64 A^T", 576, 3136, 64, T, N),
    shape("conv dW 512x4608x49 B^T", 512, 4608, 49, N, T),
    shape("conv dX 4608x49x512 A^T", 4608, 49, 512, T, N),
];

fn main() {
    // Filter words naming a level pick levels; the others pick shapes by substring.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let (level_words, shape_words): (Vec<&String>, Vec<&String>) =
        args.iter().partition(|a| SimdLevel::parse(a).is_some());
    let levels: Vec<SimdLevel> = SimdLevel::supported()
        .into_iter()
        .rev()
        .filter(|l| level_words.is_empty() || level_words.iter().any(|w| SimdLevel::parse(w) == Some(*l)))
        .collect();
    let keep = |name: &str| shape_words.is_empty() || shape_words.iter().any(|w| name.contains(w.as_str()));
    println!("threads: {}", rayon::current_num_threads());
    println!("{:<10} {:<28} {:>10} {:>10} {:>10}", "level", "shape", "GFLOP/s", "ms", "cpu GF/s");
    // `CXR_GEMM_SHAPE=m,n,k[,AB]` (AB two of N/T) measures that one shape instead.
    let custom = std::env::var("CXR_GEMM_SHAPE").ok().and_then(|v| parse_shape(&v));
    let shapes: Vec<&Shape> = match &custom {
        Some(s) => vec![s],
        None => SHAPES.iter().filter(|s| keep(s.name)).collect(),
    };
    for level in levels {
        for &s in &shapes {
            let (secs, cpu_secs) = median_seconds(level, s);
            let gflops = |t: f64| 2.0 * (s.m * s.n * s.k) as f64 / t / 1e9;
            let cpu = cpu_secs.map_or("-".to_string(), |t| format!("{:.1}", gflops(t)));
            println!("{:<10} {:<28} {:>10.1} {:>10.3} {:>10}", level.name(), s.name, gflops(secs), secs * 1e3, cpu);
        }
    }
}

/// Median wall time of one call, over at least 7 timed calls and about half a second, and the
/// median process CPU time per thread when it is available.
fn median_seconds(level: SimdLevel, s: &Shape) -> (f64, Option<f64>) {
    let stored = |rows: usize, cols: usize, layout: Layout| {
        let (outer, inner) = if layout == Layout::Normal { (rows, cols) } else { (cols, rows) };
        let data: Vec<f32> = (0..outer * inner).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        (data, inner)
    };
    let (a, lda) = stored(s.m, s.k, s.a);
    let (b, ldb) = stored(s.k, s.n, s.b);
    let mut c = vec![0.0f32; s.m * s.n];
    let a = MatRef { data: &a, ld: lda, layout: s.a };
    let b = MatRef { data: &b, ld: ldb, layout: s.b };
    let mut call = || sgemm(level, s.m, s.n, s.k, a, b, 0.0, &mut c, s.n);
    // Warm-up: grows the packing buffers, wakes the pool, settles the clock.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(100) {
        call();
    }
    let (mut times, mut cpu_times) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while times.len() < 7 || start.elapsed() < Duration::from_millis(500) {
        let (t, cpu) = (Instant::now(), process_cpu_seconds());
        call();
        times.push(t.elapsed().as_secs_f64());
        if let (Some(before), Some(after)) = (cpu, process_cpu_seconds()) {
            cpu_times.push((after - before) / rayon::current_num_threads() as f64);
        }
    }
    let cpu = (!cpu_times.is_empty()).then(|| median(&mut cpu_times));
    (median(&mut times), cpu)
}

/// Parses `m,n,k[,AB]`, e.g. `512,49,4608,NT`.
fn parse_shape(v: &str) -> Option<Shape> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    let dim = |i: usize| parts.get(i)?.parse::<usize>().ok();
    let layout = |c: Option<char>| if c == Some('T') { T } else { N };
    let ab = parts.get(3).copied().unwrap_or("NN");
    let (a, b) = (layout(ab.chars().next()), layout(ab.chars().nth(1)));
    Some(shape("custom", dim(0)?, dim(1)?, dim(2)?, a, b))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time consumed by all threads of the process, in seconds.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn process_cpu_seconds() -> Option<f64> {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime (from the C library std already links) writes one timespec, whose
    // layout on 64-bit Linux is two 64-bit integers, into the valid, exclusive `ts`.
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.sec as f64 + ts.nsec as f64 * 1e-9)
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn process_cpu_seconds() -> Option<f64> {
    None
}
