//! [`CudaBackend`]: the `Backend` trait over an [`Executor`], so the GPU and the emulation share
//! every line from the trait down to the kernel launch.

use super::ctx::{storage, Ctx};
use super::exec::{DeviceStorage, Executor};
use super::{concat, conv, elementwise as ew, loss, matmul, norm, optim, pool, reduce};
use crate::backend::{
    AdamStep, Backend, BatchNormGrads, BatchNormSaved, BceWeights, Conv2dGeometry, Device, Layout, NormShape,
    Pool2dGeometry, SgdStep, Storage,
};
use crate::error::Result;

/// The CUDA backend on one executor.
#[derive(Debug, Clone, Copy)]
pub struct CudaBackend {
    ctx: Ctx,
}

impl CudaBackend {
    /// The backend running on `exec`.
    pub fn new(exec: &'static dyn Executor) -> CudaBackend {
        CudaBackend { ctx: Ctx { exec } }
    }
    /// The launch toolkit (for op wrappers outside the trait, such as Grad-CAM).
    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }
    fn dev<'a>(&self, op: &'static str, s: &'a Storage) -> Result<&'a DeviceStorage> {
        self.ctx.dev(op, s)
    }
    fn weights<'a>(&self, op: &'static str, w: BceWeights<'a>) -> Result<[Option<&'a DeviceStorage>; 2]> {
        let opt = |s: Option<&'a Storage>| s.map(|s| self.ctx.dev(op, s)).transpose();
        Ok([opt(w.pos_weight)?, opt(w.class_weight)?])
    }
}

#[allow(clippy::too_many_arguments)]
impl Backend for CudaBackend {
    fn device(&self) -> Device {
        self.ctx.exec.device()
    }

    fn copy_from_host(&self, data: Vec<f32>) -> Result<Storage> {
        self.ctx.upload("copy_from_host", &data).map(storage)
    }
    fn copy_to_host(&self, s: &Storage) -> Result<Vec<f32>> {
        self.ctx.download(self.dev("copy_to_host", s)?)
    }
    fn full(&self, len: usize, value: f32) -> Result<Storage> {
        self.ctx.full("full", len, value).map(storage)
    }

    fn add(&self, a: &Storage, b: &Storage) -> Result<Storage> {
        ew::binary(&self.ctx, "add", "add_f32", self.dev("add", a)?, self.dev("add", b)?).map(storage)
    }
    fn add_assign(&self, dst: &mut Storage, src: &Storage) -> Result<()> {
        let src = self.dev("add_assign", src)?;
        ew::add_assign(&self.ctx, self.ctx.dev_mut("add_assign", dst)?, src)
    }
    fn mul(&self, a: &Storage, b: &Storage) -> Result<Storage> {
        ew::binary(&self.ctx, "mul", "mul_f32", self.dev("mul", a)?, self.dev("mul", b)?).map(storage)
    }
    fn scale(&self, a: &Storage, s: f32) -> Result<Storage> {
        ew::scale(&self.ctx, self.dev("scale", a)?, s).map(storage)
    }
    fn relu(&self, x: &Storage) -> Result<Storage> {
        ew::unary(&self.ctx, "relu", "relu_f32", self.dev("relu", x)?).map(storage)
    }
    fn relu_backward(&self, y: &Storage, dy: &Storage) -> Result<Storage> {
        let op = "relu_backward";
        ew::binary(&self.ctx, op, "relu_backward_f32", self.dev(op, y)?, self.dev(op, dy)?).map(storage)
    }
    fn sigmoid(&self, x: &Storage) -> Result<Storage> {
        ew::unary(&self.ctx, "sigmoid", "sigmoid_f32", self.dev("sigmoid", x)?).map(storage)
    }
    fn sigmoid_backward(&self, y: &Storage, dy: &Storage) -> Result<Storage> {
        let op = "sigmoid_backward";
        ew::binary(&self.ctx, op, "sigmoid_backward_f32", self.dev(op, y)?, self.dev(op, dy)?).map(storage)
    }
    fn dropout_mask(&self, len: usize, p: f32, seed: u64) -> Result<Storage> {
        ew::dropout_mask(&self.ctx, len, p, seed).map(storage)
    }
    fn sum_all(&self, x: &Storage) -> Result<f32> {
        Ok(reduce::reduce(&self.ctx, "sum_all", self.dev("sum_all", x)?, reduce::Mode::Sum)? as f32)
    }
    fn all_finite(&self, x: &Storage) -> Result<bool> {
        Ok(reduce::reduce(&self.ctx, "all_finite", self.dev("all_finite", x)?, reduce::Mode::NonFinite)? == 0.0)
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
        matmul::matmul(&self.ctx, self.dev("matmul", a)?, a_layout, self.dev("matmul", b)?, b_layout, m, k, n)
            .map(storage)
    }
    fn add_row_bias_assign(&self, x: &mut Storage, bias: &Storage, rows: usize, cols: usize) -> Result<()> {
        let bias = self.dev("add_row_bias", bias)?;
        ew::add_row_bias(&self.ctx, self.ctx.dev_mut("add_row_bias", x)?, bias, rows, cols)
    }
    fn sum_rows(&self, x: &Storage, rows: usize, cols: usize) -> Result<Storage> {
        let x = self.ctx.dev_len("sum_rows", x, rows * cols)?;
        reduce::channel_sum(&self.ctx, "sum_rows", x, rows, cols, 1).map(storage)
    }
    fn transpose2d(&self, x: &Storage, rows: usize, cols: usize) -> Result<Storage> {
        matmul::transpose(&self.ctx, self.dev("transpose2d", x)?, rows, cols).map(storage)
    }

    fn conv2d_forward(&self, g: &Conv2dGeometry, x: &Storage, w: &Storage, bias: Option<&Storage>) -> Result<Storage> {
        let bias = bias.map(|b| self.dev("conv2d", b)).transpose()?;
        conv::forward(&self.ctx, g, self.dev("conv2d", x)?, self.dev("conv2d", w)?, bias).map(storage)
    }
    fn conv2d_backward_input(&self, g: &Conv2dGeometry, dy: &Storage, w: &Storage) -> Result<Storage> {
        let op = "conv2d_backward_input";
        conv::backward_input(&self.ctx, g, self.dev(op, dy)?, self.dev(op, w)?).map(storage)
    }
    fn conv2d_backward_weight(&self, g: &Conv2dGeometry, x: &Storage, dy: &Storage) -> Result<Storage> {
        let op = "conv2d_backward_weight";
        conv::backward_weight(&self.ctx, g, self.dev(op, x)?, self.dev(op, dy)?).map(storage)
    }
    fn channel_sum(&self, x: &Storage, batch: usize, channels: usize, plane: usize) -> Result<Storage> {
        let x = self.ctx.dev_len("channel_sum", x, batch * channels * plane)?;
        reduce::channel_sum(&self.ctx, "channel_sum", x, batch, channels, plane).map(storage)
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
        let op = "batch_norm";
        let (x, gamma, beta) = (self.dev(op, x)?, self.dev(op, gamma)?, self.dev(op, beta)?);
        let rm = self.ctx.dev_mut(op, running_mean)?;
        let rv = self.ctx.dev_mut(op, running_var)?;
        let (mean, inv_std) = norm::train_stats(&self.ctx, s, x, rm, rv, momentum, eps)?;
        let output = norm::apply(&self.ctx, op, s, x, &mean, &inv_std, gamma, beta)?;
        Ok(BatchNormSaved { output: storage(output), mean: storage(mean), inv_std: storage(inv_std) })
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
        let op = "batch_norm_eval";
        let inv_std = ew::inv_std(&self.ctx, self.dev(op, running_var)?, eps)?;
        let (x, mean) = (self.dev(op, x)?, self.dev(op, running_mean)?);
        norm::apply(&self.ctx, op, s, x, mean, &inv_std, self.dev(op, gamma)?, self.dev(op, beta)?).map(storage)
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
        let op = "batch_norm_backward";
        let (x, dy, gamma) = (self.dev(op, x)?, self.dev(op, dy)?, self.dev(op, gamma)?);
        let (mean, inv_std) = (self.dev(op, mean)?, self.dev(op, inv_std)?);
        let (dx, dg, db) = norm::backward(&self.ctx, s, x, dy, gamma, mean, inv_std, batch_stats)?;
        Ok(BatchNormGrads { input: storage(dx), gamma: storage(dg), beta: storage(db) })
    }
    fn inv_std(&self, var: &Storage, eps: f32) -> Result<Storage> {
        ew::inv_std(&self.ctx, self.dev("inv_std", var)?, eps).map(storage)
    }

    fn max_pool2d_forward(&self, g: &Pool2dGeometry, x: &Storage) -> Result<Storage> {
        pool::forward(&self.ctx, "max_pool2d", "max_pool_forward_f32", g, self.dev("max_pool2d", x)?).map(storage)
    }
    fn max_pool2d_backward(&self, g: &Pool2dGeometry, x: &Storage, dy: &Storage) -> Result<Storage> {
        let op = "max_pool2d_backward";
        pool::max_backward(&self.ctx, g, self.dev(op, x)?, self.dev(op, dy)?).map(storage)
    }
    fn avg_pool2d_forward(&self, g: &Pool2dGeometry, x: &Storage) -> Result<Storage> {
        pool::forward(&self.ctx, "avg_pool2d", "avg_pool_forward_f32", g, self.dev("avg_pool2d", x)?).map(storage)
    }
    fn avg_pool2d_backward(&self, g: &Pool2dGeometry, dy: &Storage) -> Result<Storage> {
        pool::avg_backward(&self.ctx, g, self.dev("avg_pool2d_backward", dy)?).map(storage)
    }
    fn global_avg_pool_forward(&self, x: &Storage, rows: usize, plane: usize) -> Result<Storage> {
        pool::global_forward(&self.ctx, self.dev("global_avg_pool", x)?, rows, plane).map(storage)
    }
    fn global_avg_pool_backward(&self, dy: &Storage, rows: usize, plane: usize) -> Result<Storage> {
        pool::global_backward(&self.ctx, self.dev("global_avg_pool_backward", dy)?, rows, plane).map(storage)
    }

    fn concat_channels(&self, parts: &[(&Storage, usize)], batch: usize, plane: usize) -> Result<Storage> {
        let parts = parts.iter().map(|(s, c)| Ok((self.dev("concat_channels", s)?, *c))).collect::<Result<Vec<_>>>()?;
        concat::concat(&self.ctx, &parts, batch, plane).map(storage)
    }
    fn split_channels(&self, x: &Storage, channels: &[usize], batch: usize, plane: usize) -> Result<Vec<Storage>> {
        let parts = concat::split(&self.ctx, self.dev("split_channels", x)?, channels, batch, plane)?;
        Ok(parts.into_iter().map(storage).collect())
    }

    fn sum_squares(&self, x: &Storage) -> Result<f64> {
        reduce::reduce(&self.ctx, "sum_squares", self.dev("sum_squares", x)?, reduce::Mode::SumSquares)
    }
    fn sgd_step(&self, param: &mut Storage, grad: &Storage, momentum_buf: &mut Storage, h: &SgdStep) -> Result<()> {
        let op = "sgd_step";
        let grad = self.dev(op, grad)?;
        let p = self.ctx.dev_mut(op, param)?;
        if h.momentum == 0.0 {
            return optim::sgd(&self.ctx, p, grad, None, h);
        }
        let first = momentum_buf.is_empty();
        if first {
            *momentum_buf = storage(self.ctx.alloc(op, p.len)?);
        }
        optim::sgd(&self.ctx, p, grad, Some((self.ctx.dev_mut(op, momentum_buf)?, first)), h)
    }
    fn adam_step(
        &self,
        param: &mut Storage,
        grad: &Storage,
        m: &mut Storage,
        v: &mut Storage,
        h: &AdamStep,
    ) -> Result<()> {
        let op = "adam_step";
        let grad = self.dev(op, grad)?;
        let p = self.ctx.dev_mut(op, param)?;
        if m.is_empty() {
            *m = storage(self.ctx.full(op, p.len, 0.0)?);
            *v = storage(self.ctx.full(op, p.len, 0.0)?);
        }
        optim::adam(&self.ctx, p, grad, self.ctx.dev_mut(op, m)?, self.ctx.dev_mut(op, v)?, h)
    }

    fn bce_with_logits(
        &self,
        logits: &Storage,
        targets: &Storage,
        w: BceWeights<'_>,
        rows: usize,
        classes: usize,
    ) -> Result<f32> {
        let op = "bce_with_logits";
        loss::forward(&self.ctx, self.dev(op, logits)?, self.dev(op, targets)?, self.weights(op, w)?, rows, classes)
    }
    fn bce_with_logits_backward(
        &self,
        logits: &Storage,
        targets: &Storage,
        w: BceWeights<'_>,
        rows: usize,
        classes: usize,
        scale: f32,
    ) -> Result<Storage> {
        let op = "bce_with_logits_backward";
        let (x, t) = (self.dev(op, logits)?, self.dev(op, targets)?);
        loss::backward(&self.ctx, x, t, self.weights(op, w)?, rows, classes, scale).map(storage)
    }
}
