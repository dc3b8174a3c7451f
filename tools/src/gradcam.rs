//! `tools gradcam`: class activation maps over X-rays as PNG overlays, an optional panel with
//! model and ground-truth labels, and, given boxes, how well the maps point at them.
//!
//! Images come from the command line or from `--data` (a split of any data source). Each image is
//! explained for: the findings of its boxes (when localising), `--class NAME`, every finding at
//! or above threshold (`--above-threshold`), or by default its most probable finding.

use crate::images;
use crate::predict::load_classifier;
use anyhow::{bail, Context, Result};
use clap::Args;
use cxr::data::transform::Grey;
use cxr::data::{open_source, Dataset, LesionBox, Normalization, Preprocess, SourceOptions, FINDINGS};
use cxr::explain::{
    box_in_input, read_bbox_csv, score, summarize, BoxScore, CamMethod, CamOptions, Colormap, Heatmap, InputBox,
    PanelTile, RgbImage,
};
use cxr::Classifier;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args)]
pub struct GradcamArgs {
    /// A cxr checkpoint (from `tools train`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Images (PNG/JPEG) or folders of them.
    images: Vec<PathBuf>,
    /// Instead of images: a data source (as `tools train --data`), with ground-truth labels.
    #[arg(long, conflicts_with = "images")]
    data: Option<String>,
    /// Split of `--data`: train, val, test or all.
    #[arg(long, default_value = "test")]
    split: String,
    /// Use only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Split (and phantom) seed of `--data`, as in training.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Explain this finding on every image.
    #[arg(long, conflicts_with = "above_threshold")]
    class: Option<String>,
    /// Explain every finding at or above its threshold.
    #[arg(long)]
    above_threshold: bool,
    /// Decision threshold for every finding, replacing the checkpoint's.
    #[arg(long)]
    threshold: Option<f32>,
    /// gradcam, gradcam++ or hirescam.
    #[arg(long, default_value = "gradcam")]
    method: String,
    /// Layer (tap point) to explain; default layer4 (ResNet) or features.norm5 (DenseNet).
    #[arg(long)]
    layer: Option<String>,
    /// Keep negative evidence (no ReLU on the map); shown with 0.5 as "no evidence".
    #[arg(long)]
    no_relu: bool,
    /// jet or inferno.
    #[arg(long, default_value = "jet")]
    colormap: String,
    /// Heatmap opacity over the X-ray, 0..1.
    #[arg(long, default_value_t = 0.4)]
    alpha: f32,
    /// Output folder.
    #[arg(long, default_value = "gradcam")]
    out: PathBuf,
    /// Also write panel.png: up to --panel-size overlays with predicted and true labels.
    #[arg(long)]
    panel: bool,
    #[arg(long, default_value_t = 16)]
    panel_size: usize,
    #[arg(long, default_value_t = 4)]
    panel_columns: usize,
    /// NIH's BBox_List_2017.csv(.gz): score maps against the radiologists' boxes (pointing game,
    /// IoU). Phantom data is scored against its painted lesions without this.
    #[arg(long)]
    boxes: Option<PathBuf>,
    /// The map is thresholded at this fraction of its maximum for the IoU.
    #[arg(long, default_value_t = 0.5)]
    iou_threshold: f32,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Print the localisation summary as JSON.
    #[arg(long)]
    json: bool,
}

/// One image to explain.
struct Item {
    name: String,
    image: Grey,
    /// Ground-truth findings, when the source has labels.
    truth: Option<Vec<String>>,
    /// Boxes in model-input pixels, by finding index of the classifier.
    boxes: Vec<(usize, InputBox)>,
}

/// Where items come from: files on the command line or a data split, read a batch at a time.
enum Inputs {
    Files(Vec<PathBuf>),
    Data(Arc<dyn Dataset>, usize),
}

impl Inputs {
    fn len(&self) -> usize {
        match self {
            Inputs::Files(p) => p.len(),
            Inputs::Data(_, n) => *n,
        }
    }
}

struct Job<'a> {
    args: &'a GradcamArgs,
    classifier: Classifier,
    options: CamOptions,
    colormap: Colormap,
    csv_boxes: Option<BTreeMap<String, Vec<LesionBox>>>,
    scores: Vec<BoxScore>,
    tiles: Vec<PanelTile>,
    written: usize,
    invalid: usize,
    skipped: usize,
}

pub fn run(args: &GradcamArgs) -> Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be positive");
    let classifier = load_classifier(&args.checkpoint, args.threshold)?;
    let options =
        CamOptions { method: CamMethod::parse(&args.method)?, layer: args.layer.clone(), relu: !args.no_relu };
    // Check the layer and the class before reading any image.
    match &options.layer {
        Some(l) => cxr::explain::check_layer(classifier.model(), l)?,
        None => drop(cxr::explain::default_layer(classifier.model())?),
    }
    if let Some(c) = &args.class {
        classifier.class_index(c)?;
    }
    if args.above_threshold && classifier.thresholds().is_none() {
        bail!("--above-threshold needs thresholds: the checkpoint has none; pass --threshold");
    }
    let csv_boxes = match &args.boxes {
        Some(p) => Some(read_bbox_csv(p)?),
        None => None,
    };
    let inputs = open_inputs(args, &classifier)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut job = Job {
        args,
        classifier,
        options,
        colormap: Colormap::parse(&args.colormap)?,
        csv_boxes,
        scores: Vec::new(),
        tiles: Vec::new(),
        written: 0,
        invalid: 0,
        skipped: 0,
    };
    for start in (0..inputs.len()).step_by(args.batch_size) {
        let end = (start + args.batch_size).min(inputs.len());
        let items = job.load(&inputs, start..end)?;
        job.process(&items)?;
    }
    job.finish()
}

fn open_inputs(args: &GradcamArgs, classifier: &Classifier) -> Result<Inputs> {
    match &args.data {
        Some(spec) => {
            classifier.check_labels(&FINDINGS)?;
            let source = open_source(spec, &SourceOptions { seed: args.seed, ..Default::default() })?;
            eprintln!("{}", source.description);
            let part = source.part(&args.split)?;
            let n = args.limit.unwrap_or(usize::MAX).min(part.len());
            Ok(Inputs::Data(part, n))
        }
        None if args.images.is_empty() => bail!("give images (or folders), or --data"),
        None => {
            let mut paths = images::collect(&args.images)?;
            paths.truncate(args.limit.unwrap_or(usize::MAX));
            Ok(Inputs::Files(paths))
        }
    }
}

impl Job<'_> {
    fn size(&self) -> usize {
        self.classifier.preprocess().size
    }

    /// NIH boxes are in the 1024x1024 frame of the original; scaled to this image, then to input.
    fn csv_boxes_for(&self, name: &str, width: usize, height: usize) -> Result<Vec<(usize, InputBox)>> {
        let Some(all) = &self.csv_boxes else { return Ok(Vec::new()) };
        let Some(list) = all.get(name) else { return Ok(Vec::new()) };
        let (fx, fy) = (width as f32 / 1024.0, height as f32 / 1024.0);
        list.iter()
            .map(|b| {
                let scaled = LesionBox { finding: b.finding, x: b.x * fx, y: b.y * fy, w: b.w * fx, h: b.h * fy };
                let class = self.classifier.class_index(FINDINGS[b.finding])?;
                Ok((class, box_in_input(&scaled, width, height, self.size())))
            })
            .collect()
    }

    fn load(&self, inputs: &Inputs, range: std::ops::Range<usize>) -> Result<Vec<Item>> {
        range
            .map(|i| match inputs {
                Inputs::Files(paths) => {
                    let image = cxr::data::transform::load_image(&paths[i])?;
                    let file_name = paths[i].file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    let boxes = self.csv_boxes_for(&file_name, image.width, image.height)?;
                    Ok(Item { name: images::stem(&paths[i]), image, truth: None, boxes })
                }
                Inputs::Data(ds, _) => self.load_data_item(ds.as_ref(), i),
            })
            .collect()
    }

    fn load_data_item(&self, ds: &dyn Dataset, i: usize) -> Result<Item> {
        let size = self.size();
        let truth: Vec<String> =
            ds.labels(i).iter().zip(FINDINGS).filter(|(v, _)| **v > 0.5).map(|(_, f)| f.to_string()).collect();
        let name = ds.image_id(i).to_string();
        let (image, mut boxes) = match ds.image_path(i) {
            Some(path) => {
                let image = cxr::data::transform::load_image(path)?;
                let boxes = self.csv_boxes_for(&name, image.width, image.height)?;
                (image, boxes)
            }
            None => {
                // Arrays and phantoms: the source resizes; unit-range grey is the X-ray itself.
                let grey = Preprocess { channels: 1, size, normalization: Normalization::UnitRange };
                (Grey { width: size, height: size, data: ds.image(i, &grey, None)? }, Vec::new())
            }
        };
        let (own, (w, h)) = ds.boxes(i);
        for b in own {
            boxes.push((self.classifier.class_index(FINDINGS[b.finding])?, box_in_input(b, w, h, size)));
        }
        let stem = Path::new(&name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or(name);
        Ok(Item { name: stem, image, truth: Some(truth), boxes })
    }

    fn localising(&self) -> bool {
        self.csv_boxes.is_some() || matches!(self.args.data.as_deref(), Some(d) if d.starts_with("phantom"))
    }

    /// The classes to explain on one image.
    fn classes(&self, item: &Item, probabilities: &[f32]) -> Result<Vec<usize>> {
        let only = self.args.class.as_deref().map(|c| self.classifier.class_index(c)).transpose()?;
        if self.localising() {
            let mut classes: Vec<usize> =
                item.boxes.iter().map(|b| b.0).filter(|c| only.is_none_or(|o| o == *c)).collect();
            classes.sort_unstable();
            classes.dedup();
            return Ok(classes);
        }
        if let Some(c) = only {
            return Ok(vec![c]);
        }
        if self.args.above_threshold {
            let t = self.classifier.thresholds().unwrap_or_default();
            return Ok((0..probabilities.len()).filter(|&c| probabilities[c] >= t[c]).collect());
        }
        Ok(vec![argmax(probabilities)])
    }

    fn process(&mut self, items: &[Item]) -> Result<()> {
        let originals: Vec<Grey> = items.iter().map(|it| it.image.clone()).collect();
        let probabilities = self.classifier.probabilities(&originals)?;
        let mut targets = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let classes = self.classes(item, &probabilities[i])?;
            if classes.is_empty() {
                self.skipped += 1;
            }
            targets.extend(classes.into_iter().map(|c| (i, c)));
        }
        if targets.is_empty() {
            return Ok(());
        }
        let heatmaps = self.classifier.explain_batch(&originals, &targets, &self.options)?;
        for heat in &heatmaps {
            let item = &items[heat.map.image];
            self.score(item, heat);
            self.draw(item, heat, &probabilities[heat.map.image])?;
        }
        Ok(())
    }

    fn score(&mut self, item: &Item, heat: &Heatmap) {
        for (_, b) in item.boxes.iter().filter(|(c, _)| *c == heat.class) {
            self.scores.push(score(heat, &item.name, *b, self.args.iou_threshold));
        }
    }

    fn draw(&mut self, item: &Item, heat: &Heatmap, probabilities: &[f32]) -> Result<()> {
        let xray = self.classifier.resized(&item.image);
        let file = self.args.out.join(format!("{}_{}.png", item.name, images::file_safe(&heat.finding)));
        let image = match heat.validity().problem() {
            Some(problem) => {
                eprintln!("note: {} {}: {problem}; no image written", item.name, heat.finding);
                self.invalid += 1;
                None
            }
            None => {
                let rgb = cxr::explain::overlay(&xray, heat, self.colormap, self.args.alpha)?;
                rgb.write_png(&file)?;
                self.written += 1;
                Some(rgb)
            }
        };
        if self.args.panel && self.tiles.len() < self.args.panel_size {
            let image = image.unwrap_or_else(|| grey_rgb(&xray));
            let title = self.title(item, heat, probabilities);
            self.tiles.push(PanelTile { image, title });
        }
        Ok(())
    }

    fn title(&self, item: &Item, heat: &Heatmap, probabilities: &[f32]) -> Vec<String> {
        let labels = self.classifier.labels();
        let pred = match self.classifier.thresholds() {
            Some(t) => {
                let mut d: Vec<usize> = (0..labels.len()).filter(|&c| probabilities[c] >= t[c]).collect();
                d.sort_by(|a, b| probabilities[*b].total_cmp(&probabilities[*a]));
                let names: Vec<String> = d.iter().map(|&c| format!("{} {:.2}", labels[c], probabilities[c])).collect();
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            }
            None => {
                let c = argmax(probabilities);
                format!("top {} {:.2}", labels[c], probabilities[c])
            }
        };
        let shown = match heat.validity().problem() {
            Some(_) => format!("map: {} (empty map)", heat.finding),
            None => format!("map: {} p={:.2}", heat.finding, heat.probability),
        };
        let mut lines = vec![item.name.clone(), shown, format!("pred: {pred}")];
        if let Some(truth) = &item.truth {
            lines.push(format!("true: {}", if truth.is_empty() { "No Finding".into() } else { truth.join(", ") }));
        }
        lines
    }

    fn finish(self) -> Result<()> {
        let out = &self.args.out;
        eprintln!(
            "{} heatmaps written to {} ({} maps empty or not finite, not drawn; {} images with nothing to explain)",
            self.written,
            out.display(),
            self.invalid,
            self.skipped
        );
        if self.args.panel && !self.tiles.is_empty() {
            let heading = format!(
                "{} on {} ({}, {})",
                self.options.method.name(),
                self.classifier.architecture(),
                self.scores_layer(),
                self.classifier.path().file_name().unwrap_or_default().to_string_lossy()
            );
            let path = out.join("panel.png");
            cxr::explain::write_panel(&path, &self.tiles, self.args.panel_columns, &heading)?;
            eprintln!("panel: {}", path.display());
        }
        if self.localising() {
            self.report_localisation()?;
        }
        Ok(())
    }

    fn scores_layer(&self) -> String {
        self.options.layer.clone().unwrap_or_else(|| {
            cxr::explain::default_layer(self.classifier.model()).unwrap_or_else(|_| "default layer".into())
        })
    }

    fn report_localisation(&self) -> Result<()> {
        let summary = summarize(&self.scores);
        if self.args.json {
            println!(
                "{}",
                serde_json::to_string(&serde_json::json!({ "localization": summary, "boxes": self.scores }))?
            );
            return Ok(());
        }
        if summary.is_empty() {
            println!("no image had a box for the findings explained");
            return Ok(());
        }
        println!(
            "localisation ({}, pointing game = map peak inside the box; IoU of map >= {} x max):",
            self.options.method.name(),
            self.args.iou_threshold
        );
        println!(
            "  {:<20} {:>5} {:>6} {:>9} {:>8} {:>8}",
            "finding", "boxes", "scored", "hit rate", "chance", "mean IoU"
        );
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
        for s in &summary {
            println!(
                "  {:<20} {:>5} {:>6} {:>9} {:>8} {:>8}",
                s.finding,
                s.boxes,
                s.scored,
                fmt(s.hit_rate),
                fmt(s.chance),
                fmt(s.mean_iou)
            );
        }
        Ok(())
    }
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn grey_rgb(g: &Grey) -> RgbImage {
    let data = g.to_u8().into_iter().flat_map(|v| [v, v, v]).collect();
    RgbImage { width: g.width, height: g.height, data }
}
