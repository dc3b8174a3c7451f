//! [`Tensor`]: an f32 array with a shape, stored on a [`Device`], that records the op which made
//! it so autograd can run backward.
//!
//! Tensors are cheap handles (`Arc`). Data is contiguous row-major (NCHW for images). Reshape and
//! flatten share storage; every other op allocates its output.

mod dtype;
pub mod init;
mod shape;

pub use dtype::DType;
pub use shape::Shape;

use crate::autograd::{self, GradFn};
use crate::backend::{Backend, Device, PreparedCache, PreparedSlot, Storage};
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A process-unique tensor identity, used by autograd to key gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn next() -> TensorId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A tensor's data, shared by the tensors that view it (reshape, detach), with a version that
/// every write access bumps, so a backend's prepared form of the data (packed GEMM panels of a
/// weight) can tell when it went stale.
struct StorageCell {
    data: RwLock<Storage>,
    version: AtomicU64,
    prepared: PreparedCache,
}

impl StorageCell {
    fn new(storage: Storage) -> Arc<StorageCell> {
        Arc::new(StorageCell {
            data: RwLock::new(storage),
            version: AtomicU64::new(0),
            prepared: PreparedCache::default(),
        })
    }
}

pub(crate) struct TensorInner {
    id: TensorId,
    shape: Shape,
    device: Device,
    storage: Arc<StorageCell>,
    grad_fn: Option<Box<dyn GradFn>>,
    requires_grad: AtomicBool,
    retains_grad: AtomicBool,
    grad: Mutex<Option<Tensor>>,
}

/// An n-dimensional f32 array on a device, with autograd bookkeeping.
#[derive(Clone)]
pub struct Tensor(Arc<TensorInner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape().dims())
            .field("device", &self.device())
            .field("requires_grad", &self.requires_grad())
            .field("op", &self.0.grad_fn.as_ref().map(|g| g.name()))
            .finish()
    }
}

impl Tensor {
    // ---- construction -------------------------------------------------------------------------

    /// Wraps device storage as a leaf tensor. Errors if the element count does not match.
    pub fn from_storage(storage: Storage, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if storage.len() != shape.numel() {
            return Err(Error::ShapeMismatch {
                op: "from_storage",
                detail: format!("{} elements for shape {:?}", storage.len(), shape.dims()),
            });
        }
        let device = storage.device();
        Ok(Self::build(shape, device, StorageCell::new(storage), None, false))
    }

    fn build(
        shape: Shape,
        device: Device,
        storage: Arc<StorageCell>,
        grad_fn: Option<Box<dyn GradFn>>,
        requires_grad: bool,
    ) -> Tensor {
        Tensor(Arc::new(TensorInner {
            id: TensorId::next(),
            shape,
            device,
            storage,
            grad_fn,
            requires_grad: AtomicBool::new(requires_grad),
            retains_grad: AtomicBool::new(false),
            grad: Mutex::new(None),
        }))
    }

    /// The result of an op: records `grad_fn` when grad mode is on and any input requires grad.
    pub(crate) fn from_op(
        storage: Storage,
        shape: impl Into<Shape>,
        grad_fn: impl FnOnce() -> Box<dyn GradFn>,
        inputs: &[&Tensor],
    ) -> Tensor {
        let shape = shape.into();
        debug_assert_eq!(storage.len(), shape.numel());
        let device = storage.device();
        let track = autograd::is_grad_enabled() && inputs.iter().any(|t| t.requires_grad());
        let grad_fn = track.then(grad_fn);
        Self::build(shape, device, StorageCell::new(storage), grad_fn, track)
    }

    /// A tensor with the given shape from host data on the CPU.
    pub fn from_vec(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
        Self::from_vec_on(data, shape, Device::Cpu)
    }

    /// A tensor with the given shape from host data, copied to `device`.
    pub fn from_vec_on(data: Vec<f32>, shape: impl Into<Shape>, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.numel() {
            return Err(Error::ShapeMismatch {
                op: "from_vec",
                detail: format!("{} values for shape {:?} ({} elements)", data.len(), shape.dims(), shape.numel()),
            });
        }
        Self::from_storage(device.backend()?.copy_from_host(data)?, shape)
    }

    /// A tensor filled with `value`.
    pub fn full(shape: impl Into<Shape>, value: f32, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        Self::from_storage(device.backend()?.full(shape.numel(), value)?, shape)
    }

    /// A tensor of zeros.
    pub fn zeros(shape: impl Into<Shape>, device: Device) -> Result<Tensor> {
        Self::full(shape, 0.0, device)
    }

    /// A tensor of ones.
    pub fn ones(shape: impl Into<Shape>, device: Device) -> Result<Tensor> {
        Self::full(shape, 1.0, device)
    }

    /// A scalar (shape []).
    pub fn scalar(value: f32, device: Device) -> Result<Tensor> {
        Self::full(Shape::scalar(), value, device)
    }

    /// Reads little-endian f32, f16 or bf16 bytes (as stored in safetensors) widened to f32.
    pub fn from_le_bytes(bytes: &[u8], dtype: DType, shape: impl Into<Shape>, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        let data = dtype.decode_le(bytes, shape.numel())?;
        Self::from_vec_on(data, shape, device)
    }

    // ---- inspection ---------------------------------------------------------------------------

    /// The unique id autograd keys gradients by.
    pub fn id(&self) -> TensorId {
        self.0.id
    }
    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.0.shape
    }
    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.0.shape.dims()
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.shape.numel()
    }
    /// Where the data lives.
    pub fn device(&self) -> Device {
        self.0.device
    }
    /// The backend of the tensor's device.
    pub fn backend(&self) -> Result<&'static dyn Backend> {
        self.0.device.backend()
    }
    /// Read access to the storage.
    pub fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.data.read().unwrap_or_else(|e| e.into_inner())
    }
    /// Write access to the storage, for in-place updates of parameters and buffers. Writing to a
    /// tensor that a recorded graph still needs makes that graph's backward wrong, as in PyTorch.
    /// Any prepared form of the data (see [`prepared`](Self::prepared)) becomes stale.
    pub fn storage_mut(&self) -> RwLockWriteGuard<'_, Storage> {
        let guard = self.0.storage.data.write().unwrap_or_else(|e| e.into_inner());
        // Bumped while the write lock is held: a reader (who holds the read lock while it reads
        // the version and uses the prepared form) never sees a new version with old data or the
        // reverse.
        self.0.storage.version.fetch_add(1, Ordering::AcqRel);
        guard
    }
    /// Where a backend keeps a prepared form of this data (e.g. a weight packed for its GEMM),
    /// tagged with the data's current version. Call while holding [`storage`](Self::storage)'s
    /// guard, so the version matches the data being read.
    pub fn prepared(&self) -> PreparedSlot<'_> {
        PreparedSlot::new(self.0.storage.version.load(Ordering::Acquire), &self.0.storage.prepared)
    }
    /// Copies the data to a host Vec.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.backend()?.copy_to_host(&self.storage())
    }
    /// The single value of a one-element tensor.
    pub fn to_scalar(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::ShapeMismatch {
                op: "to_scalar",
                detail: format!("tensor of shape {:?} has {} elements", self.dims(), self.numel()),
            });
        }
        Ok(self.to_vec()?[0])
    }
    /// Copies the tensor to another device (a new leaf).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        Self::from_vec_on(self.to_vec()?, self.shape().clone(), device)
    }

    // ---- autograd -----------------------------------------------------------------------------

    /// True when gradients flow to this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.load(Ordering::Relaxed)
    }
    /// Marks a leaf tensor as a parameter whose gradient is accumulated by `backward`.
    /// Errors on a non-leaf (its flag follows its inputs).
    pub fn set_requires_grad(&self, on: bool) -> Result<()> {
        if self.0.grad_fn.is_some() {
            return Err(Error::Autograd("requires_grad can only be set on leaf tensors; use detach() first".into()));
        }
        self.0.requires_grad.store(on, Ordering::Relaxed);
        Ok(())
    }
    /// Builder form of [`set_requires_grad`](Self::set_requires_grad)`(true)`.
    pub fn with_grad(self) -> Result<Tensor> {
        self.set_requires_grad(true)?;
        Ok(self)
    }
    /// Asks `backward` to also keep this (intermediate) tensor's gradient in the returned
    /// [`Gradients`](crate::autograd::Gradients) and in [`grad`](Self::grad).
    pub fn retain_grad(&self) {
        self.0.retains_grad.store(true, Ordering::Relaxed);
    }
    pub(crate) fn retains_grad(&self) -> bool {
        self.0.retains_grad.load(Ordering::Relaxed)
    }
    /// True when the tensor was made by a recorded op (not a leaf).
    pub fn is_leaf(&self) -> bool {
        self.0.grad_fn.is_none()
    }
    pub(crate) fn grad_fn(&self) -> Option<&dyn GradFn> {
        self.0.grad_fn.as_deref()
    }
    /// The gradient accumulated by `backward` calls (leaves that require grad and retained
    /// tensors), or None if none has been computed since the last [`zero_grad`](Self::zero_grad).
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Clears the accumulated gradient (PyTorch's `zero_grad(set_to_none=True)`).
    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
    /// Adds `g` to the accumulated gradient (PyTorch accumulation semantics). The sum is a new
    /// tensor, so a gradient the caller read earlier with [`grad`](Self::grad) keeps its values
    /// (as PyTorch accumulates out of place while the old gradient is still referenced).
    pub(crate) fn accumulate_grad(&self, g: &Tensor) -> Result<()> {
        let mut slot = self.0.grad.lock().unwrap_or_else(|e| e.into_inner());
        // The first gradient is shared, not copied; a sum is a new tensor, so a gradient read
        // earlier (`let g = w.grad()`) never changes under its reader.
        let total = match slot.as_ref() {
            None => g.clone(),
            Some(existing) => {
                Tensor::from_storage(self.backend()?.add(&existing.storage(), &g.storage())?, self.shape().clone())?
            }
        };
        *slot = Some(total);
        Ok(())
    }
    /// A leaf sharing this tensor's data, cut from the graph (gradients stop here).
    pub fn detach(&self) -> Tensor {
        Self::build(self.shape().clone(), self.device(), self.0.storage.clone(), None, false)
    }
    /// Runs backward from this one-element tensor (a loss) with seed gradient 1.
    pub fn backward(&self) -> Result<autograd::Gradients> {
        autograd::backward(self, None)
    }
    /// Runs backward from this tensor with the given seed gradient (same shape).
    pub fn backward_with(&self, seed: &Tensor) -> Result<autograd::Gradients> {
        autograd::backward(self, Some(seed))
    }

    /// A tensor sharing this one's storage with another shape of the same element count.
    pub(crate) fn view_with(&self, shape: Shape, grad_fn: impl FnOnce() -> Box<dyn GradFn>) -> Tensor {
        let track = autograd::is_grad_enabled() && self.requires_grad();
        Self::build(shape, self.device(), self.0.storage.clone(), track.then(grad_fn), track)
    }
}
