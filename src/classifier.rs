//! The API a device links: load a checkpoint once, then classify and explain X-rays.
//!
//! ```no_run
//! use cxr::{data::transform::load_image, Classifier};
//!
//! let classifier = Classifier::load("runs/run/best.safetensors")?.with_threshold(0.5)?;
//! let xray = load_image("chest.png".as_ref())?;          // PNG/JPEG, 8/16 bit, grey or RGB
//! let prediction = classifier.predict(&xray)?;
//! for f in prediction.sorted() {
//!     println!("{:<20} {:.3}{}", f.finding, f.probability, if f.detected { " *" } else { "" });
//! }
//! let heat = classifier.explain(&xray, "Effusion")?;     // Grad-CAM at the input's resolution
//! let input = classifier.resized(&xray);                  // the X-ray as the model saw it
//! cxr::explain::write_overlay("effusion.png".as_ref(), &input, &heat, cxr::explain::Colormap::Jet, 0.4)?;
//! # Ok::<(), cxr::Error>(())
//! ```
//!
//! `examples/classify.rs` is the runnable version (`cargo run --release --example classify`).
//!
//! **Thresholds.** A decision needs a threshold per finding. They come from the checkpoint
//! (`thresholds` in its metadata, written when a model is calibrated) or from the caller
//! ([`with_threshold`](Classifier::with_threshold)). Without either, [`predict`](Classifier::predict)
//! is an error rather than a silent 0.5: a threshold chosen for nothing in particular would give
//! decisions that look meaningful and are not. [`probabilities`](Classifier::probabilities) needs no
//! threshold.
//!
//! **Threads.** A `Classifier` is `Send + Sync` and holds no global state: the weights are read
//! only (memory-mapped from the checkpoint where aligned, parameters frozen so even Grad-CAM's
//! backward writes nothing shared), and grad mode is per thread. Share one behind an `Arc` and
//! call it from as many threads as you like.

use crate::data::transform::{normalize, resize_crop, Grey};
use crate::data::Preprocess;
use crate::error::{Error, Result};
use crate::explain::{grad_cam, CamOptions, Heatmap};
use crate::io::{load_model, CheckpointMeta};
use crate::models::{Architecture, Model};
use crate::tensor::Tensor;
use crate::Device;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One finding's score on one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingScore {
    pub finding: String,
    /// Index in the model's outputs.
    pub class: usize,
    pub probability: f32,
    pub threshold: f32,
    /// `probability >= threshold`.
    pub detected: bool,
}

/// Every finding's score on one image, in the model's output order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub findings: Vec<FindingScore>,
}

impl Prediction {
    /// Findings by decreasing probability (ties keep output order).
    pub fn sorted(&self) -> Vec<&FindingScore> {
        let mut v: Vec<&FindingScore> = self.findings.iter().collect();
        v.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        v
    }

    /// Names of the detected findings, by decreasing probability.
    pub fn detected(&self) -> Vec<&str> {
        self.sorted().into_iter().filter(|f| f.detected).map(|f| f.finding.as_str()).collect()
    }

    /// The score of a finding by name.
    pub fn get(&self, finding: &str) -> Option<&FindingScore> {
        self.findings.iter().find(|f| f.finding == finding)
    }
}

/// A trained classifier loaded from a checkpoint, with its preprocessing, labels and thresholds.
pub struct Classifier {
    model: Box<dyn Model>,
    architecture: Architecture,
    meta: CheckpointMeta,
    labels: Vec<String>,
    preprocess: Preprocess,
    thresholds: Option<Vec<f32>>,
    path: PathBuf,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("path", &self.path)
            .field("architecture", &self.architecture)
            .field("labels", &self.labels)
            .field("preprocess", &self.preprocess)
            .field("thresholds", &self.thresholds)
            .finish()
    }
}

fn check_thresholds(values: &[f32], classes: usize) -> std::result::Result<(), String> {
    if values.len() != classes {
        return Err(format!("{} thresholds for {classes} findings", values.len()));
    }
    match values.iter().find(|t| !(t.is_finite() && (0.0..=1.0).contains(*t))) {
        Some(t) => Err(format!("threshold {t} is not a probability in [0, 1]")),
        None => Ok(()),
    }
}

impl Classifier {
    /// Opens a checkpoint (memory-mapped; aligned weights are used in place, not copied), checks
    /// its labels, preprocessing and thresholds, and freezes the model for inference.
    pub fn load(path: impl AsRef<Path>) -> Result<Classifier> {
        let path = path.as_ref();
        let loaded = load_model(path, Device::Cpu)?;
        let labels = loaded.meta.label_names(path)?;
        let preprocess = loaded.meta.preprocess(path)?;
        if let Some(t) = &loaded.meta.thresholds {
            check_thresholds(t, labels.len()).map_err(|e| Error::format(path, format!("bad thresholds: {e}")))?;
        }
        // Frozen: Grad-CAM's backward then writes no gradient into the shared weights.
        loaded.model.set_trainable(&|_| true, false)?;
        Ok(Classifier {
            model: loaded.model,
            architecture: loaded.architecture,
            thresholds: loaded.meta.thresholds.clone(),
            meta: loaded.meta,
            labels,
            preprocess,
            path: path.to_path_buf(),
        })
    }

    /// Uses `threshold` for every finding, replacing the checkpoint's thresholds.
    pub fn with_threshold(self, threshold: f32) -> Result<Classifier> {
        let n = self.labels.len();
        self.with_thresholds(vec![threshold; n])
    }

    /// Uses one threshold per finding (output order), replacing the checkpoint's.
    pub fn with_thresholds(mut self, thresholds: Vec<f32>) -> Result<Classifier> {
        check_thresholds(&thresholds, self.labels.len())
            .map_err(|detail| Error::InvalidArgument { op: "Classifier::with_thresholds", detail })?;
        self.thresholds = Some(thresholds);
        Ok(self)
    }

    /// Finding names in output order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }
    /// The preprocessing the model was trained with.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }
    /// Decision thresholds in output order, if known.
    pub fn thresholds(&self) -> Option<&[f32]> {
        self.thresholds.as_deref()
    }
    pub fn architecture(&self) -> Architecture {
        self.architecture
    }
    /// The checkpoint's metadata.
    pub fn meta(&self) -> &CheckpointMeta {
        &self.meta
    }
    /// The model (eval mode, frozen).
    pub fn model(&self) -> &dyn Model {
        self.model.as_ref()
    }
    /// The checkpoint this classifier was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The output index of `finding`; an unknown name is an error listing the valid ones.
    pub fn class_index(&self, finding: &str) -> Result<usize> {
        self.labels.iter().position(|l| l == finding).ok_or_else(|| Error::InvalidArgument {
            op: "Classifier",
            detail: format!("no finding named '{finding}' (this model knows: {})", self.labels.join(", ")),
        })
    }

    /// Checks that the model's labels are exactly `expected` (e.g. a data set's), in order.
    pub fn check_labels(&self, expected: &[&str]) -> Result<()> {
        if self.labels.iter().map(String::as_str).eq(expected.iter().copied()) {
            return Ok(());
        }
        Err(Error::format(
            &self.path,
            format!(
                "the checkpoint's labels [{}] differ from the data's [{}]",
                self.labels.join(", "),
                expected.join(", ")
            ),
        ))
    }

    /// The image resized and cropped as the model sees it (before normalisation): what heatmaps
    /// are drawn over.
    pub fn resized(&self, image: &Grey) -> Grey {
        resize_crop(image, self.preprocess.size)
    }

    fn batch(&self, images: &[Grey]) -> Result<Tensor> {
        if images.is_empty() {
            return Err(Error::InvalidArgument { op: "Classifier", detail: "no images given".into() });
        }
        let (c, s) = (self.preprocess.channels, self.preprocess.size);
        let mut data = Vec::with_capacity(images.len() * c * s * s);
        for img in images {
            if img.width == 0 || img.height == 0 || img.data.len() != img.width * img.height {
                return Err(Error::InvalidArgument {
                    op: "Classifier",
                    detail: format!("image is {}x{} with {} values", img.width, img.height, img.data.len()),
                });
            }
            data.extend(normalize(&self.resized(img), c, self.preprocess.normalization));
        }
        Tensor::from_vec(data, [images.len(), c, s, s])
    }

    /// Sigmoid probabilities `[image][finding]`; needs no threshold. Images of any size.
    pub fn probabilities(&self, images: &[Grey]) -> Result<Vec<Vec<f32>>> {
        let x = self.batch(images)?;
        let logits = crate::run_on_pool(|| {
            let _inference = crate::no_grad();
            self.model.forward(&x)
        })?;
        let k = self.labels.len();
        let values = logits.to_vec()?;
        if values.iter().any(|v| v.is_nan()) {
            return Err(Error::NonFinite { what: "model output".into(), step: None });
        }
        Ok(values.chunks_exact(k).map(|row| row.iter().map(|&z| sigmoid(z)).collect()).collect())
    }

    fn decide(&self, probabilities: Vec<f32>) -> Result<Prediction> {
        let thresholds = self.thresholds.as_deref().ok_or_else(|| {
            Error::format(
                &self.path,
                "the checkpoint has no decision thresholds; pass one (Classifier::with_threshold, \
                 `--threshold 0.5`) or calibrate the model with `tools eval`",
            )
        })?;
        let findings = probabilities
            .into_iter()
            .enumerate()
            .map(|(class, probability)| FindingScore {
                finding: self.labels[class].clone(),
                class,
                probability,
                threshold: thresholds[class],
                detected: probability >= thresholds[class],
            })
            .collect();
        Ok(Prediction { findings })
    }

    /// Probabilities and decisions for one image.
    pub fn predict(&self, image: &Grey) -> Result<Prediction> {
        self.predict_batch(std::slice::from_ref(image)).map(|mut v| v.remove(0))
    }

    /// Probabilities and decisions for several images in one forward pass.
    pub fn predict_batch(&self, images: &[Grey]) -> Result<Vec<Prediction>> {
        if self.thresholds.is_none() {
            // Fail before spending a forward pass.
            self.decide(Vec::new())?;
        }
        self.probabilities(images)?.into_iter().map(|p| self.decide(p)).collect()
    }

    /// Grad-CAM of `finding` on `image` with the default layer, at the input's resolution.
    pub fn explain(&self, image: &Grey, finding: &str) -> Result<Heatmap> {
        let class = self.class_index(finding)?;
        self.explain_batch(std::slice::from_ref(image), &[(0, class)], &CamOptions::default()).map(|mut v| v.remove(0))
    }

    /// Maps for each `(image index, class)` in `targets`, with the given method, layer and ReLU
    /// setting, in one forward pass over `images` (see [`grad_cam`]).
    pub fn explain_batch(
        &self,
        images: &[Grey],
        targets: &[(usize, usize)],
        options: &CamOptions,
    ) -> Result<Vec<Heatmap>> {
        let x = self.batch(images)?;
        let out = grad_cam(self.model.as_ref(), &x, targets, options)?;
        let s = self.preprocess.size;
        Ok(out
            .maps
            .into_iter()
            .map(|map| {
                let p = sigmoid(map.logit);
                let finding = self.labels[map.class].clone();
                Heatmap::new(map, finding, p, options, &out.layer, s, s)
            })
            .collect())
    }
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}
