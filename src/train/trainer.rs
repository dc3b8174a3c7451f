//! The training loop: data, model, loss, optimizer and schedule wired together, with validation,
//! early stopping, best/last checkpoints, an exact resume, a CSV log and training curves, all
//! in a run folder:
//!
//! ```text
//! runs/NAME/config.toml         the resolved configuration
//!           log.csv             step, epoch, train_loss, val_loss, val_auroc, lr, images_per_s
//!           curves.png          loss and validation AUROC, best point marked
//!           best.safetensors    the checkpoint with the best validation mean AUROC
//!           last.safetensors    the latest checkpoint (f32), with last.state.safetensors
//!                               (optimizer, schedule, position) for --resume
//! ```

use super::config::{ScheduleKind, TrainConfig};
use super::optim::{clip_grad_norm, Optimizer, OptimizerConfig};
use super::schedule::{Decay, LrSchedule};
use super::state::{TrainState, STATE_FILE};
use super::weights::{class_weights, ClassWeights};
use crate::data::{open_source, Batch, Dataset, Loader, LoaderOptions, Source, FINDINGS};
use crate::error::{Error, Result};
use crate::io::{load_into, save_checkpoint, CheckpointMeta, LoadOptions, WeightFile};
use crate::metrics::{mean_auroc, ClassAuroc};
use crate::models::{Architecture, Model};
use crate::plot::{training_curves, CurvePoint};
use crate::tensor::{DType, Tensor};
use crate::Device;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One optimizer step, as reported to the observer.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub step: u64,
    pub epoch: u64,
    pub batch: usize,
    pub batches: usize,
    pub loss: f32,
    pub lr: f32,
    pub images_per_s: f64,
}

/// One validation, as logged.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogRow {
    pub step: u64,
    pub epoch: u64,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_auroc: Option<f64>,
    pub lr: f32,
    pub images_per_s: f64,
}

/// What the loop tells whoever runs it (a progress bar, a log, a test).
pub trait Observer {
    /// A line of information (data summary, warnings, checkpoint saved).
    fn message(&mut self, text: &str);
    /// An epoch begins with `batches` batches.
    fn epoch_start(&mut self, _epoch: u64, _batches: usize) {}
    /// A step finished.
    fn step(&mut self, _report: &StepReport) {}
    /// A validation finished; `per_class` in FINDINGS order.
    fn validation(&mut self, _row: &LogRow, _per_class: &ClassAuroc, _best: bool) {}
}

/// An observer that prints messages and validations to stderr.
pub struct PrintObserver;

impl Observer for PrintObserver {
    fn message(&mut self, text: &str) {
        eprintln!("{text}");
    }
    fn validation(&mut self, row: &LogRow, _per_class: &ClassAuroc, best: bool) {
        eprintln!("{}", describe_validation(row, best));
    }
}

/// A one-line summary of a validation.
pub fn describe_validation(row: &LogRow, best: bool) -> String {
    let auroc = row.val_auroc.map_or_else(|| "n/a".to_string(), |a| format!("{a:.4}"));
    format!(
        "[step {:>6}] epoch {} train_loss {:.4} val_loss {:.4} val_mean_AUROC {auroc}{}",
        row.step,
        row.epoch,
        row.train_loss,
        row.val_loss,
        if best { "  (best)" } else { "" }
    )
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// All epochs (or max_steps) done.
    Completed,
    /// Validation AUROC stopped improving for `patience` validations.
    EarlyStopped,
    /// The stop flag was raised (Ctrl-C); last.safetensors holds the state to resume from.
    Interrupted,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub steps: u64,
    pub best_auroc: Option<f64>,
    pub best_step: Option<u64>,
    pub history: Vec<LogRow>,
    pub stop: StopReason,
    pub seconds: f64,
}

/// Everything the loop holds.
struct Run<'a> {
    config: TrainConfig,
    arch: Architecture,
    /// Where the model, its gradients and the optimizer state live; batches are copied there.
    device: Device,
    run_dir: PathBuf,
    model: Box<dyn Model>,
    optimizer: Optimizer,
    train: Loader,
    val: Loader,
    weights: ClassWeights,
    pos_weight: Option<Tensor>,
    class_weight: Option<Tensor>,
    state: TrainState,
    observer: &'a mut dyn Observer,
    stop: Arc<AtomicBool>,
}

/// Trains as `config` says, in `run_dir` (created if needed). With `resume`, continues from
/// `run_dir/last.safetensors` exactly where it stopped.
pub fn train(
    config: &TrainConfig,
    run_dir: &Path,
    resume: bool,
    observer: &mut dyn Observer,
    stop: Arc<AtomicBool>,
) -> Result<TrainSummary> {
    let started = Instant::now();
    config.validate()?;
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    let mut run = Run::new(config, run_dir, resume, observer, stop)?;
    let reason = run.run()?;
    Ok(TrainSummary {
        run_dir: run.run_dir.clone(),
        steps: run.state.step,
        best_auroc: run.state.best_auroc,
        best_step: run.state.best_step,
        history: run.state.history.clone(),
        stop: reason,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn open_data(config: &TrainConfig) -> Result<Source> {
    let source = open_source(&config.data, &config.source_options()?)?;
    for (name, part) in [("training", &source.train), ("validation", &source.val)] {
        if part.is_empty() {
            return Err(Error::data(&config.data, format!("the {name} split is empty ({})", source.description)));
        }
    }
    Ok(source)
}

fn schedule(config: &TrainConfig, total_steps: u64) -> LrSchedule {
    let decay = match config.schedule {
        ScheduleKind::Constant => Decay::Constant,
        ScheduleKind::Cosine => Decay::Cosine { total_steps, min_factor: 0.0 },
        ScheduleKind::Plateau => Decay::Plateau {
            factor: config.plateau_factor,
            patience: config.plateau_patience,
            threshold: 1e-4,
            min_lr: 0.0,
        },
    };
    LrSchedule::new(config.lr, config.warmup_steps, decay)
}

fn optimizer_config(config: &TrainConfig) -> OptimizerConfig {
    let mut o = OptimizerConfig::new(config.optimizer, config.lr);
    if let Some(wd) = config.weight_decay {
        o.weight_decay = wd;
    }
    o.momentum = if config.optimizer == super::OptimizerKind::Sgd { config.momentum } else { 0.0 };
    o.nesterov = config.nesterov;
    o
}

fn vector(v: &Option<Vec<f32>>, device: Device) -> Result<Option<Tensor>> {
    v.as_ref().map(|v| Tensor::from_vec(v.clone(), [v.len()])?.to_device(device)).transpose()
}

impl<'a> Run<'a> {
    fn new(
        config: &TrainConfig,
        run_dir: &Path,
        resume: bool,
        observer: &'a mut dyn Observer,
        stop: Arc<AtomicBool>,
    ) -> Result<Run<'a>> {
        let arch = config.architecture()?;
        let source = open_data(config)?;
        observer.message(&format!(
            "data: {} -> train {} / val {} / test {} images",
            source.description,
            source.train.len(),
            source.val.len(),
            source.test.len()
        ));
        source.warnings.iter().for_each(|w| observer.message(&format!("warning: {w}")));
        let weights = class_weights(source.train.as_ref(), FINDINGS.len(), config.pos_weight);
        weights.warnings.iter().for_each(|w| observer.message(&format!("warning: {w}")));

        let device = config.device()?;
        let model = arch.build(config.channels, FINDINGS.len(), config.seed, device)?;
        if let Some(path) = &config.pretrained {
            load_pretrained(model.as_ref(), arch, path, observer)?;
        }
        if config.freeze_backbone {
            let head = format!("{}.", arch.head_name());
            model.set_trainable(&|name| !name.starts_with(&head), false)?;
            observer.message(&format!("backbone frozen: training only {}*", head));
        }
        let trainable: usize =
            model.parameters().iter().filter(|p| p.tensor.requires_grad()).map(|p| p.tensor.numel()).sum();
        observer.message(&format!(
            "model: {arch}, {} parameters ({trainable} trainable), input {}x{}x{}",
            model.parameter_count(),
            config.channels,
            config.image_size,
            config.image_size
        ));

        let train = Loader::new(
            source.train.clone(),
            config.preprocess(),
            train_loader_options(config, source.train.as_ref()),
        )?;
        let val = Loader::new(source.val.clone(), config.preprocess(), eval_loader_options(config))?;
        let per_epoch = train.num_batches() as u64;
        if per_epoch == 0 {
            return Err(Error::data(&config.data, "the training split is smaller than one batch"));
        }
        let total = config.max_steps.unwrap_or(u64::MAX).min(per_epoch.saturating_mul(config.epochs.max(1)));
        let optimizer = Optimizer::new(optimizer_config(config), model.parameters())?;
        let mut run = Run {
            config: config.clone(),
            arch,
            device,
            run_dir: run_dir.to_path_buf(),
            pos_weight: vector(&weights.pos_weight, device)?,
            class_weight: vector(&weights.class_weight, device)?,
            weights,
            model,
            optimizer,
            train,
            val,
            state: TrainState::new(schedule(config, total)),
            observer,
            stop,
        };
        if resume {
            run.resume()?;
        } else {
            let path = run.run_dir.join("config.toml");
            crate::io::atomic::write_atomic(&path, config.to_toml().as_bytes())?;
        }
        Ok(run)
    }

    fn total_steps(&self) -> u64 {
        let per_epoch = self.train.num_batches() as u64;
        self.config.max_steps.unwrap_or(u64::MAX).min(per_epoch.saturating_mul(self.config.epochs))
    }

    fn run(&mut self) -> Result<StopReason> {
        let total = self.total_steps();
        while self.state.step < total {
            let epoch = self.state.epoch;
            let batches = self.train.num_batches();
            self.observer.epoch_start(epoch, batches);
            let skip = self.state.batch_in_epoch;
            for (batch_index, batch) in self.train.epoch(epoch).enumerate().skip(skip) {
                let batch = batch?;
                batch.skipped.iter().for_each(|s| {
                    self.observer.message(&format!("warning: skipped corrupt image {}: {}", s.image, s.error))
                });
                self.train_step(&batch, batch_index, batches)?;
                self.state.batch_in_epoch = batch_index + 1;
                let epoch_done = batch_index + 1 == batches;
                let due = match self.config.validate_every {
                    Some(n) => self.state.step.is_multiple_of(n.max(1)),
                    None => epoch_done,
                };
                if (due || self.state.step == total) && self.validate_and_save()? {
                    return Ok(StopReason::EarlyStopped);
                }
                if self.stop.load(Ordering::Relaxed) {
                    self.save_last()?;
                    self.observer.message(&format!(
                        "interrupted at step {}: saved {} (continue with --resume)",
                        self.state.step,
                        self.run_dir.join("last.safetensors").display()
                    ));
                    return Ok(StopReason::Interrupted);
                }
                if self.state.step >= total {
                    break;
                }
            }
            self.state.epoch += 1;
            self.state.batch_in_epoch = 0;
        }
        Ok(StopReason::Completed)
    }

    fn loss(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        weighted_loss(logits, labels, self.pos_weight.as_ref(), self.class_weight.as_ref())
    }

    fn train_step(&mut self, batch: &Batch, batch_index: usize, batches: usize) -> Result<()> {
        let started = Instant::now();
        let step = self.state.step;
        self.model.set_training(true);
        let (images, labels) = (batch.images.to_device(self.device)?, batch.labels.to_device(self.device)?);
        let lr = self.state.schedule.lr(step);
        let (model, optimizer, clip) = (&self.model, &mut self.optimizer, self.config.clip_grad_norm);
        let (pos_weight, class_weight) = (self.pos_weight.as_ref(), self.class_weight.as_ref());
        // The whole step on the pool: a few hundred kernels without a cold hand-off each.
        let value = crate::run_on_pool(|| -> Result<f32> {
            let logits = model.forward(&images)?;
            let loss = weighted_loss(&logits, &labels, pos_weight, class_weight).map_err(|e| at_step(e, step + 1))?;
            let value = loss.to_scalar()?;
            if !value.is_finite() {
                return Err(Error::NonFinite { what: "training loss".into(), step: Some(step + 1) });
            }
            loss.backward()?;
            drop((loss, logits));
            if let Some(max) = clip {
                clip_grad_norm(&model.parameters(), max).map_err(|e| at_step(e, step + 1))?;
            }
            optimizer.step(lr)?;
            optimizer.zero_grad();
            Ok(value)
        })?;
        self.state.step += 1;
        self.state.loss_sum += value as f64;
        self.state.loss_count += 1;
        let seconds = started.elapsed().as_secs_f64();
        let images_per_s = batch.indices.len() as f64 / seconds.max(1e-9);
        self.state.images += batch.indices.len() as u64;
        self.state.seconds += seconds;
        self.observer.step(&StepReport {
            step: self.state.step,
            epoch: self.state.epoch,
            batch: batch_index + 1,
            batches,
            loss: value,
            lr,
            images_per_s,
        });
        Ok(())
    }

    /// Validates, logs, saves best and last. Returns true when early stopping triggers.
    fn validate_and_save(&mut self) -> Result<bool> {
        let (val_loss, per_class) = self.evaluate()?;
        let train_loss = self.state.loss_sum / self.state.loss_count.max(1) as f64;
        let row = LogRow {
            step: self.state.step,
            epoch: self.state.epoch,
            train_loss,
            val_loss,
            val_auroc: per_class.mean(),
            lr: self.state.schedule.lr(self.state.step.saturating_sub(1)),
            images_per_s: self.state.images as f64 / self.state.seconds.max(1e-9),
        };
        self.state.loss_sum = 0.0;
        self.state.loss_count = 0;
        self.state.images = 0;
        self.state.seconds = 0.0;
        let metric = row.val_auroc.unwrap_or(f64::NEG_INFINITY);
        let best = self.state.best_auroc.is_none_or(|b| metric > b + 1e-6);
        self.state.history.push(row.clone());
        if self.state.schedule.on_validation(metric) {
            self.observer.message(&format!("learning rate reduced to {:.3e}", self.state.schedule.lr(self.state.step)));
        }
        if best {
            self.state.best_auroc = row.val_auroc;
            self.state.best_step = Some(row.step);
            self.state.bad_validations = 0;
            self.save_checkpoint("best.safetensors", &row, &per_class, DType::F32)?;
            if self.config.save_f16 {
                self.save_checkpoint("best.f16.safetensors", &row, &per_class, DType::F16)?;
            }
        } else {
            self.state.bad_validations += 1;
        }
        self.write_log()?;
        self.save_last()?;
        self.observer.validation(&row, &per_class, best);
        let stop = self.config.patience.is_some_and(|p| self.state.bad_validations >= p);
        if stop {
            self.observer.message(&format!(
                "early stopping at step {}: no improvement of the validation mean AUROC in {} validations",
                self.state.step, self.state.bad_validations
            ));
        }
        Ok(stop)
    }

    /// Validation loss (mean over images) and per-class AUROC, in eval mode without a graph.
    fn evaluate(&mut self) -> Result<(f64, ClassAuroc)> {
        self.model.set_training(false);
        let _no_grad = crate::autograd::no_grad();
        let (mut scores, mut labels, mut loss_sum, mut count) = (Vec::new(), Vec::new(), 0.0f64, 0usize);
        for batch in self.val.epoch(0) {
            let batch = batch?;
            let images = batch.images.to_device(self.device)?;
            let logits = crate::run_on_pool(|| self.model.forward(&images))?;
            let n = batch.indices.len();
            let labels_here = batch.labels.to_device(self.device)?;
            loss_sum += self.loss(&logits, &labels_here)?.to_scalar()? as f64 * n as f64;
            count += n;
            scores.extend(logits.sigmoid()?.to_vec()?);
            labels.extend(batch.labels.to_vec()?);
        }
        self.model.set_training(true);
        Ok((loss_sum / count.max(1) as f64, mean_auroc(&scores, &labels, FINDINGS.len())))
    }

    fn meta(&self, row: &LogRow, per_class: &ClassAuroc) -> CheckpointMeta {
        let mut metrics = std::collections::BTreeMap::new();
        metrics.insert("val_loss".to_string(), row.val_loss);
        if let Some(a) = row.val_auroc {
            metrics.insert("val_mean_auroc".to_string(), a);
        }
        for (name, a) in FINDINGS.iter().zip(&per_class.per_class) {
            if let Some(a) = a {
                metrics.insert(format!("val_auroc.{name}"), *a);
            }
        }
        CheckpointMeta {
            format: 1,
            architecture: self.arch.name().to_string(),
            in_channels: self.config.channels,
            num_classes: FINDINGS.len(),
            input_size: Some(self.config.image_size),
            normalization: serde_json::to_value(self.config.normalization)
                .ok()
                .and_then(|v| v.as_str().map(String::from)),
            labels: FINDINGS.iter().map(|s| s.to_string()).collect(),
            thresholds: None,
            pos_weight: self.weights.pos_weight.clone(),
            training: serde_json::to_value(&self.config).ok(),
            epoch: Some(row.epoch),
            step: Some(row.step),
            metrics,
        }
    }

    fn save_checkpoint(&mut self, name: &str, row: &LogRow, per_class: &ClassAuroc, dtype: DType) -> Result<()> {
        save_checkpoint(&self.run_dir.join(name), self.model.as_ref(), &self.meta(row, per_class), dtype)
    }

    /// Writes last.state.safetensors, then last.safetensors (f32, exact): resume checks that both
    /// are from the same step.
    fn save_last(&mut self) -> Result<()> {
        self.state.dropout_calls = self.model.dropout_calls();
        self.state.save(&self.run_dir.join(STATE_FILE), &self.optimizer)?;
        let row = self.state.history.last().cloned().unwrap_or(LogRow {
            step: self.state.step,
            epoch: self.state.epoch,
            train_loss: f64::NAN,
            val_loss: f64::NAN,
            val_auroc: None,
            lr: 0.0,
            images_per_s: 0.0,
        });
        let mut meta = self.meta(&row, &ClassAuroc { per_class: Vec::new() });
        meta.step = Some(self.state.step);
        meta.epoch = Some(self.state.epoch);
        save_checkpoint(&self.run_dir.join("last.safetensors"), self.model.as_ref(), &meta, DType::F32)
    }

    fn resume(&mut self) -> Result<()> {
        let last = self.run_dir.join("last.safetensors");
        let file = WeightFile::open(&last)?;
        let meta = crate::io::checkpoint::read_meta(&file)?;
        if meta.architecture != self.arch.name() {
            return Err(Error::format(
                &last,
                format!("checkpoint is a {}, the config asks for {}", meta.architecture, self.arch.name()),
            ));
        }
        load_into(self.model.as_ref(), &file, &LoadOptions::default())?;
        let state = TrainState::load(&self.run_dir.join(STATE_FILE), &mut self.optimizer)?;
        if Some(state.step) != meta.step {
            return Err(Error::format(
                &last,
                format!(
                    "is from step {:?} but {} is from step {}: the run folder is inconsistent",
                    meta.step, STATE_FILE, state.step
                ),
            ));
        }
        self.model.set_dropout_calls(&state.dropout_calls);
        self.observer.message(&format!(
            "resumed from step {} (epoch {}, batch {})",
            state.step, state.epoch, state.batch_in_epoch
        ));
        self.state = state;
        Ok(())
    }

    fn write_log(&self) -> Result<()> {
        let mut csv = String::from("step,epoch,train_loss,val_loss,val_auroc,lr,images_per_s\n");
        for r in &self.state.history {
            let auroc = r.val_auroc.map_or_else(String::new, |a| format!("{a:.6}"));
            csv += &format!(
                "{},{},{:.6},{:.6},{auroc},{:.6e},{:.1}\n",
                r.step, r.epoch, r.train_loss, r.val_loss, r.lr, r.images_per_s
            );
        }
        crate::io::atomic::write_atomic(&self.run_dir.join("log.csv"), csv.as_bytes())?;
        let points: Vec<CurvePoint> = self
            .state
            .history
            .iter()
            .map(|r| CurvePoint {
                step: r.step,
                train_loss: r.train_loss,
                val_loss: Some(r.val_loss),
                val_auroc: r.val_auroc,
            })
            .collect();
        training_curves(&self.run_dir.join("curves.png"), &points)
    }
}

/// Attaches the step to a non-finite error.
fn at_step(e: Error, step: u64) -> Error {
    match e {
        Error::NonFinite { what, step: None } => Error::NonFinite { what, step: Some(step) },
        other => other,
    }
}

fn load_pretrained(model: &dyn Model, arch: Architecture, path: &Path, observer: &mut dyn Observer) -> Result<()> {
    let file = WeightFile::open(path)?;
    let opts = LoadOptions { replaceable_head: Some(arch.head_name().to_string()), adapt_input_channels: true };
    let report = load_into(model, &file, &opts)?;
    observer.message(&format!(
        "pretrained: {} tensors from {} ({} without a copy)",
        report.loaded,
        path.display(),
        report.zero_copy
    ));
    for name in &report.channel_summed {
        observer.message(&format!("pretrained: {name} summed over its 3 input channels for grey input"));
    }
    for r in &report.reinitialized {
        observer.message(&format!("pretrained: head re-initialised for 14 findings ({r})"));
    }
    Ok(())
}

fn train_loader_options(config: &TrainConfig, train: &dyn Dataset) -> LoaderOptions {
    LoaderOptions {
        batch_size: config.batch_size,
        shuffle: true,
        // A last batch of one image would break batch norm; torch users drop it too.
        drop_last: train.len() > config.batch_size,
        seed: config.seed,
        augment: Some(config.augment.clone()),
        prefetch: 2,
        skip_corrupt: config.skip_corrupt,
        cache_dir: config.cache_dir.clone(),
    }
}

fn eval_loader_options(config: &TrainConfig) -> LoaderOptions {
    LoaderOptions {
        batch_size: config.batch_size,
        shuffle: false,
        drop_last: false,
        seed: config.seed,
        augment: None,
        prefetch: 1,
        skip_corrupt: config.skip_corrupt,
        cache_dir: config.cache_dir.clone(),
    }
}

/// The training loss: BCE with logits under the run's class weighting.
fn weighted_loss(
    logits: &Tensor,
    labels: &Tensor,
    pos_weight: Option<&Tensor>,
    class_weight: Option<&Tensor>,
) -> Result<Tensor> {
    crate::ops::bce_with_logits_weighted(logits, labels, pos_weight, class_weight)
}
