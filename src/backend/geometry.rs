//! Shape descriptions of windowed ops (convolution, pooling), shared by every backend so the CPU
//! kernels and the CUDA launch wrappers compute output sizes the same way.

/// The full geometry of a 2-D convolution over an NCHW batch (dilation 1, one group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
}

impl Conv2dGeometry {
    /// Output height: floor((H + 2p - k) / s) + 1.
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.pad_h - self.kernel_h) / self.stride_h + 1
    }
    /// Output width: floor((W + 2p - k) / s) + 1.
    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.pad_w - self.kernel_w) / self.stride_w + 1
    }
    /// Elements in the input tensor [N, C_in, H, W].
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_h * self.in_w
    }
    /// Elements in the weight tensor [C_out, C_in, kh, kw].
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.in_channels * self.kernel_h * self.kernel_w
    }
    /// Elements in the output tensor [N, C_out, OH, OW].
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_h() * self.out_w()
    }
    /// Multiply-adds of the forward pass times two.
    pub fn forward_flops(&self) -> f64 {
        2.0 * (self.output_len() as f64) * (self.in_channels * self.kernel_h * self.kernel_w) as f64
    }
    /// True when the window fits the padded input (the output has at least one pixel).
    pub fn is_valid(&self) -> bool {
        self.kernel_h > 0
            && self.kernel_w > 0
            && self.stride_h > 0
            && self.stride_w > 0
            && self.in_h + 2 * self.pad_h >= self.kernel_h
            && self.in_w + 2 * self.pad_w >= self.kernel_w
    }
}

/// The geometry of a 2-D max or average pool over an NCHW batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool2dGeometry {
    pub batch: usize,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Pool2dGeometry {
    /// Output height (floor mode, as PyTorch's default `ceil_mode=False`).
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.pad - self.kernel) / self.stride + 1
    }
    /// Output width (floor mode).
    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.pad - self.kernel) / self.stride + 1
    }
    /// Elements in the input.
    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.in_h * self.in_w
    }
    /// Elements in the output.
    pub fn output_len(&self) -> usize {
        self.batch * self.channels * self.out_h() * self.out_w()
    }
    /// True when the window fits and padding is at most half the window (PyTorch's rule).
    pub fn is_valid(&self) -> bool {
        self.kernel > 0
            && self.stride > 0
            && 2 * self.pad <= self.kernel
            && self.in_h + 2 * self.pad >= self.kernel
            && self.in_w + 2 * self.pad >= self.kernel
    }
}
