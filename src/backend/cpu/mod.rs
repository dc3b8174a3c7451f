//! The CPU backend: host memory and hand-written kernels, one file per op family, named as the
//! op files in `crate::ops` and the CUDA kernels in `kernels/` are.

pub mod buffers;
pub mod concat;
pub mod conv;
pub mod elementwise;
pub mod gemm;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod parallel;
pub mod pool;
pub mod simd;

use super::{
    AdamStep, Backend, BatchNormGrads, BatchNormRelu, BatchNormReluGrads, BatchNormSaved, BceWeights, Conv2dGeometry,
    ConvEpilogue, Device, Layout, NormShape, Pool2dGeometry, PreparedSlot, SgdStep, Storage,
};
use crate::error::{Error, Result};
use simd::SimdLevel;

/// The CPU backend. Stateless apart from the SIMD level chosen at start-up.
#[derive(Debug)]
pub struct CpuBackend {
    level: SimdLevel,
}

impl CpuBackend {
    /// The process-wide CPU backend, using [`SimdLevel::current`].
    pub fn global() -> &'static CpuBackend {
        static CPU: std::sync::OnceLock<CpuBackend> = std::sync::OnceLock::new();
        CPU.get_or_init(|| CpuBackend { level: SimdLevel::current() })
    }

    /// The SIMD level the kernels use.
    pub fn level(&self) -> SimdLevel {
        self.level
    }
}

/// Borrows host data from a storage, or says which device it is on.
fn host(s: &Storage) -> Result<&[f32]> {
    s.host().ok_or_else(|| Error::DeviceMismatch { op: "cpu backend", a: "cpu".into(), b: s.device().to_string() })
}

/// Mutably borrows host data from a storage (copying mapped data out of its file first).
fn host_mut(s: &mut Storage) -> Result<&mut Vec<f32>> {
    let device = s.device();
    s.host_mut().ok_or_else(|| Error::DeviceMismatch { op: "cpu backend", a: "cpu".into(), b: device.to_string() })
}

fn host_opt(s: Option<&Storage>) -> Result<Option<&[f32]>> {
    s.map(host).transpose()
}

impl Backend for CpuBackend {
    fn device(&self) -> Device {
        Device::Cpu
    }

    fn copy_from_host(&self, data: Vec<f32>) -> Result<Storage> {
        Ok(Storage::Cpu(data))
    }
    fn copy_to_host(&self, s: &Storage) -> Result<Vec<f32>> {
        Ok(buffers::copy_of(host(s)?))
    }
    fn full(&self, len: usize, value: f32) -> Result<Storage> {
        if value == 0.0 {
            return Ok(Storage::Cpu(buffers::zeroed(len)));
        }
        let mut data = buffers::uninit(len);
        data.fill(value);
        Ok(Storage::Cpu(data))
    }

    fn add(&self, a: &Storage, b: &Storage) -> Result<Storage> {
        Ok(Storage::Cpu(elementwise::zip_map(host(a)?, host(b)?, |x, y| x + y)))
    }
    fn add_assign(&self, dst: &mut Storage, src: &Storage) -> Result<()> {
        elementwise::add_assign(host_mut(dst)?, host(src)?);
        Ok(())
    }
    fn mul(&self, a: &Storage, b: &Storage) -> Result<Storage> {
        Ok(Storage::Cpu(elementwise::zip_map(host(a)?, host(b)?, |x, y| x * y)))
    }
    fn scale(&self, a: &Storage, s: f32) -> Result<Storage> {
        Ok(Storage::Cpu(elementwise::map(host(a)?, |x| x * s)))
    }
    fn relu(&self, x: &Storage) -> Result<Storage> {
        Ok(Storage::Cpu(elementwise::relu(host(x)?)))
    }
    fn relu_backward(&self, y: &Storage, dy: &Storage) -> Result<Storage> {
        Ok(Storage::Cpu(elementwise::relu_backward(host(y)?, host(dy)?)))
    }
    fn sigmoid(&self, x: &Storage) -> Result<Storage> {
        Ok(Storage::Cpu(elementwise::sigmoid(host(x)?)))
    }
    fn sigmoid_backward(&self, y: &Storage, dy: &Storage) -> Result<Storage> {
        Ok(Storage::Cpu(elementwise::sigmoid_backward(host(y)?, host(dy)?)))
    }
    fn dropout_mask(&self, len: usize, p: f32, seed: u64) -> Result<Storage> {
        Ok(Storage::Cpu(elementwise::dropout_mask(len, p, seed)))
    }
    fn sum_all(&self, x: &Storage) -> Result<f32> {
        Ok(elementwise::sum_all(host(x)?))
    }
    fn all_finite(&self, x: &Storage) -> Result<bool> {
        Ok(elementwise::all_finite(host(x)?))
    }

    fn matmul(
        &self,
        a: &Storage,
        a_layout: Layout,
        b: &Storage,
        b_layout: Layout,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<Storage> {
        let c = matmul::matmul(self.level, host(a)?, a_layout, host(b)?, b_layout, m, k, n);
        Ok(Storage::Cpu(c))
    }
    fn add_row_bias_assign(&self, x: &mut Storage, bias: &Storage, _rows: usize, cols: usize) -> Result<()> {
        matmul::add_row_bias_assign(host_mut(x)?, host(bias)?, cols);
        Ok(())
    }
    fn sum_rows(&self, x: &Storage, _rows: usize, cols: usize) -> Result<Storage> {
        Ok(Storage::Cpu(matmul::sum_rows(host(x)?, cols)))
    }
    fn transpose2d(&self, x: &Storage, rows: usize, cols: usize) -> Result<Storage> {
        Ok(Storage::Cpu(matmul::transpose2d(host(x)?, rows, cols)))
    }

    fn conv2d_forward(&self, g: &Conv2dGeometry, x: &Storage, w: &Storage, bias: Option<&Storage>) -> Result<Storage> {
        let mut y = buffers::uninit(g.output_len());
        conv::conv2d_forward(self.level, g, host(x)?, host(w)?, host_opt(bias)?, &mut y);
        Ok(Storage::Cpu(y))
    }
    fn conv2d_forward_fused(
        &self,
        g: &Conv2dGeometry,
        x: &Storage,
        w: &Storage,
        w_prepared: PreparedSlot<'_>,
        finish: ConvEpilogue<'_>,
    ) -> Result<Storage> {
        let (x, w) = (host(x)?, host(w)?);
        let (residual, bias) = (host_opt(finish.residual)?, host_opt(finish.bias)?);
        if residual.is_some_and(|r| r.len() != g.output_len()) {
            return Err(Error::ShapeMismatch {
                op: "conv2d",
                detail: "residual of another size than the output".into(),
            });
        }
        // The norm's scale exactly as the batch-norm kernel computes it, so fusing changes no bit.
        let norm_params = match finish.norm {
            Some(n) => {
                let inv_std = norm::inv_std(host(n.running_var)?, n.eps);
                let scale: Vec<f32> = inv_std.iter().zip(host(n.gamma)?).map(|(i, g)| i * g).collect();
                Some((host(n.running_mean)?, scale, host(n.beta)?))
            }
            None => None,
        };
        let norm = norm_params.as_ref().map(|(mean, scale, shift)| gemm::RowNorm { mean, scale, shift });
        let level = self.level;
        let packed =
            w_prepared.get_or_make(|p: &conv::PackedWeights| p.fits(level, g), || conv::pack_weights(level, g, w));
        let weights = conv::ConvWeights::prepacked(w, &packed);
        let finish = conv::ConvFinish { bias, norm, residual, relu: finish.relu };
        let mut y = buffers::uninit(g.output_len());
        conv::conv2d_forward_with(level, g, x, weights, &finish, &mut y);
        Ok(Storage::Cpu(y))
    }
    fn conv2d_backward_input(&self, g: &Conv2dGeometry, dy: &Storage, w: &Storage) -> Result<Storage> {
        let mut dx = buffers::uninit(g.input_len());
        conv::conv2d_backward_input(self.level, g, host(dy)?, host(w)?, &mut dx);
        Ok(Storage::Cpu(dx))
    }
    fn conv2d_backward_weight(&self, g: &Conv2dGeometry, x: &Storage, dy: &Storage) -> Result<Storage> {
        let mut dw = buffers::uninit(g.weight_len());
        conv::conv2d_backward_weight(self.level, g, host(x)?, host(dy)?, &mut dw);
        Ok(Storage::Cpu(dw))
    }
    fn channel_sum(&self, x: &Storage, batch: usize, channels: usize, plane: usize) -> Result<Storage> {
        let x = host(x)?;
        let mut out = vec![0.0f64; channels];
        for n in 0..batch {
            for (c, o) in out.iter_mut().enumerate() {
                let start = (n * channels + c) * plane;
                *o += x[start..start + plane].iter().map(|&v| v as f64).sum::<f64>();
            }
        }
        Ok(Storage::Cpu(out.into_iter().map(|v| v as f32).collect()))
    }

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
    ) -> Result<BatchNormSaved> {
        let (y, mean, inv_std) = norm::batch_norm_train(
            s,
            host(x)?,
            host(gamma)?,
            host(beta)?,
            host_mut(running_mean)?,
            host_mut(running_var)?,
            momentum,
            eps,
        );
        Ok(BatchNormSaved { output: Storage::Cpu(y), mean: Storage::Cpu(mean), inv_std: Storage::Cpu(inv_std) })
    }
    fn batch_norm_eval(
        &self,
        s: NormShape,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        running_mean: &Storage,
        running_var: &Storage,
        eps: f32,
    ) -> Result<Storage> {
        let inv_std = norm::inv_std(host(running_var)?, eps);
        let y = norm::normalize(s, host(x)?, host(running_mean)?, &inv_std, host(gamma)?, host(beta)?);
        Ok(Storage::Cpu(y))
    }
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
        // One part: the concatenation of a single tensor is the tensor.
        self.concat_batch_norm_eval_relu(&[(x, s.channels)], s, gamma, beta, running_mean, running_var, eps)
    }
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
        let parts: Vec<(&[f32], usize)> = parts.iter().map(|&(p, c)| Ok((host(p)?, c))).collect::<Result<_>>()?;
        let inv_std = norm::inv_std(host(running_var)?, eps);
        let (mean, gamma, beta) = (host(running_mean)?, host(gamma)?, host(beta)?);
        Ok(Storage::Cpu(norm::normalize_parts(s, &parts, mean, &inv_std, gamma, beta, true)))
    }
    fn batch_norm_backward(
        &self,
        s: NormShape,
        x: &Storage,
        dy: &Storage,
        gamma: &Storage,
        mean: &Storage,
        inv_std: &Storage,
        batch_stats: bool,
    ) -> Result<BatchNormGrads> {
        let (dx, dgamma, dbeta) =
            norm::batch_norm_backward(s, host(x)?, host(dy)?, host(gamma)?, host(mean)?, host(inv_std)?, batch_stats);
        Ok(BatchNormGrads { input: Storage::Cpu(dx), gamma: Storage::Cpu(dgamma), beta: Storage::Cpu(dbeta) })
    }
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
        let (y, mean, inv_std) = norm::batch_norm_train_relu(
            s,
            host(x)?,
            host_opt(residual)?,
            host(gamma)?,
            host(beta)?,
            host_mut(running_mean)?,
            host_mut(running_var)?,
            momentum,
            eps,
        );
        Ok(BatchNormSaved { output: Storage::Cpu(y), mean: Storage::Cpu(mean), inv_std: Storage::Cpu(inv_std) })
    }
    fn batch_norm_relu_backward(
        &self,
        s: NormShape,
        x: &Storage,
        out: &Storage,
        dy: &Storage,
        p: BatchNormRelu<'_>,
        residual: bool,
    ) -> Result<BatchNormReluGrads> {
        let g = norm::batch_norm_relu_backward(
            s,
            host(x)?,
            host(out)?,
            host(dy)?,
            host(p.gamma)?,
            host(p.beta)?,
            host(p.mean)?,
            host(p.inv_std)?,
            residual,
        );
        let norm =
            BatchNormGrads { input: Storage::Cpu(g.dx), gamma: Storage::Cpu(g.dgamma), beta: Storage::Cpu(g.dbeta) };
        Ok(BatchNormReluGrads { norm, residual: g.dresidual.map(Storage::Cpu) })
    }
    fn inv_std(&self, var: &Storage, eps: f32) -> Result<Storage> {
        Ok(Storage::Cpu(norm::inv_std(host(var)?, eps)))
    }

    fn max_pool2d_forward(&self, g: &Pool2dGeometry, x: &Storage) -> Result<Storage> {
        Ok(Storage::Cpu(pool::max_pool2d_forward(g, host(x)?)))
    }
    fn max_pool2d_backward(&self, g: &Pool2dGeometry, x: &Storage, dy: &Storage) -> Result<Storage> {
        Ok(Storage::Cpu(pool::max_pool2d_backward(g, host(x)?, host(dy)?)))
    }
    fn avg_pool2d_forward(&self, g: &Pool2dGeometry, x: &Storage) -> Result<Storage> {
        Ok(Storage::Cpu(pool::avg_pool2d_forward(g, host(x)?)))
    }
    fn avg_pool2d_backward(&self, g: &Pool2dGeometry, dy: &Storage) -> Result<Storage> {
        Ok(Storage::Cpu(pool::avg_pool2d_backward(g, host(dy)?)))
    }
    fn global_avg_pool_forward(&self, x: &Storage, _rows: usize, plane: usize) -> Result<Storage> {
        Ok(Storage::Cpu(pool::global_avg_pool_forward(host(x)?, plane)))
    }
    fn global_avg_pool_backward(&self, dy: &Storage, _rows: usize, plane: usize) -> Result<Storage> {
        Ok(Storage::Cpu(pool::global_avg_pool_backward(host(dy)?, plane)))
    }

    fn concat_channels(&self, parts: &[(&Storage, usize)], batch: usize, plane: usize) -> Result<Storage> {
        let parts: Vec<(&[f32], usize)> = parts.iter().map(|(s, c)| Ok((host(s)?, *c))).collect::<Result<_>>()?;
        Ok(Storage::Cpu(concat::concat_channels(&parts, batch, plane)))
    }
    fn split_channels(&self, x: &Storage, channels: &[usize], batch: usize, plane: usize) -> Result<Vec<Storage>> {
        let parts = concat::split_channels(host(x)?, channels, batch, plane);
        Ok(parts.into_iter().map(Storage::Cpu).collect())
    }

    fn sum_squares(&self, x: &Storage) -> Result<f64> {
        Ok(optim::sum_squares(host(x)?))
    }
    fn sgd_step(&self, param: &mut Storage, grad: &Storage, momentum_buf: &mut Storage, h: &SgdStep) -> Result<()> {
        optim::sgd_step(host_mut(param)?, host(grad)?, host_mut(momentum_buf)?, h);
        Ok(())
    }
    fn adam_step(
        &self,
        param: &mut Storage,
        grad: &Storage,
        m: &mut Storage,
        v: &mut Storage,
        h: &AdamStep,
    ) -> Result<()> {
        optim::adam_step(host_mut(param)?, host(grad)?, host_mut(m)?, host_mut(v)?, h);
        Ok(())
    }

    fn bce_with_logits(
        &self,
        logits: &Storage,
        targets: &Storage,
        w: BceWeights<'_>,
        _rows: usize,
        classes: usize,
    ) -> Result<f32> {
        let weights = loss::Weights { pos: host_opt(w.pos_weight)?, class: host_opt(w.class_weight)? };
        Ok(loss::bce_with_logits(host(logits)?, host(targets)?, weights, classes))
    }
    fn bce_with_logits_backward(
        &self,
        logits: &Storage,
        targets: &Storage,
        w: BceWeights<'_>,
        _rows: usize,
        classes: usize,
        scale: f32,
    ) -> Result<Storage> {
        let weights = loss::Weights { pos: host_opt(w.pos_weight)?, class: host_opt(w.class_weight)? };
        let g = loss::bce_with_logits_backward(host(logits)?, host(targets)?, weights, classes, scale);
        Ok(Storage::Cpu(g))
    }
}
