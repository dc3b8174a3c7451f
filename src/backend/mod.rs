//! Devices and the [`Backend`] trait: every primitive op a device must provide, forward and
//! backward, on device-resident [`Storage`].
//!
//! Autograd, layers and models only ever call these methods, so a new device (the CUDA backend)
//! plugs in by implementing this trait and adding a [`Storage`] variant; nothing above changes.
//! Methods take sizes explicitly: the op layer (`crate::ops`) has already checked shapes, so a
//! backend only validates that storages belong to it.

pub mod cpu;
pub mod cuda;
pub mod geometry;
pub mod philox;

mod prepared;

use crate::error::{Error, Result};
pub use geometry::{Conv2dGeometry, Pool2dGeometry};
pub use prepared::{PreparedCache, PreparedSlot};

/// Where a tensor's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory, computed by the CPU backend.
    #[default]
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(usize),
    /// The CPU emulation of the CUDA kernels (tests only: feature `cuda-emu`).
    #[cfg(feature = "cuda-emu")]
    CudaEmu,
}

impl Device {
    /// The backend that computes on this device.
    pub fn backend(self) -> Result<&'static dyn Backend> {
        match self {
            Device::Cpu => Ok(cpu::CpuBackend::global()),
            Device::Cuda(n) => Ok(cuda::gpu::backend(n)?),
            #[cfg(feature = "cuda-emu")]
            Device::CudaEmu => Ok(cuda::emu::backend()),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = Error;
    /// `cpu`, `cuda` (= `cuda:0`), `cuda:N` (and `cuda-emu` with the `cuda-emu` feature).
    fn from_str(s: &str) -> Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            #[cfg(feature = "cuda-emu")]
            "cuda-emu" => Ok(Device::CudaEmu),
            _ => s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Device::Cuda).ok_or_else(|| {
                Error::InvalidArgument {
                    op: "device",
                    detail: format!("'{s}' is not a device (expected cpu, cuda or cuda:N)"),
                }
            }),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            #[cfg(feature = "cuda-emu")]
            Device::CudaEmu => write!(f, "cuda-emu"),
        }
    }
}

/// Device-resident f32 data. One variant per kind of memory.
#[derive(Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(Vec<f32>),
    /// Host memory borrowed read-only from a memory-mapped weight file (zero-copy loading).
    /// [`Storage::host_mut`] turns it into `Cpu` on the first write.
    Mapped(MappedF32),
    /// CUDA device memory (or its CPU emulation).
    Cuda(cuda::DeviceStorage),
}

impl Clone for Storage {
    fn clone(&self) -> Storage {
        match self {
            Storage::Cpu(v) => Storage::Cpu(cpu::buffers::copy_of(v)),
            Storage::Mapped(m) => Storage::Mapped(m.clone()),
            Storage::Cuda(d) => Storage::Cuda(d.clone()),
        }
    }
}

impl Drop for Storage {
    /// Host vectors go back to the CPU backend's buffer pool for the next op of that size.
    fn drop(&mut self) {
        if let Storage::Cpu(v) = self {
            cpu::buffers::recycle(std::mem::take(v));
        }
    }
}

impl Storage {
    /// Number of f32 elements held.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(v) => v.len(),
            Storage::Mapped(m) => m.len(),
            Storage::Cuda(d) => d.len(),
        }
    }
    /// True when no elements are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The device the data lives on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) | Storage::Mapped(_) => Device::Cpu,
            Storage::Cuda(d) => d.device(),
        }
    }
    /// The data as a host slice, when it lives in host memory.
    pub fn host(&self) -> Option<&[f32]> {
        match self {
            Storage::Cpu(v) => Some(v),
            Storage::Mapped(m) => Some(m.as_slice()),
            Storage::Cuda(_) => None,
        }
    }
    /// The data as a mutable host Vec, when it lives in host memory; mapped data is copied out of
    /// the file first (copy on write).
    pub fn host_mut(&mut self) -> Option<&mut Vec<f32>> {
        if let Storage::Mapped(m) = self {
            *self = Storage::Cpu(m.as_slice().to_vec());
        }
        match self {
            Storage::Cpu(v) => Some(v),
            Storage::Mapped(_) | Storage::Cuda(_) => None,
        }
    }
}

/// A run of little-endian f32 values inside a memory-mapped file, checked aligned on creation.
#[derive(Clone)]
pub struct MappedF32 {
    map: std::sync::Arc<memmap2::Mmap>,
    offset: usize,
    len: usize,
}

impl std::fmt::Debug for MappedF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedF32 {{ offset: {}, len: {} }}", self.offset, self.len)
    }
}

impl MappedF32 {
    /// Borrows `len` f32 values at byte `offset` of `map`, or returns None when they are out of
    /// bounds, not 4-byte aligned, or the machine is big-endian (then the caller copies).
    pub fn new(map: std::sync::Arc<memmap2::Mmap>, offset: usize, len: usize) -> Option<MappedF32> {
        let end = offset.checked_add(len.checked_mul(4)?)?;
        let aligned = (map.as_ptr() as usize + offset).is_multiple_of(std::mem::align_of::<f32>());
        (end <= map.len() && aligned && cfg!(target_endian = "little")).then_some(MappedF32 { map, offset, len })
    }
    /// Number of f32 values.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: `new` checked that offset..offset + 4*len lies inside the mapping and that the
        // start is f32-aligned; every bit pattern is a valid f32 and the machine is little-endian
        // as the file format is; the Arc keeps the mapping alive as long as this slice's owner.
        // The mapping is read-only (a file changed underneath by another process is outside what
        // any mmap-based loader can guard against, and is documented in io::safetensors).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.offset).cast::<f32>(), self.len) }
    }
}

/// Shape of a batch-norm input seen as [N, C, plane] (plane = H*W, or 1 for BatchNorm1d).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormShape {
    pub batch: usize,
    pub channels: usize,
    pub plane: usize,
}

impl NormShape {
    /// Values averaged per channel.
    pub fn per_channel(&self) -> usize {
        self.batch * self.plane
    }
    /// Total elements.
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.plane
    }
    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a training-mode batch norm forward returns: the output and the statistics its backward
/// needs (per-channel batch mean and 1/sqrt(var + eps)).
#[derive(Debug)]
pub struct BatchNormSaved {
    pub output: Storage,
    pub mean: Storage,
    pub inv_std: Storage,
}

/// Gradients of a batch norm.
#[derive(Debug)]
pub struct BatchNormGrads {
    pub input: Storage,
    pub gamma: Storage,
    pub beta: Storage,
}

/// The parameters and saved batch statistics `batch_norm_relu_backward` reads.
#[derive(Debug, Clone, Copy)]
pub struct BatchNormRelu<'a> {
    pub gamma: &'a Storage,
    pub beta: &'a Storage,
    pub mean: &'a Storage,
    pub inv_std: &'a Storage,
}

/// Gradients of a batch norm followed by an optional residual add and a ReLU.
#[derive(Debug)]
pub struct BatchNormReluGrads {
    pub norm: BatchNormGrads,
    /// The residual's gradient, when the forward had one.
    pub residual: Option<Storage>,
}

/// Per-class weights of BCE-with-logits, as torch.nn.BCEWithLogitsLoss takes them: `pos_weight`
/// scales the positive term, `class_weight` (torch's `weight`) the whole loss of a class.
#[derive(Debug, Clone, Copy, Default)]
pub struct BceWeights<'a> {
    pub pos_weight: Option<&'a Storage>,
    pub class_weight: Option<&'a Storage>,
}

/// Hyper-parameters of one SGD step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    pub lr: f32,
    pub momentum: f32,
    pub dampening: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
}

/// Hyper-parameters of one Adam or AdamW step. `step` counts from 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// AdamW: decay the weights directly instead of adding `weight_decay * p` to the gradient.
    pub decoupled: bool,
    pub step: u64,
}

/// How the second operand of a matmul is stored.
pub use cpu::gemm::Layout;

/// What [`Backend::conv2d_forward_fused`] applies after the convolution, in order.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConvEpilogue<'a> {
    /// Per output channel.
    pub bias: Option<&'a Storage>,
    /// An eval-mode batch norm over the output channels.
    pub norm: Option<EvalNorm<'a>>,
    /// Same shape as the output (a residual connection).
    pub residual: Option<&'a Storage>,
    /// max(v, 0) last.
    pub relu: bool,
}

/// The parameters of an eval-mode batch norm: `(x - mean) / sqrt(var + eps) * gamma + beta`.
#[derive(Debug, Clone, Copy)]
pub struct EvalNorm<'a> {
    pub gamma: &'a Storage,
    pub beta: &'a Storage,
    pub running_mean: &'a Storage,
    pub running_var: &'a Storage,
    pub eps: f32,
}

/// Every primitive a device provides. All outputs are freshly allocated unless the name says
/// `_assign`. Errors: a storage from another device, or device failures (memory exhaustion).
#[allow(clippy::too_many_arguments)]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The device this backend computes on.
    fn device(&self) -> Device;

    // ---- memory -------------------------------------------------------------------------------
    /// Copies host data to the device.
    fn copy_from_host(&self, data: Vec<f32>) -> Result<Storage>;
    /// Copies device data to the host.
    fn copy_to_host(&self, s: &Storage) -> Result<Vec<f32>>;
    /// `len` copies of `value`.
    fn full(&self, len: usize, value: f32) -> Result<Storage>;

    // ---- elementwise (ops/elementwise.rs, ops/activation.rs) -----------------------------------
    /// a + b.
    fn add(&self, a: &Storage, b: &Storage) -> Result<Storage>;
    /// dst += src (gradient accumulation).
    fn add_assign(&self, dst: &mut Storage, src: &Storage) -> Result<()>;
    /// a * b elementwise.
    fn mul(&self, a: &Storage, b: &Storage) -> Result<Storage>;
    /// a * s.
    fn scale(&self, a: &Storage, s: f32) -> Result<Storage>;
    /// max(x, 0).
    fn relu(&self, x: &Storage) -> Result<Storage>;
    /// dy where y > 0, else 0 (y is the ReLU output).
    fn relu_backward(&self, y: &Storage, dy: &Storage) -> Result<Storage>;
    /// 1 / (1 + exp(-x)).
    fn sigmoid(&self, x: &Storage) -> Result<Storage>;
    /// dy * y * (1 - y) (y is the sigmoid output).
    fn sigmoid_backward(&self, y: &Storage, dy: &Storage) -> Result<Storage>;
    /// Inverted-dropout mask: 0 with probability p, else 1/(1-p); element i from Philox(seed, i).
    fn dropout_mask(&self, len: usize, p: f32, seed: u64) -> Result<Storage>;
    /// Sum of every element.
    fn sum_all(&self, x: &Storage) -> Result<f32>;
    /// True when every element is finite.
    fn all_finite(&self, x: &Storage) -> Result<bool>;

    // ---- linear algebra (ops/matmul.rs) --------------------------------------------------------
    /// C[m x n] = op(A)[m x k] * op(B)[k x n], row-major, A and B stored as `a_layout`/`b_layout`.
    fn matmul(
        &self,
        a: &Storage,
        a_layout: Layout,
        b: &Storage,
        b_layout: Layout,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<Storage>;
    /// x[rows x cols] + bias[cols] broadcast over rows, in place.
    fn add_row_bias_assign(&self, x: &mut Storage, bias: &Storage, rows: usize, cols: usize) -> Result<()>;
    /// Column sums of x[rows x cols] -> [cols].
    fn sum_rows(&self, x: &Storage, rows: usize, cols: usize) -> Result<Storage>;
    /// Transpose of x[rows x cols] -> [cols x rows].
    fn transpose2d(&self, x: &Storage, rows: usize, cols: usize) -> Result<Storage>;

    // ---- convolution (ops/conv.rs) -------------------------------------------------------------
    /// y = conv2d(x, w) + bias.
    fn conv2d_forward(&self, g: &Conv2dGeometry, x: &Storage, w: &Storage, bias: Option<&Storage>) -> Result<Storage>;
    /// y = relu?(norm?(conv2d(x, w) + bias) + residual), where `residual` has y's shape and
    /// `norm` is an eval-mode batch norm over the output channels. `w_prepared` is
    /// where the backend may keep a form of `w` it computes faster with (the CPU keeps its
    /// packed GEMM panels there, so inference packs each layer once). The default runs the
    /// separate primitives.
    fn conv2d_forward_fused(
        &self,
        g: &Conv2dGeometry,
        x: &Storage,
        w: &Storage,
        w_prepared: PreparedSlot<'_>,
        finish: ConvEpilogue<'_>,
    ) -> Result<Storage> {
        let _ = w_prepared;
        let mut y = self.conv2d_forward(g, x, w, finish.bias)?;
        if let Some(n) = finish.norm {
            let s = NormShape { batch: g.batch, channels: g.out_channels, plane: g.out_h() * g.out_w() };
            y = self.batch_norm_eval(s, &y, n.gamma, n.beta, n.running_mean, n.running_var, n.eps)?;
        }
        if let Some(residual) = finish.residual {
            self.add_assign(&mut y, residual)?;
        }
        if finish.relu {
            y = self.relu(&y)?;
        }
        Ok(y)
    }
    /// Gradient of conv2d w.r.t. its input.
    fn conv2d_backward_input(&self, g: &Conv2dGeometry, dy: &Storage, w: &Storage) -> Result<Storage>;
    /// Gradient of conv2d w.r.t. its weight.
    fn conv2d_backward_weight(&self, g: &Conv2dGeometry, x: &Storage, dy: &Storage) -> Result<Storage>;
    /// Per-channel sums of x[N, C, plane] -> [C] (conv bias gradient).
    fn channel_sum(&self, x: &Storage, batch: usize, channels: usize, plane: usize) -> Result<Storage>;

    // ---- batch norm (ops/norm.rs) --------------------------------------------------------------
    /// Training mode: normalises with batch statistics and updates the running statistics in place
    /// (momentum-weighted, unbiased running variance, as PyTorch).
    fn batch_norm_train(
        &self,
        s: NormShape,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        running_mean: &mut Storage,
        running_var: &mut Storage,
        momentum: f32,
        eps: f32,
    ) -> Result<BatchNormSaved>;
    /// Eval mode: normalises with the running statistics.
    fn batch_norm_eval(
        &self,
        s: NormShape,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        running_mean: &Storage,
        running_var: &Storage,
        eps: f32,
    ) -> Result<Storage>;
    /// Eval mode followed by ReLU. The default runs the two primitives; a backend may fuse them.
    fn batch_norm_eval_relu(
        &self,
        s: NormShape,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        running_mean: &Storage,
        running_var: &Storage,
        eps: f32,
    ) -> Result<Storage> {
        self.relu(&self.batch_norm_eval(s, x, gamma, beta, running_mean, running_var, eps)?)
    }
    /// `batch_norm_eval_relu` of the channel concatenation of `parts` ([N, C_i, plane] each),
    /// which a backend may compute without building the concatenation.
    fn concat_batch_norm_eval_relu(
        &self,
        parts: &[(&Storage, usize)],
        s: NormShape,
        gamma: &Storage,
        beta: &Storage,
        running_mean: &Storage,
        running_var: &Storage,
        eps: f32,
    ) -> Result<Storage> {
        let x = self.concat_channels(parts, s.batch, s.plane)?;
        self.batch_norm_eval_relu(s, &x, gamma, beta, running_mean, running_var, eps)
    }
    /// Backward of batch norm given the mean and 1/std used in the forward. `batch_stats` is true
    /// when those came from the batch (training mode: gradient flows through the statistics), false
    /// when they were the running statistics (eval mode: an affine map).
    fn batch_norm_backward(
        &self,
        s: NormShape,
        x: &Storage,
        dy: &Storage,
        gamma: &Storage,
        mean: &Storage,
        inv_std: &Storage,
        batch_stats: bool,
    ) -> Result<BatchNormGrads>;
    /// Training-mode batch norm, then `+ residual` when given, then ReLU: relu(bn(x) + r), the
    /// tail of a ResNet unit, or relu(bn(x)), DenseNet's pre-activation. Running statistics are
    /// updated as by `batch_norm_train`. The default runs the primitives; a backend may fuse them.
    fn batch_norm_train_relu(
        &self,
        s: NormShape,
        x: &Storage,
        residual: Option<&Storage>,
        gamma: &Storage,
        beta: &Storage,
        running_mean: &mut Storage,
        running_var: &mut Storage,
        momentum: f32,
        eps: f32,
    ) -> Result<BatchNormSaved> {
        let mut saved = self.batch_norm_train(s, x, gamma, beta, running_mean, running_var, momentum, eps)?;
        if let Some(r) = residual {
            self.add_assign(&mut saved.output, r)?;
        }
        saved.output = self.relu(&saved.output)?;
        Ok(saved)
    }
    /// Backward of `batch_norm_train_relu` from its output `out` (the gradient passes where the
    /// ReLU's backward passes it for out) and the saved batch statistics: the batch norm's gradients and, when the forward
    /// had a residual, the residual's (the masked dy). The default runs the primitives.
    fn batch_norm_relu_backward(
        &self,
        s: NormShape,
        x: &Storage,
        out: &Storage,
        dy: &Storage,
        norm: BatchNormRelu<'_>,
        residual: bool,
    ) -> Result<BatchNormReluGrads> {
        let dy = self.relu_backward(out, dy)?;
        let norm = self.batch_norm_backward(s, x, &dy, norm.gamma, norm.mean, norm.inv_std, true)?;
        Ok(BatchNormReluGrads { norm, residual: residual.then_some(dy) })
    }
    /// 1/sqrt(var + eps) per channel (eval-mode backward uses it).
    fn inv_std(&self, var: &Storage, eps: f32) -> Result<Storage>;

    // ---- pooling (ops/pool.rs) -----------------------------------------------------------------
    /// Max pool; padding counts as -inf.
    fn max_pool2d_forward(&self, g: &Pool2dGeometry, x: &Storage) -> Result<Storage>;
    /// Routes dy to the first maximum of each window (recomputed from x).
    fn max_pool2d_backward(&self, g: &Pool2dGeometry, x: &Storage, dy: &Storage) -> Result<Storage>;
    /// Average pool; padding counts as zeros in the divisor (PyTorch's count_include_pad=True).
    fn avg_pool2d_forward(&self, g: &Pool2dGeometry, x: &Storage) -> Result<Storage>;
    /// Backward of the average pool.
    fn avg_pool2d_backward(&self, g: &Pool2dGeometry, dy: &Storage) -> Result<Storage>;
    /// [N, C, plane] -> [N, C] mean over the plane.
    fn global_avg_pool_forward(&self, x: &Storage, rows: usize, plane: usize) -> Result<Storage>;
    /// [N, C] -> [N, C, plane], each value spread as dy / plane.
    fn global_avg_pool_backward(&self, dy: &Storage, rows: usize, plane: usize) -> Result<Storage>;

    // ---- concatenation (ops/concat.rs) ---------------------------------------------------------
    /// Concatenates [N, C_i, plane] tensors along channels.
    fn concat_channels(&self, parts: &[(&Storage, usize)], batch: usize, plane: usize) -> Result<Storage>;
    /// Splits [N, sum C_i, plane] into its channel blocks (backward of concat).
    fn split_channels(&self, x: &Storage, channels: &[usize], batch: usize, plane: usize) -> Result<Vec<Storage>>;

    // ---- optimizer updates (train/optim.rs) -----------------------------------------------------
    /// Sum of squares of every element, in f64 (gradient-norm clipping).
    fn sum_squares(&self, x: &Storage) -> Result<f64>;
    /// One SGD step in place, as torch.optim.SGD defines it (`momentum_buf` is empty before the
    /// first step and is filled by it).
    fn sgd_step(&self, param: &mut Storage, grad: &Storage, momentum_buf: &mut Storage, h: &SgdStep) -> Result<()>;
    /// One Adam/AdamW step in place, as torch.optim.Adam/AdamW define it (`m`, `v` start at 0).
    fn adam_step(
        &self,
        param: &mut Storage,
        grad: &Storage,
        m: &mut Storage,
        v: &mut Storage,
        h: &AdamStep,
    ) -> Result<()>;

    // ---- loss (ops/loss.rs) --------------------------------------------------------------------
    /// Mean BCE-with-logits over [rows x classes], weighted per class as `w` says.
    fn bce_with_logits(
        &self,
        logits: &Storage,
        targets: &Storage,
        w: BceWeights<'_>,
        rows: usize,
        classes: usize,
    ) -> Result<f32>;
    /// d(mean loss)/d(logits) times `scale` (the upstream gradient).
    fn bce_with_logits_backward(
        &self,
        logits: &Storage,
        targets: &Storage,
        w: BceWeights<'_>,
        rows: usize,
        classes: usize,
        scale: f32,
    ) -> Result<Storage>;
}
