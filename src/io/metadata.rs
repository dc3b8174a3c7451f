//! Rewriting a checkpoint's metadata without touching its weights (`tools eval
//! --write-thresholds`): the header is re-encoded with the new `cxr` metadata and the tensor
//! bytes are copied verbatim behind it, then the file is replaced atomically.

use super::atomic::write_atomic;
use super::checkpoint::{load_checkpoint, CheckpointMeta, META_KEY};
use crate::error::{Error, Result};
use std::path::Path;

/// Applies `change` to the checkpoint's metadata and writes it back. The weights' bytes are
/// unchanged; the new file is validated before it replaces the old one.
pub fn update_meta(path: &Path, change: impl FnOnce(&mut CheckpointMeta)) -> Result<()> {
    let (file, mut meta) = load_checkpoint(path)?;
    drop(file); // the mapping; the file is re-read below and replaced by rename
    change(&mut meta);
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (mut header, data) = split_header(path, &bytes)?;
    let json = serde_json::to_string(&meta).map_err(|e| Error::format(path, format!("cannot encode metadata: {e}")))?;
    let object = header.as_object_mut().ok_or_else(|| Error::format(path, "header is not a JSON object"))?;
    let metadata = object.entry("__metadata__").or_insert_with(|| serde_json::json!({}));
    metadata
        .as_object_mut()
        .ok_or_else(|| Error::format(path, "__metadata__ is not a JSON object"))?
        .insert(META_KEY.to_string(), serde_json::Value::String(json));
    let out = join_header(path, &header, data)?;
    safetensors::SafeTensors::deserialize(&out)
        .map_err(|e| Error::format(path, format!("rewritten header does not validate: {e}")))?;
    write_atomic(path, &out)
}

/// The parsed header and the tensor bytes of a safetensors file.
fn split_header<'a>(path: &Path, bytes: &'a [u8]) -> Result<(serde_json::Value, &'a [u8])> {
    let truncated = || Error::format(path, "truncated safetensors header");
    let len = bytes.get(..8).ok_or_else(truncated)?;
    let len = usize::try_from(u64::from_le_bytes(len.try_into().expect("8 bytes"))).map_err(|_| truncated())?;
    let end = 8usize.checked_add(len).filter(|&e| e <= bytes.len()).ok_or_else(truncated)?;
    let header = serde_json::from_slice(&bytes[8..end])
        .map_err(|e| Error::format(path, format!("header is not valid JSON: {e}")))?;
    Ok((header, &bytes[end..]))
}

/// Length prefix, header padded with spaces to a multiple of 8 bytes (so f32 tensors stay
/// aligned for zero-copy mapping, as the safetensors writer does), then the data.
fn join_header(path: &Path, header: &serde_json::Value, data: &[u8]) -> Result<Vec<u8>> {
    let mut text = serde_json::to_vec(header).map_err(|e| Error::format(path, format!("cannot encode header: {e}")))?;
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + text.len() + data.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    Ok(out)
}
