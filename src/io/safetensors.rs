//! safetensors weight files, read through a memory map.
//!
//! Opening validates the whole header before any tensor is touched: its length, UTF-8, JSON,
//! duplicate names, dtypes and shapes against byte ranges, and that ranges neither overlap nor run
//! past the end (the `safetensors` crate's validation, plus the duplicate check it lacks). f32
//! tensors whose bytes are 4-byte aligned are borrowed from the mapping without a copy; f16, bf16
//! and f64 are converted to f32.
//!
//! Like every mmap-based loader, this assumes the file is not rewritten by another process while
//! mapped; cxr itself only ever replaces files atomically (a new inode), which is safe.

use crate::backend::{Device, MappedF32, Storage};
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::tensor::{DType, Tensor};
use safetensors::tensor::{Dtype as StDtype, SafeTensorError, SafeTensors};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One tensor's record in a weight file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    /// The dtype as the file names it (`F32`, `F16`, `BF16`, `I64`, ...).
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Byte range inside the mapping.
    start: usize,
    end: usize,
}

impl Entry {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Bytes of data.
    pub fn byte_len(&self) -> usize {
        self.end - self.start
    }
}

/// An open, validated safetensors file.
pub struct WeightFile {
    path: PathBuf,
    map: Arc<memmap2::Mmap>,
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightFile").field("path", &self.path).field("tensors", &self.entries.len()).finish()
    }
}

impl WeightFile {
    /// Maps and validates `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<WeightFile> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len < 8 {
            return Err(Error::format(
                &path,
                format!("{len} bytes is too short for a safetensors file (not safetensors?)"),
            ));
        }
        // SAFETY: the mapping is read-only and private to this process; see the module
        // documentation for the (universal) assumption that the file is not rewritten in place.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let map = Arc::new(map);
        check_duplicate_names(&path, &map)?;
        let st = SafeTensors::deserialize(&map).map_err(|e| Error::format(&path, describe(e)))?;
        let base = map.as_ptr() as usize;
        let mut entries: Vec<Entry> = st
            .iter()
            .map(|(name, view)| {
                let start = view.data().as_ptr() as usize - base;
                Entry {
                    name: name.to_string(),
                    dtype: format!("{:?}", view.dtype()),
                    shape: view.shape().to_vec(),
                    start,
                    end: start + view.data().len(),
                }
            })
            .collect();
        entries.sort_by_key(|e| e.start);
        let (_, meta) = SafeTensors::read_metadata(&map).map_err(|e| Error::format(&path, describe(e)))?;
        let metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
        drop(st);
        let index = entries.iter().enumerate().map(|(i, e)| (e.name.clone(), i)).collect();
        Ok(WeightFile { path, map, entries, index, metadata })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Every tensor record, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
    /// The record of `name`.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.index.get(name).map(|&i| &self.entries[i])
    }
    /// The `__metadata__` string map.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The tensor `name` as f32 storage: borrowed from the mapping when it is aligned f32 data,
    /// converted otherwise. Returns the storage and whether it was zero-copy.
    pub fn storage(&self, name: &str) -> Result<(Storage, bool)> {
        let e = self.entry(name).ok_or_else(|| Error::format(&self.path, format!("no tensor named '{name}'")))?;
        let bytes = &self.map[e.start..e.end];
        let dtype = match e.dtype.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F64" => {
                let v = bytes
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("chunks of 8")) as f32)
                    .collect();
                return Ok((Storage::Cpu(v), false));
            }
            other => {
                return Err(Error::format(
                    &self.path,
                    format!("tensor '{name}' has dtype {other}; weights must be F32, F16, BF16 or F64"),
                ))
            }
        };
        if dtype == DType::F32 {
            if let Some(m) = MappedF32::new(self.map.clone(), e.start, e.numel()) {
                return Ok((Storage::Mapped(m), true));
            }
        }
        let values = dtype.decode_le(bytes, e.numel()).map_err(|err| Error::format(&self.path, err.to_string()))?;
        Ok((Storage::Cpu(values), false))
    }

    /// The tensor `name` on the CPU.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let (storage, _) = self.storage(name)?;
        let shape = self.entry(name).map(|e| e.shape.clone()).unwrap_or_default();
        Tensor::from_storage(storage, shape)
    }
}

/// Human wording for the crate's validation errors.
fn describe(e: SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => "file too short to hold a safetensors header (not safetensors?)".into(),
        SafeTensorError::HeaderTooLarge => "header length is implausibly large (not safetensors, or corrupt)".into(),
        SafeTensorError::InvalidHeaderLength => "header length runs past the end of the file (truncated?)".into(),
        SafeTensorError::InvalidHeader(_) => "header is not valid UTF-8".into(),
        SafeTensorError::InvalidHeaderDeserialization(j) => format!("header is not valid safetensors JSON: {j}"),
        SafeTensorError::MetadataIncompleteBuffer => {
            "tensor data does not end where the file does (truncated, or extra bytes)".into()
        }
        SafeTensorError::InvalidOffset(name) => format!("tensor '{name}' has overlapping or out-of-order byte offsets"),
        SafeTensorError::TensorInvalidInfo => "a tensor's shape and dtype do not match its byte range".into(),
        SafeTensorError::ValidationOverflow => "a tensor's size overflows".into(),
        other => format!("invalid safetensors file: {other}"),
    }
}

/// Rejects a header that names a tensor twice (JSON parsers silently keep the last one).
fn check_duplicate_names(path: &Path, map: &[u8]) -> Result<()> {
    let n = u64::from_le_bytes(map[..8].try_into().expect("length checked by caller"));
    let Some(header) = usize::try_from(n).ok().and_then(|n| map.get(8..8usize.checked_add(n)?)) else {
        return Ok(()); // the crate's validation reports the bad length with a precise message
    };
    let Ok(text) = std::str::from_utf8(header) else { return Ok(()) };
    let mut de = serde_json::Deserializer::from_str(text);
    match serde::Deserialize::deserialize(&mut de) {
        Ok(UniqueKeys) => Ok(()),
        Err(e) if e.to_string().starts_with(DUPLICATE) => Err(Error::format(path, e.to_string())),
        Err(_) => Ok(()), // malformed JSON: reported by the crate's validation
    }
}

const DUPLICATE: &str = "duplicate tensor name";

/// Deserializes a JSON object only to check that no key repeats.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<UniqueKeys, A::Error> {
                let mut seen = HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!("{DUPLICATE} '{key}' in the header")));
                    }
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                Ok(UniqueKeys)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// How strictly weights must fit a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Name prefix of the classification head (`fc`, `classifier`). When set, a head whose class
    /// count differs from the file's keeps the model's fresh initialisation and is reported,
    /// instead of being an error (fine-tuning ImageNet weights on 14 findings).
    pub replaceable_head: Option<String>,
    /// Sum a 3-channel stem's weights over the input channels when the model takes 1 channel
    /// (grey X-rays with RGB-pretrained weights).
    pub adapt_input_channels: bool,
}

/// What a load did, for the log.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Tensors copied or borrowed into the model.
    pub loaded: usize,
    /// Of those, tensors borrowed from the mapping without a copy.
    pub zero_copy: usize,
    /// Head tensors left at their fresh initialisation (`name: file shape -> model shape`).
    pub reinitialized: Vec<String>,
    /// Stem tensors whose input channels were summed.
    pub channel_summed: Vec<String>,
    /// File tensors deliberately ignored (`num_batches_tracked`).
    pub ignored: Vec<String>,
}

/// Loads every parameter and buffer of `model` from `file`, checking names, shapes and dtypes.
/// All problems are reported together in one [`Error::WeightsMismatch`].
pub fn load_into(model: &dyn Module, file: &WeightFile, opts: &LoadOptions) -> Result<LoadReport> {
    let mut report = LoadReport::default();
    let mut problems = Problems::default();
    let mut plan: Vec<(Tensor, Storage, bool)> = Vec::new();
    let model_tensors = model.named_tensors();
    let model_names: HashSet<&str> = model_tensors.iter().map(|t| t.name.as_str()).collect();

    for t in &model_tensors {
        let Some(entry) = file.entry(&t.name) else {
            problems.missing.push(format!("{} {:?}", t.name, t.tensor.dims()));
            continue;
        };
        let want = t.tensor.dims();
        let is_head = opts.replaceable_head.as_deref().is_some_and(|h| t.name.starts_with(&format!("{h}.")));
        if entry.shape.as_slice() == want {
            match file.storage(&t.name) {
                Ok((s, zero_copy)) => plan.push((t.tensor.clone(), s, zero_copy)),
                Err(e) => problems.mismatched.push(format!("{}: {}", t.name, strip_path(&e, file.path()))),
            }
        } else if is_head {
            report.reinitialized.push(format!("{}: {:?} in file -> {:?}", t.name, entry.shape, want));
        } else if opts.adapt_input_channels && is_rgb_to_grey(&entry.shape, want) {
            match file.tensor(&t.name).and_then(|w| sum_input_channels(&w)) {
                Ok(s) => {
                    report.channel_summed.push(t.name.clone());
                    plan.push((t.tensor.clone(), s, false));
                }
                Err(e) => problems.mismatched.push(format!("{}: {}", t.name, strip_path(&e, file.path()))),
            }
        } else {
            problems.mismatched.push(format!("{}: file has {:?}, model needs {:?}", t.name, entry.shape, want));
        }
    }
    for e in file.entries() {
        if model_names.contains(e.name.as_str()) {
            continue;
        }
        if e.name.ends_with("num_batches_tracked") {
            report.ignored.push(e.name.clone());
        } else {
            problems.unexpected.push(format!("{} {:?}", e.name, e.shape));
        }
    }
    if !problems.is_empty() {
        return Err(Error::WeightsMismatch { path: file.path().to_path_buf(), report: problems.to_string() });
    }
    for (tensor, storage, zero_copy) in plan {
        if tensor.device() != Device::Cpu {
            let host = storage.host().map(<[f32]>::to_vec).unwrap_or_default();
            *tensor.storage_mut() = tensor.backend()?.copy_from_host(host)?;
        } else {
            *tensor.storage_mut() = storage;
        }
        report.loaded += 1;
        report.zero_copy += usize::from(zero_copy);
    }
    Ok(report)
}

fn strip_path(e: &Error, path: &Path) -> String {
    let s = e.to_string();
    s.strip_prefix(&format!("{}: ", path.display())).map(str::to_string).unwrap_or(s)
}

fn is_rgb_to_grey(file: &[usize], model: &[usize]) -> bool {
    file.len() == 4
        && model.len() == 4
        && file[1] == 3
        && model[1] == 1
        && file[0] == model[0]
        && file[2..] == model[2..]
}

/// [O, 3, k, k] -> [O, 1, k, k] by summing over the input channels.
fn sum_input_channels(w: &Tensor) -> Result<Storage> {
    let d = w.dims();
    let plane = d[2] * d[3];
    let v = w.to_vec()?;
    let mut out = vec![0.0; d[0] * plane];
    for o in 0..d[0] {
        for c in 0..d[1] {
            let src = &v[(o * d[1] + c) * plane..][..plane];
            out[o * plane..][..plane].iter_mut().zip(src).for_each(|(a, &b)| *a += b);
        }
    }
    Ok(Storage::Cpu(out))
}

#[derive(Default)]
struct Problems {
    missing: Vec<String>,
    unexpected: Vec<String>,
    mismatched: Vec<String>,
}

impl Problems {
    fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (title, list) in [
            ("missing from the file", &self.missing),
            ("in the file but not in the model", &self.unexpected),
            ("wrong shape or dtype", &self.mismatched),
        ] {
            if !list.is_empty() {
                writeln!(f, "  {} {title}:", list.len())?;
                for item in list {
                    writeln!(f, "    {item}")?;
                }
            }
        }
        Ok(())
    }
}

/// A tensor prepared for writing.
pub(crate) struct OutTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl safetensors::View for &OutTensor {
    fn dtype(&self) -> StDtype {
        match self.dtype {
            DType::F32 => StDtype::F32,
            DType::F16 => StDtype::F16,
            DType::BF16 => StDtype::BF16,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Serialises named tensors and string metadata to safetensors bytes.
pub(crate) fn serialize(tensors: &[OutTensor], metadata: HashMap<String, String>, path: &Path) -> Result<Vec<u8>> {
    let views = tensors.iter().map(|t| (t.name.clone(), t));
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::format(path, format!("cannot serialise: {e}")))
}
