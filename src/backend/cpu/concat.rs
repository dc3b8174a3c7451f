//! Channel concatenation and its inverse on NCHW data (DenseNet's dense connectivity).

use super::buffers;

/// Concatenates [N, C_i, plane] blocks along the channel axis.
pub fn concat_channels(parts: &[(&[f32], usize)], batch: usize, plane: usize) -> Vec<f32> {
    let total: usize = parts.iter().map(|p| p.1).sum();
    let mut out = buffers::uninit(batch * total * plane);
    let mut at = 0;
    for n in 0..batch {
        for &(data, channels) in parts {
            let block = channels * plane;
            out[at..at + block].copy_from_slice(&data[n * block..(n + 1) * block]);
            at += block;
        }
    }
    out
}

/// Splits [N, sum C_i, plane] back into its channel blocks.
pub fn split_channels(x: &[f32], channels: &[usize], batch: usize, plane: usize) -> Vec<Vec<f32>> {
    let mut outs: Vec<Vec<f32>> = channels.iter().map(|&c| buffers::uninit(batch * c * plane)).collect();
    let mut offset = 0;
    for n in 0..batch {
        for (out, &c) in outs.iter_mut().zip(channels) {
            let block = c * plane;
            out[n * block..(n + 1) * block].copy_from_slice(&x[offset..offset + block]);
            offset += block;
        }
    }
    outs
}
