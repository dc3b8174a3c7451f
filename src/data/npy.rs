//! A small `.npy` header parser: just what MedMNIST's uint8 arrays need.
//!
//! Format (NumPy's `format.py`): the magic `\x93NUMPY`, a major and minor version byte, the
//! header length (u16 little endian for version 1, u32 for versions 2 and 3), then an ASCII
//! Python dict literal `{'descr': '|u1', 'fortran_order': False, 'shape': (N, H, W), }` padded
//! with spaces and a newline, then the raw C-order data.

/// A parsed `.npy` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// The dtype string, e.g. `|u1` or `<f4`.
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
    /// Byte offset of the data from the start of the `.npy` stream.
    pub data_offset: usize,
}

impl NpyHeader {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// Number of bytes needed to know the header length (magic + version + length field).
pub const PREAMBLE: usize = 12;

/// The total header length (including the preamble) given at least the first 12 bytes.
pub fn header_len(prefix: &[u8]) -> Result<usize, String> {
    if prefix.len() < 10 {
        return Err(format!("too short for an .npy header ({} bytes)", prefix.len()));
    }
    if &prefix[..6] != MAGIC {
        return Err("not an .npy array (bad magic)".into());
    }
    match prefix[6] {
        1 => Ok(10 + u16::from_le_bytes([prefix[8], prefix[9]]) as usize),
        2 | 3 => {
            if prefix.len() < 12 {
                return Err("truncated .npy header".into());
            }
            Ok(12 + u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize)
        }
        v => Err(format!("unsupported .npy version {v}.{}", prefix[7])),
    }
}

/// Parses a full header (`bytes` holds at least [`header_len`] bytes).
pub fn parse_header(bytes: &[u8]) -> Result<NpyHeader, String> {
    let total = header_len(bytes)?;
    if bytes.len() < total {
        return Err(format!("truncated .npy header: {} of {total} bytes", bytes.len()));
    }
    let start = if bytes[6] == 1 { 10 } else { 12 };
    let text = std::str::from_utf8(&bytes[start..total]).map_err(|_| "header is not text".to_string())?;
    let descr = dict_value(text, "descr")?;
    let descr = descr.trim().trim_matches(|c| c == '\'' || c == '"').to_string();
    let fortran = match dict_value(text, "fortran_order")?.trim() {
        "False" => false,
        "True" => true,
        other => return Err(format!("bad fortran_order {other:?}")),
    };
    let shape_text = dict_value(text, "shape")?;
    let inner = shape_text
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("bad shape {shape_text:?}"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>().map_err(|_| format!("bad shape {shape_text:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NpyHeader { descr, fortran_order: fortran, shape, data_offset: total })
}

/// The raw text of `key`'s value in a Python dict literal (up to the next top-level comma).
fn dict_value<'a>(text: &'a str, key: &str) -> Result<&'a str, String> {
    let pat1 = format!("'{key}'");
    let pat2 = format!("\"{key}\"");
    let pos = text.find(&pat1).or_else(|| text.find(&pat2)).ok_or_else(|| format!("header has no '{key}'"))?;
    let rest = &text[pos + pat1.len()..];
    let rest = rest.trim_start().strip_prefix(':').ok_or_else(|| format!("malformed header near '{key}'"))?;
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Ok(&rest[..i]),
            _ => {}
        }
    }
    Err(format!("malformed header near '{key}'"))
}

/// Writes an `.npy` version 1 header for a C-order array (for tests and tools).
pub fn write_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape_text = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    dict.push_str(&" ".repeat(pad));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let h = write_header("|u1", &[3, 28, 28]);
        assert_eq!(h.len() % 64, 0);
        let p = parse_header(&h).unwrap();
        assert_eq!(p.descr, "|u1");
        assert!(!p.fortran_order);
        assert_eq!(p.shape, vec![3, 28, 28]);
        assert_eq!(p.data_offset, h.len());
        let p1 = parse_header(&write_header("<f4", &[5])).unwrap();
        assert_eq!(p1.shape, vec![5]);
        assert!(parse_header(b"PK\x03\x04nonsense").is_err());
    }
}
