//! Running a trained model over a dataset split for evaluation: the probabilities, labels and
//! patients that [`crate::metrics::evaluate`] turns into a report. The metrics themselves are
//! pure functions in [`crate::metrics`]; this module is the part that touches models and data.
//!
//! [`open_eval_data`] opens a data source split the way the checkpoint's own training run split
//! it (same seed, fractions, view filter), so `test` means the patients training held out.

use crate::data::loader::Skipped;
use crate::data::{open_source, Dataset, Loader, LoaderOptions, Preprocess, Source, SourceOptions, FINDINGS};
use crate::error::{Error, Result};
use crate::io::CheckpointMeta;
use crate::models::Model;
use crate::train::TrainConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a model said about every image of a dataset, in dataset order.
#[derive(Debug, Clone)]
pub struct Predictions {
    /// Sigmoid probabilities, row-major [images x classes].
    pub scores: Vec<f32>,
    /// The 0/1 labels, same layout.
    pub labels: Vec<f32>,
    pub classes: usize,
    /// Each image's patient, when the source knows it.
    pub patients: Vec<Option<String>>,
    pub image_ids: Vec<String>,
    /// Images that could not be decoded (only when skipping corrupt images).
    pub skipped: Vec<Skipped>,
}

impl Predictions {
    /// Number of images scored.
    pub fn len(&self) -> usize {
        self.image_ids.len()
    }
    /// True when no image was scored.
    pub fn is_empty(&self) -> bool {
        self.image_ids.is_empty()
    }
    /// Patients as borrowed keys, the form the metrics take.
    pub fn patient_keys(&self) -> Vec<Option<&str>> {
        self.patients.iter().map(|p| p.as_deref()).collect()
    }
}

/// How [`predict_dataset`] batches its work.
#[derive(Debug, Clone)]
pub struct PredictOptions {
    pub batch_size: usize,
    /// Skip undecodable images (listed in [`Predictions::skipped`]) instead of failing.
    pub skip_corrupt: bool,
    /// The loader's on-disk cache of resized images.
    pub cache_dir: Option<PathBuf>,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions { batch_size: 32, skip_corrupt: false, cache_dir: None }
    }
}

/// Runs `model` (switched to eval mode, no autograd graph) over every image of `dataset`,
/// preprocessed as `preprocess`, batch by batch through the [`Loader`].
pub fn predict_dataset(
    model: &dyn Model,
    dataset: Arc<dyn Dataset>,
    preprocess: &Preprocess,
    options: &PredictOptions,
) -> Result<Predictions> {
    if dataset.is_empty() {
        return Err(Error::data("evaluation", "the dataset split is empty"));
    }
    let width = dataset.labels(0).len();
    if width != model.num_classes() {
        return Err(Error::data(
            "evaluation",
            format!("the data has {width} labels per image but the model predicts {} classes", model.num_classes()),
        ));
    }
    let loader_options = LoaderOptions {
        batch_size: options.batch_size,
        shuffle: false,
        drop_last: false,
        augment: None,
        prefetch: 1,
        skip_corrupt: options.skip_corrupt,
        cache_dir: options.cache_dir.clone(),
        ..LoaderOptions::default()
    };
    let loader = Loader::new(dataset.clone(), preprocess.clone(), loader_options)?;
    model.set_training(false);
    let _inference = crate::autograd::no_grad();
    let mut out = Predictions {
        scores: Vec::with_capacity(dataset.len() * width),
        labels: Vec::with_capacity(dataset.len() * width),
        classes: width,
        patients: Vec::with_capacity(dataset.len()),
        image_ids: Vec::with_capacity(dataset.len()),
        skipped: Vec::new(),
    };
    for batch in loader.epoch(0) {
        let batch = batch?;
        out.scores.extend(crate::run_on_pool(|| model.forward(&batch.images)?.sigmoid()?.to_vec())?);
        out.labels.extend(batch.labels.to_vec()?);
        for &i in &batch.indices {
            out.patients.push(dataset.patient(i).map(str::to_string));
            out.image_ids.push(dataset.image_id(i).to_string());
        }
        out.skipped.extend(batch.skipped);
    }
    Ok(out)
}

/// The label names of a data source whose images carry `width` labels: the 14 findings in
/// ChestMNIST order for ChestX-ray14 sources, positional names otherwise.
pub fn data_label_names(width: usize) -> Vec<String> {
    if width == FINDINGS.len() {
        FINDINGS.iter().map(|s| s.to_string()).collect()
    } else {
        (0..width).map(|i| format!("label{i}")).collect()
    }
}

/// Checks that a checkpoint's output labels are the data's labels, in the same order.
pub fn check_labels(checkpoint: &Path, model_labels: &[String], data_labels: &[String]) -> Result<()> {
    if model_labels == data_labels {
        return Ok(());
    }
    let detail = if model_labels.len() != data_labels.len() {
        format!("the model predicts {} labels but the data has {}", model_labels.len(), data_labels.len())
    } else {
        let (i, (m, d)) =
            model_labels.iter().zip(data_labels).enumerate().find(|(_, (m, d))| m != d).expect("lists differ");
        format!("label {i} is {m:?} in the checkpoint but {d:?} in the data")
    };
    Err(Error::format(
        checkpoint,
        format!("label set differs from the data's: {detail} (checkpoint: {})", model_labels.join(", ")),
    ))
}

/// The training configuration stored in a checkpoint, when there is one.
pub fn training_config(meta: &CheckpointMeta) -> Option<TrainConfig> {
    meta.training.as_ref().and_then(|t| serde_json::from_value(t.clone()).ok())
}

/// Opens `spec` split as the checkpoint's training run split it: the source options come from
/// the stored training configuration (seed, fractions, view filter, missing-image handling);
/// without one, the trainer's defaults. Returns the source and the options used.
pub fn open_eval_data(spec: &str, meta: &CheckpointMeta) -> Result<(Source, SourceOptions)> {
    let options = match training_config(meta) {
        Some(config) => config.source_options()?,
        None => TrainConfig::default().source_options()?,
    };
    let source = open_source(spec, &options)?;
    Ok((source, options))
}
