//! Golden tests of whole models against PyTorch / torchvision: the ChestMNIST MLP, ResNet18,
//! ResNet18 with the small-image stem, ResNet50 and DenseNet121, each forward and backward in
//! training mode and forward in eval mode, compared with `tests/fixtures/models/<model>.json`,
//! which `scripts/model_fixtures.py` wrote from PyTorch float32 (checked there against float64).
//!
//! For each model:
//!
//! 1. Every parameter and buffer (state_dict entry k in torchvision's order, which
//!    `Module::named_tensors()` follows; PyTorch's `num_batches_tracked` is not counted) is filled
//!    from a pseudo-random function of (k, flat index i), the input x likewise (see [`uniform`]
//!    and [`fill_values`]). Values are computed in f64 and rounded to f32 on both sides, so both
//!    start bit-identical; the fixture's checksums prove it.
//! 2. Training mode (batch statistics, momentum 0.1, eps 1e-5; for the MLP an `MlpConfig` with the
//!    lab's units and dropout 0, as PyTorch runs it with `Dropout(p=0)`): logits, then
//!    BCEWithLogits (mean, with a pos_weight vector) against 0/1 targets, then backward. Compared:
//!    logits, loss, the gradients of the first layer's weight (for the MLP rows 0..7 of
//!    `fc1.weight` only, to keep the fixture small), of a mid-network batch norm's weight and bias
//!    and of the head's weight and bias, and that batch norm's running statistics after the
//!    training forward.
//! 3. Eval mode with the running statistics the training forward updated (no optimizer step):
//!    eval logits. For the MLP the eval model is `MlpConfig::chestmnist()` (dropout 0.2/0.1,
//!    inactive in eval mode) filled from the same formula, with the trained model's running
//!    statistics copied in.
//!
//! Tolerance: every tensor must satisfy
//!     relative error = max_i |cxr_i - torch_i| / max(max_i |torch_i|, 1e-30)  <=  1e-4.
//! Status (cxr with the naive placeholder conv kernel): MLP, ResNet18 and the small-stem ResNet18
//! pass. ResNet50 and DenseNet121 are ignored: their training-mode backbone gradients are
//! ill-conditioned with these weights (PyTorch's own float32 result is 1.5e-2 and 7.4e-3 from its
//! float64 result), and cxr's distance from PyTorch is of the same order; every other tensor of
//! theirs passes. A well-conditioned check of deep backbone gradients (eval-mode batch norm, or a
//! float64 reference with a conditioning-aware tolerance) is still to be written.
//!
//! The table each test prints also shows how far PyTorch's own float32 result is from its float64
//! result (`torch_f32_vs_f64` in the fixture). To see how far cxr is from float64, run the tests
//! with CXR_GOLDEN_DUMP=<dir> (writes `<dir>/<model>.cxr.json`), then
//! `python scripts/model_fixtures.py --compare <dir> <model>`. CXR_GOLDEN_DUMP_ALL=<dir> writes
//! the gradients of every parameter (`<dir>/<model>.all.json`), to find where an error starts.

use cxr::models::mlp::HiddenSpec;
use cxr::models::{DenseNet, DenseNetConfig, Mlp, MlpConfig, Model, ResNet, ResNetConfig};
use cxr::nn::{Module, TensorRole};
use cxr::{ops, Device, Tensor};
use serde_json::Value;

mod formula;
use formula::{fill_values, uniform};

/// Relative tolerance, with relative error defined as in the module documentation.
const TOLERANCE: f64 = 1e-4;
const CLASSES: usize = 14;

/// What one model's test compares. Must match MODELS in scripts/model_fixtures.py.
struct Case {
    /// Fixture name.
    key: &'static str,
    input_shape: &'static [usize],
    /// Seed of the input's stream (see MODELS in the script for how it was chosen).
    input_seed: u64,
    /// The first layer (whose weight gradient is compared) and how many of its gradient's rows.
    first: &'static str,
    first_rows: Option<usize>,
    /// The mid-network batch norm.
    mid: &'static str,
    /// The classification head.
    head: &'static str,
}

// ---- the formulas: weights in tests/formula (keep in sync with scripts/model_fixtures.py) ----

/// The input x: uniform(seed * 2^32, i).
fn input_values(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64).map(|i| uniform(seed << 32, i) as f32).collect()
}

fn targets(n: usize) -> Vec<f32> {
    (0..n).map(|i| if (7 * i + 3) % 5 < 2 { 1.0 } else { 0.0 }).collect()
}

fn pos_weight() -> Vec<f32> {
    (0..CLASSES).map(|i| (1.5 + 1.0 * (0.37 * i as f64 + 2.1).sin()) as f32).collect()
}

/// Left-to-right f64 sum of the values (the script's order).
fn sum(values: &[f32]) -> f64 {
    let mut acc = 0.0f64;
    for &v in values {
        acc += v as f64;
    }
    acc
}

fn hex(x: f64) -> String {
    format!("{:016x}", x.to_bits())
}

/// Fills every parameter and buffer from the formula. Returns the number of entries and the
/// checksum sum_k (k + 1) * sum(entry k), as the script computes it.
fn fill(model: &dyn Module) -> (usize, String) {
    let tensors = model.named_tensors();
    let mut acc = 0.0f64;
    for (k, t) in tensors.iter().enumerate() {
        let values = fill_values(&t.name, t.tensor.dims(), k);
        acc += (k + 1) as f64 * sum(&values);
        *t.tensor.storage_mut() = cxr::Storage::Cpu(values);
    }
    (tensors.len(), hex(acc))
}

// ---- fixture ----------------------------------------------------------------------------------

fn load_fixture(key: &str) -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(format!("{key}.json"));
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

/// max|a - b| / max(max|b|, 1e-30).
fn relative_error(actual: &[f32], expected: &[f64]) -> f64 {
    let diff = actual.iter().zip(expected).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
    let scale = expected.iter().map(|b| b.abs()).fold(0.0, f64::max);
    diff / scale.max(1e-30)
}

fn named(model: &dyn Module, name: &str) -> Tensor {
    model
        .named_tensors()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("model has no tensor {name}"))
        .tensor
}

/// Writes cxr's tensors as {"name": [values]} for `scripts/model_fixtures.py --compare`, which
/// measures them against PyTorch's float64 run (set CXR_GOLDEN_DUMP to a directory).
fn dump(path: &std::path::Path, tensors: &[(String, Tensor)]) {
    let map: serde_json::Map<String, Value> = tensors
        .iter()
        .map(|(name, t)| {
            let values = t.to_vec().unwrap().iter().map(|&v| Value::from(v as f64)).collect();
            (name.clone(), Value::Array(values))
        })
        .collect();
    std::fs::write(path, Value::Object(map).to_string()).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

// ---- the test ---------------------------------------------------------------------------------

/// Runs `case` on `model` (training forward + backward, then eval forward on `eval_model`, which
/// is `model` itself or a model that receives `model`'s buffers) and compares with the fixture.
fn check(case: &Case, model: &dyn Model, eval_model: Option<&dyn Model>) {
    let fixture = load_fixture(case.key);
    let (entries, params_checksum) = fill(model);
    assert_eq!(fixture["state_dict_entries"].as_u64(), Some(entries as u64), "state_dict size");
    let sums = &fixture["input_checksums"];
    assert_eq!(
        sums["params"].as_str(),
        Some(params_checksum.as_str()),
        "parameters differ from the ones PyTorch used (formula or order out of sync)"
    );

    let n = case.input_shape[0];
    let x_values = input_values(case.input_shape.iter().product(), case.input_seed);
    let t_values = targets(n * CLASSES);
    let pw_values = pos_weight();
    for (name, v) in [("x", &x_values), ("targets", &t_values), ("pos_weight", &pw_values)] {
        assert_eq!(sums[name].as_str(), Some(hex(sum(v)).as_str()), "input {name} differs from the one PyTorch used");
    }
    let x = Tensor::from_vec(x_values, case.input_shape.to_vec()).unwrap();
    let y = Tensor::from_vec(t_values, vec![n, CLASSES]).unwrap();
    let pw = Tensor::from_vec(pw_values, vec![CLASSES]).unwrap();

    model.set_training(true);
    let logits = model.forward(&x).unwrap();
    let loss = ops::bce_with_logits(&logits, &y, Some(&pw)).unwrap();
    loss.backward().unwrap();

    let eval_model: &dyn Model = match eval_model {
        Some(m) => {
            fill(m);
            for t in model.named_tensors() {
                if t.role == TensorRole::Buffer {
                    let values = t.tensor.to_vec().unwrap();
                    *named(m, &t.name).storage_mut() = cxr::Storage::Cpu(values);
                }
            }
            m
        }
        None => model,
    };
    eval_model.set_training(false);
    let eval_logits = {
        let _guard = cxr::no_grad();
        eval_model.forward(&x).unwrap()
    };

    let grad =
        |name: &str| named(model, name).grad().unwrap_or_else(|| panic!("{name} has no gradient after backward"));
    let mut first_grad = grad(&format!("{}.weight", case.first));
    if let Some(rows) = case.first_rows {
        let dims = first_grad.dims().to_vec();
        let cols: usize = dims[1..].iter().product();
        let mut shape = dims.clone();
        shape[0] = rows;
        first_grad = Tensor::from_vec(first_grad.to_vec().unwrap()[..rows * cols].to_vec(), shape).unwrap();
    }
    let (first, mid, head) = (case.first, case.mid, case.head);
    let actual: Vec<(String, Tensor)> = vec![
        ("logits".into(), logits),
        ("loss".into(), loss),
        (format!("grad.{first}.weight"), first_grad),
        (format!("grad.{mid}.weight"), grad(&format!("{mid}.weight"))),
        (format!("grad.{mid}.bias"), grad(&format!("{mid}.bias"))),
        (format!("grad.{head}.weight"), grad(&format!("{head}.weight"))),
        (format!("grad.{head}.bias"), grad(&format!("{head}.bias"))),
        (format!("{mid}.running_mean"), named(model, &format!("{mid}.running_mean"))),
        (format!("{mid}.running_var"), named(model, &format!("{mid}.running_var"))),
        ("eval_logits".into(), eval_logits),
    ];
    assert_eq!(
        actual.len(),
        fixture["tensors"].as_object().unwrap().len(),
        "the fixture holds tensors this test does not check"
    );

    if let Some(dir) = std::env::var_os("CXR_GOLDEN_DUMP_ALL") {
        let all: Vec<(String, Tensor)> =
            model.parameters().into_iter().map(|p| (format!("grad.{}", p.name), p.tensor.grad().unwrap())).collect();
        dump(&std::path::Path::new(&dir).join(format!("{}.all.json", case.key)), &all);
    }
    if let Some(dir) = std::env::var_os("CXR_GOLDEN_DUMP") {
        dump(&std::path::Path::new(&dir).join(format!("{}.cxr.json", case.key)), &actual);
    }

    let mut failures = Vec::new();
    println!(
        "{}: {:<52} {:>11} {:>11}  (relative error, tolerance {TOLERANCE:e})",
        case.key, "tensor", "cxr-torch", "torch f32-f64"
    );
    for (name, tensor) in &actual {
        let (shape, want) = expected(&fixture, name);
        assert_eq!(tensor.dims(), shape.as_slice(), "{name}: shape");
        let got = tensor.to_vec().unwrap();
        let err = relative_error(&got, &want);
        let torch_err = fixture["torch_f32_vs_f64"][name.as_str()].as_f64().unwrap_or(f64::NAN);
        let verdict = if err <= TOLERANCE { "ok" } else { "FAIL" };
        println!("{}: {name:<52} {err:>11.3e} {torch_err:>11.3e}  {verdict}", case.key);
        if err > TOLERANCE {
            failures.push(format!("{name}: relative error {err:.3e} > {TOLERANCE:e}"));
        }
    }
    assert!(failures.is_empty(), "{}: cxr differs from PyTorch:\n{}", case.key, failures.join("\n"));
}

#[test]
fn mlp_matches_pytorch() {
    let lab = MlpConfig::chestmnist();
    let no_dropout =
        MlpConfig { hidden: lab.hidden.iter().map(|h| HiddenSpec { dropout: 0.0, ..*h }).collect(), ..lab.clone() };
    let train = Mlp::new(no_dropout, 0, Device::Cpu).unwrap();
    let eval = Mlp::new(lab, 0, Device::Cpu).unwrap();
    let case = Case {
        key: "mlp",
        input_shape: &[4, 784],
        input_seed: 0,
        first: "fc1",
        first_rows: Some(8),
        mid: "bn2",
        head: "classifier",
    };
    check(&case, &train, Some(&eval));
}

#[test]
fn resnet18_matches_pytorch() {
    let m = ResNet::new(ResNetConfig::resnet18(3, CLASSES), 0, Device::Cpu).unwrap();
    let case = Case {
        key: "resnet18",
        input_shape: &[2, 3, 64, 64],
        input_seed: 0,
        first: "conv1",
        first_rows: None,
        mid: "layer2.0.bn1",
        head: "fc",
    };
    check(&case, &m, None);
}

#[test]
fn resnet18_small_stem_matches_pytorch() {
    let m = ResNet::new(ResNetConfig::resnet18(1, CLASSES).small_stem(), 0, Device::Cpu).unwrap();
    let case = Case {
        key: "resnet18_small",
        input_shape: &[2, 1, 28, 28],
        input_seed: 4,
        first: "conv1",
        first_rows: None,
        mid: "layer2.0.bn1",
        head: "fc",
    };
    check(&case, &m, None);
}

#[test]
#[ignore = "float32 noise, not a cxr error: at 64x64 batch 2 the last stage's batch norms see 8 values per channel and \
            amplify rounding; PyTorch's own float32 run is 1.4e-2 (grad.conv1.weight), 1.6e-2 / 1.5e-2 (grad.layer2.0.bn1 \
            weight / bias), 1.1e-4 (grad.fc.weight) from its float64 run; cxr is 2.1e-2, 1.8e-2 / 2.0e-2, 2.1e-4 from float64 \
            (scripts/model_fixtures.py --compare); every other tensor passes"]
fn resnet50_matches_pytorch() {
    let m = ResNet::new(ResNetConfig::resnet50(3, CLASSES), 0, Device::Cpu).unwrap();
    let case = Case {
        key: "resnet50",
        input_shape: &[2, 3, 64, 64],
        input_seed: 0,
        first: "conv1",
        first_rows: None,
        mid: "layer2.0.bn1",
        head: "fc",
    };
    check(&case, &m, None);
}

#[test]
#[ignore = "float32 noise, not a cxr error: with these formula weights DenseNet121's training-mode backbone gradients \
            are ill-conditioned; at [4, 3, 96, 96] PyTorch's own float32 run is 7.4e-3 (grad.features.conv0.weight), \
            5.9e-3 / 6.7e-3 (denselayer5.norm2 weight / bias) from its float64 run, and cxr is 7.1e-3, 6.1e-3 / 7.2e-3 \
            from PyTorch float32; logits, loss, head gradients, running stats and eval logits all pass at 1e-4"]
fn densenet121_matches_pytorch() {
    let m = DenseNet::new(DenseNetConfig::densenet121(3, CLASSES), 0, Device::Cpu).unwrap();
    let case = Case {
        key: "densenet121",
        input_shape: &[4, 3, 96, 96],
        input_seed: 0,
        first: "features.conv0",
        first_rows: None,
        mid: "features.denseblock2.denselayer5.norm2",
        head: "classifier",
    };
    check(&case, &m, None);
}
