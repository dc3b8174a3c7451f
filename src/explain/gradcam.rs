//! Class activation maps from gradients: Grad-CAM, Grad-CAM++ and HiResCAM.
//!
//! The target activation `A` (one image: `[K, h, w]`) is read at a named tap point of the model's
//! forward pass ([`Model::forward_tapped`]), i.e. from the layer's *output tensor*, not from a
//! module hook. The backbone below the tap runs under [`no_grad`](crate::no_grad); at the tap the
//! activation is detached and made a fresh leaf that requires grad, so backward only walks the
//! head (for ResNet and DenseNet: global average pool and the linear classifier). With
//! `G = d logit[i, c_i] / dA` for image `i` and its target class `c_i`:
//!
//! - **Grad-CAM** (Selvaraju et al. 2017): `w_k = mean_hw G[k]`, `cam = sum_k w_k A[k]`.
//! - **Grad-CAM++** (Chattopadhyay et al. 2018), the closed form for an exponential score that
//!   pytorch-grad-cam uses: `alpha[k,h,w] = G² / (2 G² + (sum_hw A[k]) G³ + 1e-6)` where `G != 0`
//!   (else 0), `w_k = sum_hw alpha[k] relu(G[k])`, `cam = sum_k w_k A[k]`.
//! - **HiResCAM** (Draelos & Carin 2020): `cam = sum_k G[k] ⊙ A[k]`, no spatial pooling.
//!
//! Then `relu(cam)` unless negative evidence is asked for. One backward pass serves a whole
//! batch with a different class per image: the seed gradient is one at `(i, c_i)`, so the pass
//! computes `d (sum_i logit[i, c_i]) / dA`, whose slice `i` is image `i`'s own gradient because
//! images do not interact in eval mode (batch norm uses running statistics).
//!
//! Gradients land in parameters that require grad, as in PyTorch; freeze the model
//! ([`Module::set_trainable`](crate::nn::Module::set_trainable)) for inference, as
//! [`Classifier`](crate::Classifier) does, so concurrent callers never write into shared tensors.

use crate::autograd::{no_grad, set_grad_enabled};
use crate::error::{Error, Result};
use crate::models::Model;
use crate::tensor::Tensor;
use serde::Serialize;

/// The gradient-weighting rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum CamMethod {
    #[default]
    GradCam,
    GradCamPlusPlus,
    HiResCam,
}

impl CamMethod {
    /// The name used on the command line (`gradcam`, `gradcam++`, `hirescam`).
    pub fn name(self) -> &'static str {
        match self {
            CamMethod::GradCam => "gradcam",
            CamMethod::GradCamPlusPlus => "gradcam++",
            CamMethod::HiResCam => "hirescam",
        }
    }

    /// Parses a name as [`name`](Self::name) spells it.
    pub fn parse(name: &str) -> Result<CamMethod> {
        [CamMethod::GradCam, CamMethod::GradCamPlusPlus, CamMethod::HiResCam]
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| Error::InvalidArgument {
                op: "grad_cam",
                detail: format!("unknown method '{name}' (known: gradcam, gradcam++, hirescam)"),
            })
    }
}

/// How to compute the maps.
#[derive(Debug, Clone, PartialEq)]
pub struct CamOptions {
    pub method: CamMethod,
    /// Tap point to explain; None takes [`default_layer`].
    pub layer: Option<String>,
    /// Keep only positive evidence (the usual Grad-CAM). Off shows where evidence is negative.
    pub relu: bool,
}

impl Default for CamOptions {
    fn default() -> Self {
        CamOptions { method: CamMethod::GradCam, layer: None, relu: true }
    }
}

/// Whether a map carries information. A map that is all zero (no positive evidence at all, or
/// a dead layer) or has NaN/infinity must be reported, never drawn as if it meant something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MapValidity {
    Valid,
    AllZero,
    NonFinite,
}

impl MapValidity {
    /// Judges `values`.
    pub fn of(values: &[f32]) -> MapValidity {
        if values.iter().any(|v| !v.is_finite()) {
            MapValidity::NonFinite
        } else if values.iter().all(|&v| v == 0.0) {
            MapValidity::AllZero
        } else {
            MapValidity::Valid
        }
    }

    /// A sentence for the user when the map is not valid.
    pub fn problem(self) -> Option<&'static str> {
        match self {
            MapValidity::Valid => None,
            MapValidity::AllZero => Some("the map is all zero (no positive evidence at this layer); nothing to show"),
            MapValidity::NonFinite => Some("the map has NaN or infinite values; nothing to show"),
        }
    }
}

/// One map at the target layer's resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct CamMap {
    /// Index of the image in the batch.
    pub image: usize,
    /// Target class.
    pub class: usize,
    /// The model's logit for (image, class).
    pub logit: f32,
    pub width: usize,
    pub height: usize,
    /// Row-major `height x width` values (after ReLU when asked).
    pub values: Vec<f32>,
    pub validity: MapValidity,
}

/// The maps of one call and the logits of the batch.
#[derive(Debug, Clone)]
pub struct CamOutput {
    /// The tap point the maps come from.
    pub layer: String,
    /// One map per requested (image, class), in request order.
    pub maps: Vec<CamMap>,
    /// Logits `[N, classes]`, row-major.
    pub logits: Vec<f32>,
    pub classes: usize,
}

/// The tap point Grad-CAM uses when none is named: the last convolutional feature map
/// (`layer4` for ResNets, `features.norm5` after its ReLU for DenseNet). Models without a spatial
/// tap (the MLPs) are an error.
pub fn default_layer(model: &dyn Model) -> Result<String> {
    let taps = model.tap_points();
    ["layer4", "features.norm5"].into_iter().find(|d| taps.iter().any(|t| t == d)).map(str::to_string).ok_or_else(
        || Error::InvalidArgument {
            op: "grad_cam",
            detail: format!(
                "this model has no convolutional feature map to explain (tap points: {})",
                list_or_none(&taps)
            ),
        },
    )
}

fn list_or_none(taps: &[String]) -> String {
    if taps.is_empty() {
        "none".into()
    } else {
        taps.join(", ")
    }
}

/// Checks that `layer` is a tap point of `model`, listing the valid ones otherwise.
pub fn check_layer(model: &dyn Model, layer: &str) -> Result<()> {
    let taps = model.tap_points();
    if taps.iter().any(|t| t == layer) {
        return Ok(());
    }
    Err(Error::InvalidArgument {
        op: "grad_cam",
        detail: format!("no layer named '{layer}' (valid layers: {})", list_or_none(&taps)),
    })
}

/// Computes a map for each `(image, class)` in `targets` over the batch `input` `[N, C, H, W]`.
/// An image may appear several times (several classes); each round of distinct images shares one
/// forward and one backward pass.
pub fn grad_cam(
    model: &dyn Model,
    input: &Tensor,
    targets: &[(usize, usize)],
    options: &CamOptions,
) -> Result<CamOutput> {
    // A batch-1 map is a few dozen short kernels: run them all on the pool (see `run_on_pool`).
    crate::run_on_pool(|| grad_cam_here(model, input, targets, options))
}

/// [`grad_cam`] on the calling thread.
fn grad_cam_here(
    model: &dyn Model,
    input: &Tensor,
    targets: &[(usize, usize)],
    options: &CamOptions,
) -> Result<CamOutput> {
    let layer = match &options.layer {
        Some(l) => {
            check_layer(model, l)?;
            l.clone()
        }
        None => default_layer(model)?,
    };
    let n = input.dims().first().copied().unwrap_or(0);
    let classes = model.num_classes();
    for &(i, c) in targets {
        if i >= n || c >= classes {
            return Err(Error::InvalidArgument {
                op: "grad_cam",
                detail: format!("target (image {i}, class {c}) outside a batch of {n} images and {classes} classes"),
            });
        }
    }
    let (activation, logits) = forward_to_tap(model, input, &layer)?;
    let acts = activation.to_vec()?;
    let dims = activation.dims().to_vec();
    if dims.len() != 4 {
        return Err(Error::InvalidArgument {
            op: "grad_cam",
            detail: format!("layer '{layer}' is not a spatial feature map (shape {dims:?})"),
        });
    }
    let logit_values = logits.to_vec()?;
    let mut maps: Vec<Option<CamMap>> = vec![None; targets.len()];
    for round in rounds(targets, n) {
        let grads = backward_round(&activation, &logits, targets, &round, classes)?;
        for &t in &round {
            let (i, c) = targets[t];
            maps[t] = Some(compute_map(&acts, &grads, &dims, i, c, logit_values[i * classes + c], options));
        }
    }
    Ok(CamOutput { layer, maps: maps.into_iter().flatten().collect(), logits: logit_values, classes })
}

/// Runs the forward pass without recording below `layer`; returns the tap activation (a leaf
/// requiring grad) and the logits recorded from it.
fn forward_to_tap(model: &dyn Model, input: &Tensor, layer: &str) -> Result<(Tensor, Tensor)> {
    let backbone = no_grad();
    let mut head_mode = None;
    let mut tapped = None;
    let logits = model.forward_tapped(input, &mut |name, t| {
        if name != layer {
            return Ok(t);
        }
        let leaf = t.detach().with_grad()?;
        tapped = Some(leaf.clone());
        // From here to the logits, record ops so backward can reach the leaf.
        head_mode = Some(set_grad_enabled(true));
        Ok(leaf)
    })?;
    drop(head_mode);
    drop(backbone);
    let activation =
        tapped.ok_or_else(|| Error::Autograd(format!("the forward pass never reached layer '{layer}'")))?;
    Ok((activation, logits))
}

/// Splits target indices into rounds in which each image appears at most once.
fn rounds(targets: &[(usize, usize)], n: usize) -> Vec<Vec<usize>> {
    let mut seen = vec![0usize; n];
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (t, &(i, _)) in targets.iter().enumerate() {
        let r = seen[i];
        seen[i] += 1;
        if rounds.len() <= r {
            rounds.push(Vec::new());
        }
        rounds[r].push(t);
    }
    rounds
}

/// One backward pass with seed 1 at each (image, class) of the round; the gradient at the tap.
fn backward_round(
    activation: &Tensor,
    logits: &Tensor,
    targets: &[(usize, usize)],
    round: &[usize],
    classes: usize,
) -> Result<Vec<f32>> {
    let mut seed = vec![0f32; logits.numel()];
    for &t in round {
        let (i, c) = targets[t];
        seed[i * classes + c] = 1.0;
    }
    let seed = Tensor::from_vec_on(seed, logits.shape().clone(), logits.device())?;
    let gradients = logits.backward_with(&seed)?;
    gradients.get(activation).ok_or_else(|| Error::Autograd("no gradient reached the target layer".into()))?.to_vec()
}

/// The map of image `i`, class `c` from activations and gradients `[N, K, h, w]`.
fn compute_map(
    acts: &[f32],
    grads: &[f32],
    dims: &[usize],
    i: usize,
    c: usize,
    logit: f32,
    options: &CamOptions,
) -> CamMap {
    let (k, h, w) = (dims[1], dims[2], dims[3]);
    let hw = h * w;
    let a = &acts[i * k * hw..(i + 1) * k * hw];
    let g = &grads[i * k * hw..(i + 1) * k * hw];
    let mut values = match options.method {
        CamMethod::GradCam => weighted_sum(a, &channel_weights_mean(g, k, hw), hw),
        CamMethod::GradCamPlusPlus => weighted_sum(a, &channel_weights_plus_plus(a, g, k, hw), hw),
        CamMethod::HiResCam => elementwise_sum(a, g, k, hw),
    };
    if options.relu {
        values.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    let validity = MapValidity::of(&values);
    CamMap { image: i, class: c, logit, width: w, height: h, values, validity }
}

fn channel_weights_mean(g: &[f32], k: usize, hw: usize) -> Vec<f32> {
    (0..k).map(|ch| (g[ch * hw..(ch + 1) * hw].iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32).collect()
}

fn channel_weights_plus_plus(a: &[f32], g: &[f32], k: usize, hw: usize) -> Vec<f32> {
    const EPS: f64 = 1e-6;
    (0..k)
        .map(|ch| {
            let (ac, gc) = (&a[ch * hw..(ch + 1) * hw], &g[ch * hw..(ch + 1) * hw]);
            let sum_a: f64 = ac.iter().map(|&v| v as f64).sum();
            let w: f64 = gc
                .iter()
                .filter(|&&gv| gv != 0.0)
                .map(|&gv| {
                    let g = gv as f64;
                    let alpha = g * g / (2.0 * g * g + sum_a * g * g * g + EPS);
                    alpha * g.max(0.0)
                })
                .sum();
            w as f32
        })
        .collect()
}

fn weighted_sum(a: &[f32], weights: &[f32], hw: usize) -> Vec<f32> {
    let mut out = vec![0f64; hw];
    for (ch, &wk) in weights.iter().enumerate() {
        for (o, &v) in out.iter_mut().zip(&a[ch * hw..(ch + 1) * hw]) {
            *o += wk as f64 * v as f64;
        }
    }
    out.into_iter().map(|v| v as f32).collect()
}

fn elementwise_sum(a: &[f32], g: &[f32], k: usize, hw: usize) -> Vec<f32> {
    let mut out = vec![0f64; hw];
    for ch in 0..k {
        let range = ch * hw..(ch + 1) * hw;
        for ((o, &av), &gv) in out.iter_mut().zip(&a[range.clone()]).zip(&g[range]) {
            *o += av as f64 * gv as f64;
        }
    }
    out.into_iter().map(|v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_put_each_image_once_per_round() {
        let r = rounds(&[(0, 1), (1, 2), (0, 3), (0, 4), (1, 5)], 2);
        assert_eq!(r, vec![vec![0, 1], vec![2, 4], vec![3]]);
    }

    #[test]
    fn validity_flags_zero_and_non_finite_maps() {
        assert_eq!(MapValidity::of(&[0.0, 0.0]), MapValidity::AllZero);
        assert_eq!(MapValidity::of(&[0.0, f32::NAN]), MapValidity::NonFinite);
        assert_eq!(MapValidity::of(&[0.0, 0.1]), MapValidity::Valid);
    }

    #[test]
    fn grad_cam_plus_plus_weight_matches_the_closed_form() {
        // One channel, two positions: A = [1, 3], G = [0.5, -0.25].
        let w = channel_weights_plus_plus(&[1.0, 3.0], &[0.5, -0.25], 1, 2);
        let alpha0 = 0.25 / (2.0 * 0.25 + 4.0 * 0.125 + 1e-6);
        assert!((w[0] as f64 - alpha0 * 0.5).abs() < 1e-6, "{w:?}");
    }
}
