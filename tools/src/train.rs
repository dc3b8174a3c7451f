//! `tools train`: the main job. Options come from flags or a TOML config (flags win); the
//! resolved configuration is printed and saved in the run folder.

use anyhow::{Context, Result};
use clap::Args;
use cxr::data::Normalization;
use cxr::metrics::ClassAuroc;
use cxr::train::trainer::describe_validation;
use cxr::train::{LogRow, Observer, OptimizerKind, PosWeightMode, ScheduleKind, StepReport, StopReason, TrainConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Args)]
pub struct TrainArgs {
    /// TOML file with any of the options below (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run name: the run folder is RUNS_DIR/NAME.
    #[arg(long, default_value = "run")]
    name: String,
    /// Folder holding run folders.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// Continue the run in RUNS_DIR/NAME from its last checkpoint, exactly.
    #[arg(long)]
    resume: bool,
    /// Device: cpu, cuda or cuda:N (a machine without a GPU says so and stops).
    #[arg(long)]
    device: Option<String>,
    /// Data: `phantom[:COUNT[:SIZE]]` (synthetic), an .npz (MedMNIST layout), an NIH folder
    /// (Data_Entry_2017.csv + images), a CSV (image + 14 label columns), or `chestmnist`.
    #[arg(long)]
    data: Option<String>,
    /// Architecture: mlp, mlp-deeper, mlp-wider, resnet18, resnet18-small, resnet34, resnet50, densenet121.
    #[arg(long)]
    arch: Option<String>,
    #[arg(long)]
    image_size: Option<usize>,
    /// 1 (grey) or 3 (grey replicated for ImageNet weights).
    #[arg(long)]
    channels: Option<usize>,
    #[arg(long, value_enum)]
    normalization: Option<NormArg>,
    /// Pretrained weights (safetensors in torchvision layout, or a cxr checkpoint).
    #[arg(long)]
    pretrained: Option<PathBuf>,
    /// Train only the classification head.
    #[arg(long)]
    freeze_backbone: bool,
    #[arg(long)]
    epochs: Option<u64>,
    #[arg(long)]
    max_steps: Option<u64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long, value_enum)]
    optimizer: Option<OptArg>,
    #[arg(long)]
    lr: Option<f32>,
    #[arg(long)]
    weight_decay: Option<f32>,
    #[arg(long)]
    momentum: Option<f32>,
    #[arg(long)]
    nesterov: bool,
    #[arg(long)]
    warmup_steps: Option<u64>,
    #[arg(long, value_enum)]
    schedule: Option<ScheduleArg>,
    #[arg(long)]
    clip_grad_norm: Option<f32>,
    /// Class weighting: none, ratio (neg/pos), balanced.
    #[arg(long, value_enum)]
    pos_weight: Option<PosWeightArg>,
    /// Validate every N steps (default: every epoch).
    #[arg(long)]
    validate_every: Option<u64>,
    /// Early stopping patience, in validations without improvement.
    #[arg(long)]
    patience: Option<u32>,
    #[arg(long)]
    seed: Option<u64>,
    /// Patient-level split fractions train,val,test.
    #[arg(long)]
    split: Option<String>,
    /// Keep only PA or AP views.
    #[arg(long)]
    view: Option<String>,
    /// Drop label rows whose image is missing (with a warning) instead of failing.
    #[arg(long)]
    skip_missing: bool,
    /// Skip undecodable images with a warning instead of failing.
    #[arg(long)]
    skip_corrupt: bool,
    /// Proceed even if a patient appears in two splits.
    #[arg(long)]
    allow_leakage: bool,
    /// On-disk cache of resized images.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Mild augmentation: random resized crop 0.85-1, rotation 5 degrees, brightness/contrast 0.1.
    #[arg(long)]
    augment: bool,
    /// Also write best.f16.safetensors for devices.
    #[arg(long)]
    save_f16: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NormArg {
    UnitRange,
    Imagenet,
    Xrayvision,
}
#[derive(Clone, Copy, clap::ValueEnum)]
enum OptArg {
    Sgd,
    Adam,
    Adamw,
}
#[derive(Clone, Copy, clap::ValueEnum)]
enum ScheduleArg {
    Constant,
    Cosine,
    Plateau,
}
#[derive(Clone, Copy, clap::ValueEnum)]
enum PosWeightArg {
    None,
    Ratio,
    Balanced,
}

/// Defaults that suit each architecture when neither flags nor the config file say otherwise.
fn arch_defaults(c: &mut TrainConfig) {
    match c.arch.as_str() {
        "mlp" | "mlp-deeper" | "mlp-wider" => {
            c.image_size = 28;
            c.channels = 1;
            c.normalization = Normalization::UnitRange;
            c.batch_size = 128;
        }
        "resnet18-small" => c.image_size = 64,
        _ => {
            c.image_size = 224;
            c.batch_size = 16;
        }
    }
}

fn resolve(args: &TrainArgs) -> Result<TrainConfig> {
    let mut c = match &args.config {
        Some(path) => TrainConfig::from_toml_file(path)?,
        None => {
            let mut c = TrainConfig::default();
            if let Some(arch) = &args.arch {
                c.arch = arch.clone();
                arch_defaults(&mut c);
            }
            c
        }
    };
    macro_rules! set {
        ($field:ident) => {
            if let Some(v) = args.$field.clone() {
                c.$field = v.into();
            }
        };
    }
    set!(data);
    set!(device);
    set!(arch);
    set!(image_size);
    set!(channels);
    set!(epochs);
    set!(batch_size);
    set!(lr);
    set!(momentum);
    set!(warmup_steps);
    set!(seed);
    set!(split);
    if args.max_steps.is_some() {
        c.max_steps = args.max_steps;
    }
    for (flag, field) in [
        (args.freeze_backbone, &mut c.freeze_backbone),
        (args.nesterov, &mut c.nesterov),
        (args.skip_missing, &mut c.skip_missing),
        (args.skip_corrupt, &mut c.skip_corrupt),
        (args.allow_leakage, &mut c.allow_leakage),
        (args.save_f16, &mut c.save_f16),
    ] {
        *field |= flag;
    }
    c.pretrained = args.pretrained.clone().or(c.pretrained);
    c.weight_decay = args.weight_decay.or(c.weight_decay);
    c.clip_grad_norm = args.clip_grad_norm.or(c.clip_grad_norm);
    c.validate_every = args.validate_every.or(c.validate_every);
    c.patience = args.patience.or(c.patience);
    c.view = args.view.clone().or(c.view);
    c.cache_dir = args.cache_dir.clone().or(c.cache_dir);
    if let Some(n) = args.normalization {
        c.normalization = match n {
            NormArg::UnitRange => Normalization::UnitRange,
            NormArg::Imagenet => Normalization::ImageNet,
            NormArg::Xrayvision => Normalization::XrayVision,
        };
    }
    if let Some(o) = args.optimizer {
        c.optimizer = match o {
            OptArg::Sgd => OptimizerKind::Sgd,
            OptArg::Adam => OptimizerKind::Adam,
            OptArg::Adamw => OptimizerKind::AdamW,
        };
    }
    if let Some(s) = args.schedule {
        c.schedule = match s {
            ScheduleArg::Constant => ScheduleKind::Constant,
            ScheduleArg::Cosine => ScheduleKind::Cosine,
            ScheduleArg::Plateau => ScheduleKind::Plateau,
        };
    }
    if let Some(p) = args.pos_weight {
        c.pos_weight = match p {
            PosWeightArg::None => PosWeightMode::None,
            PosWeightArg::Ratio => PosWeightMode::Ratio,
            PosWeightArg::Balanced => PosWeightMode::Balanced,
        };
    }
    if args.augment {
        c.augment = cxr::data::Augment {
            crop_scale: Some((0.85, 1.0)),
            rotation_deg: 5.0,
            hflip: false,
            brightness: 0.1,
            contrast: 0.1,
        };
    }
    Ok(c)
}

/// Progress bar on a terminal, plain lines otherwise.
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new() -> Progress {
        let bar = ProgressBar::with_draw_target(
            Some(0),
            if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
        );
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        Progress { bar }
    }
}

impl Observer for Progress {
    fn message(&mut self, text: &str) {
        self.bar.suspend(|| eprintln!("{text}"));
    }
    fn epoch_start(&mut self, epoch: u64, batches: usize) {
        self.bar.reset();
        self.bar.set_length(batches as u64);
        self.bar.set_prefix(format!("{}", epoch + 1));
    }
    fn step(&mut self, r: &StepReport) {
        self.bar.set_position(r.batch as u64);
        self.bar.set_message(format!("loss {:.4} lr {:.2e} {:.1} img/s", r.loss, r.lr, r.images_per_s));
    }
    fn validation(&mut self, row: &LogRow, _per_class: &ClassAuroc, best: bool) {
        self.bar.suspend(|| eprintln!("{}", describe_validation(row, best)));
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let run_dir = args.runs_dir.join(&args.name);
    let config = if args.resume {
        let path = run_dir.join("config.toml");
        TrainConfig::from_toml_file(&path).with_context(|| format!("cannot resume: {}", path.display()))?
    } else {
        resolve(args)?
    };
    eprintln!("# resolved configuration ({}):\n{}", run_dir.join("config.toml").display(), config.to_toml());
    if config.data.starts_with("phantom") {
        eprintln!("note: training on SYNTHETIC chest phantoms (no real data given); pass --data for real X-rays");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting without saving");
            std::process::exit(130);
        }
        eprintln!("interrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)");
    })
    .context("cannot install the Ctrl-C handler")?;
    let mut progress = Progress::new();
    let summary = cxr::train::train(&config, &run_dir, args.resume, &mut progress, stop)?;
    progress.bar.finish_and_clear();
    let best = summary
        .best_auroc
        .map_or_else(|| "n/a".into(), |a| format!("{a:.4} at step {}", summary.best_step.unwrap_or(0)));
    eprintln!(
        "{} after {} steps in {:.1} s; best validation mean AUROC {best}; run folder {}",
        match summary.stop {
            StopReason::Completed => "done",
            StopReason::EarlyStopped => "stopped early",
            StopReason::Interrupted => "interrupted",
        },
        summary.steps,
        summary.seconds,
        summary.run_dir.display()
    );
    if summary.stop == StopReason::Interrupted {
        std::process::exit(130);
    }
    Ok(())
}
