//! Golden test against PyTorch: a small conv / batch-norm / residual / pool / linear / BCE chain,
//! forward and backward, compared with `tests/fixtures/golden_chain.json`, which
//! `scripts/golden_fixtures.py` wrote from PyTorch float32 (checked there against float64).
//!
//! The chain (batch norm in training mode, momentum 0.1, eps 1e-5):
//!
//! ```text
//! x [2,3,17,17] -> conv1 (3->8, 3x3, pad 1, no bias) -> bn1 -> relu -> maxpool 3x3/2 pad 1 = p
//!   -> conv2 (8->8, 3x3, pad 1, bias) -> bn2 -> + p -> relu -> avgpool 2x2/2 -> flatten
//!   -> fc (128 -> 14) = logits -> BCEWithLogits(mean, pos_weight) = loss
//! ```
//!
//! then a second forward with batch norm in eval mode on the updated running statistics.
//!
//! Inputs are not in the fixture: both sides compute them from the same formula of the flat index
//! (f64 `sin`, then rounded to f32), so they are bit-identical; the fixture's input checksums
//! prove it.
//!
//! Tolerance: every tensor must satisfy
//!     relative error = max_i |cxr_i - torch_i| / max(max_i |torch_i|, 1e-30)  <=  1e-4.
//! One tensor has another denominator: grad.conv2.bias is zero in exact arithmetic (a bias before
//! training-mode batch norm is cancelled by the mean subtraction), so both sides hold float32
//! rounding noise (~1e-9) and its error is divided by max|torch grad.bn2.bias| instead, the size
//! of the same upstream gradient before batch norm cancels it. The tolerance is the same.

use cxr::ops::{self, BatchNormState};
use cxr::Tensor;
use serde_json::Value;

/// Relative tolerance, with relative error defined as in the module documentation.
const TOLERANCE: f64 = 1e-4;
const MOMENTUM: f32 = 0.1;
const EPS: f32 = 1e-5;

/// name, shape, offset, scale, phase: value[i] = offset + scale * sin(0.37 i + phase).
/// Must match INPUTS in scripts/golden_fixtures.py.
const INPUTS: [(&str, &[usize], f64, f64, f64); 15] = [
    ("x", &[2, 3, 17, 17], 0.0, 1.0, 0.1),
    ("conv1.weight", &[8, 3, 3, 3], 0.0, 0.2, 0.7),
    ("bn1.weight", &[8], 1.0, 0.2, 1.3),
    ("bn1.bias", &[8], 0.0, 0.1, 1.9),
    ("bn1.running_mean", &[8], 0.0, 0.1, 2.3),
    ("bn1.running_var", &[8], 1.0, 0.25, 2.9),
    ("conv2.weight", &[8, 8, 3, 3], 0.0, 0.1, 3.1),
    ("conv2.bias", &[8], 0.0, 0.1, 3.7),
    ("bn2.weight", &[8], 1.0, 0.2, 4.3),
    ("bn2.bias", &[8], 0.0, 0.1, 4.9),
    ("bn2.running_mean", &[8], 0.0, 0.1, 5.3),
    ("bn2.running_var", &[8], 1.0, 0.25, 5.9),
    ("fc.weight", &[14, 128], 0.0, 0.1, 0.5),
    ("fc.bias", &[14], 0.0, 0.05, 1.1),
    ("pos_weight", &[14], 1.5, 1.0, 2.1),
];
const TARGETS_SHAPE: [usize; 2] = [2, 14];

fn formula(n: usize, offset: f64, scale: f64, phase: f64) -> Vec<f32> {
    (0..n).map(|i| (offset + scale * (0.37 * i as f64 + phase).sin()) as f32).collect()
}

fn targets() -> Vec<f32> {
    let n: usize = TARGETS_SHAPE.iter().product();
    (0..n).map(|i| if (7 * i + 3) % 5 < 2 { 1.0 } else { 0.0 }).collect()
}

/// Left-to-right f64 sum of the values, as bits in 16 hex digits (the script's checksum).
fn checksum(values: &[f32]) -> String {
    let mut acc = 0.0f64;
    for &v in values {
        acc += v as f64;
    }
    format!("{:016x}", acc.to_bits())
}

fn load_fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden_chain.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The fixture's tensor `name` as (shape, values).
fn expected(fixture: &Value, name: &str) -> (Vec<usize>, Vec<f64>) {
    let t = &fixture["tensors"][name];
    let shape = t["shape"]
        .as_array()
        .unwrap_or_else(|| panic!("fixture has no tensor {name}"))
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let values = t["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    (shape, values)
}

/// max|a - b| / max(max|scale_ref|, 1e-30).
fn relative_error(actual: &[f32], expected: &[f64], scale_ref: &[f64]) -> f64 {
    let diff = actual.iter().zip(expected).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
    let scale = scale_ref.iter().map(|b| b.abs()).fold(0.0, f64::max);
    diff / scale.max(1e-30)
}

struct Params {
    x: Tensor,
    conv1_w: Tensor,
    bn1_w: Tensor,
    bn1_b: Tensor,
    bn1: BatchNormState,
    conv2_w: Tensor,
    conv2_b: Tensor,
    bn2_w: Tensor,
    bn2_b: Tensor,
    bn2: BatchNormState,
    fc_w: Tensor,
    fc_b: Tensor,
    pos_weight: Tensor,
    targets: Tensor,
}

impl Params {
    /// Builds every input from its formula; checks each against the fixture's checksum.
    fn new(fixture: &Value) -> Params {
        let mut made = std::collections::HashMap::new();
        for (name, shape, offset, scale, phase) in INPUTS {
            let values = formula(shape.iter().product(), offset, scale, phase);
            assert_eq!(
                fixture["input_checksums"][name].as_str(),
                Some(checksum(&values).as_str()),
                "input {name} differs from the one PyTorch used (formula out of sync with the script?)"
            );
            made.insert(name, Tensor::from_vec(values, shape.to_vec()).unwrap());
        }
        let t = targets();
        assert_eq!(fixture["input_checksums"]["targets"].as_str(), Some(checksum(&t).as_str()), "targets differ");
        let leaf = |name: &str| made[name].clone().with_grad().unwrap();
        let state = |bn: &str| BatchNormState {
            running_mean: made[format!("{bn}.running_mean").as_str()].clone(),
            running_var: made[format!("{bn}.running_var").as_str()].clone(),
            momentum: MOMENTUM,
            eps: EPS,
        };
        Params {
            x: leaf("x"),
            conv1_w: leaf("conv1.weight"),
            bn1_w: leaf("bn1.weight"),
            bn1_b: leaf("bn1.bias"),
            bn1: state("bn1"),
            conv2_w: leaf("conv2.weight"),
            conv2_b: leaf("conv2.bias"),
            bn2_w: leaf("bn2.weight"),
            bn2_b: leaf("bn2.bias"),
            bn2: state("bn2"),
            fc_w: leaf("fc.weight"),
            fc_b: leaf("fc.bias"),
            pos_weight: made["pos_weight"].clone(),
            targets: Tensor::from_vec(t, TARGETS_SHAPE.to_vec()).unwrap(),
        }
    }

    /// The chain up to the logits; `training` selects batch norm's mode.
    fn forward(&self, training: bool) -> Tensor {
        let h = ops::conv2d(&self.x, &self.conv1_w, None, 1, 1).unwrap();
        let h = ops::batch_norm(&h, &self.bn1_w, &self.bn1_b, &self.bn1, training).unwrap();
        let h = ops::relu(&h).unwrap();
        let p = ops::max_pool2d(&h, 3, 2, 1).unwrap();
        let y = ops::conv2d(&p, &self.conv2_w, Some(&self.conv2_b), 1, 1).unwrap();
        let y = ops::batch_norm(&y, &self.bn2_w, &self.bn2_b, &self.bn2, training).unwrap();
        let y = ops::relu(&ops::add(&y, &p).unwrap()).unwrap();
        let y = ops::avg_pool2d(&y, 2, 2, 0).unwrap();
        ops::linear(&y.flatten().unwrap(), &self.fc_w, Some(&self.fc_b)).unwrap()
    }
}

#[test]
fn chain_matches_pytorch() {
    let fixture = load_fixture();
    let p = Params::new(&fixture);

    let logits = p.forward(true);
    let loss = ops::bce_with_logits(&logits, &p.targets, Some(&p.pos_weight)).unwrap();
    loss.backward().unwrap();
    let eval_logits = {
        let _guard = cxr::no_grad();
        p.forward(false)
    };

    let grad = |t: &Tensor| t.grad().expect("leaf has no gradient after backward");
    let actual: Vec<(&str, Tensor)> = vec![
        ("logits", logits.clone()),
        ("loss", loss.clone()),
        ("bn1.running_mean", p.bn1.running_mean.clone()),
        ("bn1.running_var", p.bn1.running_var.clone()),
        ("bn2.running_mean", p.bn2.running_mean.clone()),
        ("bn2.running_var", p.bn2.running_var.clone()),
        ("grad.x", grad(&p.x)),
        ("grad.conv1.weight", grad(&p.conv1_w)),
        ("grad.conv2.weight", grad(&p.conv2_w)),
        ("grad.conv2.bias", grad(&p.conv2_b)),
        ("grad.bn1.weight", grad(&p.bn1_w)),
        ("grad.bn1.bias", grad(&p.bn1_b)),
        ("grad.bn2.weight", grad(&p.bn2_w)),
        ("grad.bn2.bias", grad(&p.bn2_b)),
        ("grad.fc.weight", grad(&p.fc_w)),
        ("grad.fc.bias", grad(&p.fc_b)),
        ("eval_logits", eval_logits),
    ];
    assert_eq!(
        actual.len(),
        fixture["tensors"].as_object().unwrap().len(),
        "the fixture holds tensors this test does not check"
    );

    let mut failures = Vec::new();
    println!("{:<20} {:>14}  (relative error, tolerance {TOLERANCE:e})", "tensor", "error");
    for (name, tensor) in &actual {
        let (shape, want) = expected(&fixture, name);
        assert_eq!(tensor.dims(), shape.as_slice(), "{name}: shape");
        let got = tensor.to_vec().unwrap();
        // See the module documentation: grad.conv2.bias is zero up to rounding on both sides.
        let scale_ref = if *name == "grad.conv2.bias" { expected(&fixture, "grad.bn2.bias").1 } else { want.clone() };
        let err = relative_error(&got, &want, &scale_ref);
        let verdict = if err <= TOLERANCE { "ok" } else { "FAIL" };
        println!("{name:<20} {err:>14.3e}  {verdict}");
        if err > TOLERANCE {
            failures.push(format!("{name}: relative error {err:.3e} > {TOLERANCE:e}"));
        }
    }
    assert!(failures.is_empty(), "cxr differs from PyTorch:\n{}", failures.join("\n"));
}
