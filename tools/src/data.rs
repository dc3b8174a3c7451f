//! `tools data`: statistics and integrity checks of a data source.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use cxr::data::split::Fractions;
use cxr::data::stats::{check_images, Stats};
use cxr::data::{open_source, SourceOptions};

#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Per-finding image and patient counts, normal images, labels per image, split sizes.
    Stats(SourceArgs),
    /// Verify that every listed image exists and decodes (in parallel); report failures by file.
    Check(SourceArgs),
}

#[derive(Args)]
struct SourceArgs {
    /// An .npz file, an NIH folder, a CSV file, a MedMNIST name (chestmnist, chestmnist_224, ...)
    /// or `phantom[:COUNT[:SIZE]]`.
    #[arg(long)]
    data: String,
    /// Which split to describe: all, train, val or test.
    #[arg(long, default_value = "all")]
    split: String,
    /// Split fractions train,val,test for sources without an official split.
    #[arg(long, default_value = "0.7,0.1,0.2")]
    fractions: String,
    /// Split (and phantom) seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep only one view position (PA or AP).
    #[arg(long)]
    view: Option<String>,
    /// Drop rows whose image file is missing instead of failing.
    #[arg(long)]
    skip_missing: bool,
    /// NIH folders: read the label file only, without looking for images (stats of the label file).
    #[arg(long)]
    labels_only: bool,
    /// Proceed even if a patient appears in two splits.
    #[arg(long)]
    allow_leakage: bool,
}

impl SourceArgs {
    fn open(&self) -> Result<cxr::data::Source> {
        let options = SourceOptions {
            fractions: Fractions::parse(&self.fractions)?,
            seed: self.seed,
            view: self.view.clone(),
            skip_missing: self.skip_missing,
            labels_only: self.labels_only,
            allow_leakage: self.allow_leakage,
            ..Default::default()
        };
        let source = open_source(&self.data, &options)?;
        println!("{}", source.description);
        for w in &source.warnings {
            eprintln!("warning: {w}");
        }
        Ok(source)
    }
}

pub fn run(args: &DataArgs) -> Result<()> {
    match &args.command {
        DataCommand::Stats(a) => {
            let source = a.open()?;
            let ds = source.part(&a.split)?;
            let mut stats = Stats::compute(ds.as_ref());
            if a.split == "all" {
                stats.add_split("train", source.train.as_ref());
                stats.add_split("val", source.val.as_ref());
                stats.add_split("test", source.test.as_ref());
            }
            println!("split: {}\n", a.split);
            print!("{stats}");
            Ok(())
        }
        DataCommand::Check(a) => {
            let source = a.open()?;
            let ds = source.part(&a.split)?;
            let start = std::time::Instant::now();
            let failures = check_images(ds.as_ref());
            for f in &failures {
                let path = f.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| f.image.clone());
                println!("FAILED {path}: {}", f.error);
            }
            println!(
                "checked {} images in {:.1} s: {} ok, {} failed",
                ds.len(),
                start.elapsed().as_secs_f64(),
                ds.len() - failures.len(),
                failures.len()
            );
            if !failures.is_empty() {
                bail!("{} of {} images failed to load", failures.len(), ds.len());
            }
            Ok(())
        }
    }
}
