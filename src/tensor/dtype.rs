//! Storage dtypes that weights may come in. Compute is always f32; f16 and bf16 are widened.

use crate::error::{Error, Result};

/// An element type weights can be stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Decodes `count` little-endian elements into f32.
    pub fn decode_le(self, bytes: &[u8], count: usize) -> Result<Vec<f32>> {
        if bytes.len() != count * self.size() {
            return Err(Error::InvalidArgument {
                op: "decode",
                detail: format!("{} bytes for {count} {self:?} elements (need {})", bytes.len(), count * self.size()),
            });
        }
        Ok(match self {
            DType::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            DType::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            DType::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        })
    }

    /// Encodes f32 values as little-endian bytes of this dtype (rounding to nearest even).
    pub fn encode_le(self, values: &[f32]) -> Vec<u8> {
        match self {
            DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            DType::BF16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        }
    }
}
