//! The small toolkit every launch wrapper uses: allocation, device checks, and launches, all
//! through one [`Executor`].

use super::exec::{Arg, DeviceStorage, Executor};
use super::launch::{self, LaunchConfig};
use crate::backend::Storage;
use crate::error::{Error, Result};
use std::sync::Arc;

/// The executor the wrappers run on.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub exec: &'static dyn Executor,
}

impl Ctx {
    /// `len` uninitialised f32 on the device.
    pub fn alloc(&self, op: &'static str, len: usize) -> Result<DeviceStorage> {
        let bytes =
            len.checked_mul(4).ok_or_else(|| Error::InvalidArgument { op, detail: format!("{len} elements") })?;
        Ok(DeviceStorage { buf: Arc::new(self.exec.alloc(op, bytes)?), len })
    }
    /// `bytes` of scratch memory (f64 partial sums).
    pub fn scratch(&self, op: &'static str, bytes: usize) -> Result<DeviceStorage> {
        Ok(DeviceStorage { buf: Arc::new(self.exec.alloc(op, bytes)?), len: bytes / 4 })
    }
    /// Launches `kernel` unless there is nothing to do.
    pub fn launch(&self, kernel: &'static str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        self.exec.launch(kernel, &cfg, args)
    }
    /// A grid-stride launch over `n` elements; `n` is appended as the last argument.
    pub fn launch_1d(&self, op: &'static str, kernel: &'static str, n: usize, args: &[Arg]) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let cfg = launch::grid_stride(op, n)?;
        let mut all = args.to_vec();
        all.push(Arg::I32(n as i32));
        self.launch(kernel, cfg, &all)
    }
    /// The device data of `s`, or an error when it lives elsewhere.
    pub fn dev<'a>(&self, op: &'static str, s: &'a Storage) -> Result<&'a DeviceStorage> {
        match s {
            Storage::Cuda(d) if d.device() == self.exec.device() => Ok(d),
            other => {
                Err(Error::DeviceMismatch { op, a: self.exec.device().to_string(), b: other.device().to_string() })
            }
        }
    }
    /// Like [`Ctx::dev`] with `len` checked.
    pub fn dev_len<'a>(&self, op: &'static str, s: &'a Storage, len: usize) -> Result<&'a DeviceStorage> {
        let d = self.dev(op, s)?;
        if d.len != len {
            return Err(Error::ShapeMismatch { op, detail: format!("expected {len} elements, got {}", d.len) });
        }
        Ok(d)
    }
    /// Mutable device data of `s`, copied first when another storage shares the buffer (copy on
    /// write), so an in-place update never shows through a clone.
    pub fn dev_mut<'a>(&self, op: &'static str, s: &'a mut Storage) -> Result<&'a mut DeviceStorage> {
        self.dev(op, s)?;
        let Storage::Cuda(d) = s else { unreachable!("checked by dev") };
        if Arc::strong_count(&d.buf) > 1 {
            *d = self.copy(op, d)?;
        }
        Ok(d)
    }
    /// A fresh copy of `x`.
    pub fn copy(&self, op: &'static str, x: &DeviceStorage) -> Result<DeviceStorage> {
        let y = self.alloc(op, x.len)?;
        self.launch_1d(op, "copy_f32", x.len, &[y.arg(), x.arg()])?;
        Ok(y)
    }
    /// `len` copies of `value`.
    pub fn full(&self, op: &'static str, len: usize, value: f32) -> Result<DeviceStorage> {
        let y = self.alloc(op, len)?;
        self.launch_1d(op, "fill_f32", len, &[y.arg(), Arg::F32(value)])?;
        Ok(y)
    }
    /// Host -> device.
    pub fn upload(&self, op: &'static str, data: &[f32]) -> Result<DeviceStorage> {
        let y = self.alloc(op, data.len())?;
        self.exec.upload(&y.buf, data)?;
        Ok(y)
    }
    /// Device -> host.
    pub fn download(&self, x: &DeviceStorage) -> Result<Vec<f32>> {
        let mut bytes = vec![0u8; x.len * 4];
        self.exec.download(&x.buf, 0, &mut bytes)?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
    /// One f64 at the start of a scratch buffer.
    pub fn download_f64(&self, x: &DeviceStorage) -> Result<f64> {
        let mut bytes = [0u8; 8];
        self.exec.download(&x.buf, 0, &mut bytes)?;
        Ok(f64::from_le_bytes(bytes))
    }
}

/// Wraps device data as a [`Storage`].
pub fn storage(d: DeviceStorage) -> Storage {
    Storage::Cuda(d)
}
