//! The deterministic weight formulas shared by the PyTorch golden tests (`golden_models.rs`,
//! `gradcam.rs`); keep in sync with `scripts/model_fixtures.py` and `scripts/gradcam_fixtures.py`.

/// A pseudo-random value in [-1, 1) for element i of tensor k: SplitMix64's finaliser of
/// k * 0x9E3779B97F4A7C15 + i * 0xD1B54A32D192ED03 (mod 2^64), top 53 bits as u in [0, 1), then
/// 2u - 1 (exact arithmetic, the same bits on every platform).
pub fn uniform(k: u64, i: u64) -> f64 {
    let mut z = k.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    2.0 * ((z >> 11) as f64 * 2f64.powi(-53)) - 1.0
}

/// Values of state_dict entry k (`name`, `shape`): from uniform(k + 1, i).
pub fn fill_values(name: &str, shape: &[usize], k: usize) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let s = (0..n as u64).map(|i| uniform(k as u64 + 1, i));
    let v: Vec<f64> = if name.ends_with("running_mean") {
        s.map(|v| 0.1 * v).collect()
    } else if name.ends_with("running_var") {
        s.map(|v| 1.0 + 0.5 * (v * v)).collect()
    } else if name.ends_with("bias") {
        s.map(|v| 0.1 * v).collect()
    } else if name.ends_with("weight") {
        if shape.len() == 1 {
            s.map(|v| 1.0 + 0.1 * v).collect()
        } else {
            // conv [out, in, kh, kw] or linear [out, in]: variance 2 / fan_in
            let fan_in: usize = shape[1..].iter().product();
            let scale = (6.0 / fan_in as f64).sqrt();
            s.map(|v| scale * v).collect()
        }
    } else {
        panic!("no formula for {name}")
    };
    v.into_iter().map(|v| v as f32).collect()
}
