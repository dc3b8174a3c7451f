//! Reverse-mode automatic differentiation.
//!
//! Each op that runs with grad mode on and an input that requires grad stores a [`GradFn`] in its
//! output: what it needs for its backward (inputs, saved statistics, masks). The graph is the web
//! of these records, kept alive by the tensors that point into it; dropping the loss frees it.
//! Under [`no_grad`] nothing is recorded, so each activation is freed as soon as the next layer has
//! consumed it.
//!
//! `backward` walks the graph from the output in reverse topological order. As in PyTorch,
//! gradients of leaves that require grad are *accumulated* into [`Tensor::grad`] across calls until
//! [`Tensor::zero_grad`]; intermediate tensors keep theirs only when asked ([`Tensor::retain_grad`]).

use crate::backend::Storage;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorId};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

/// The backward of one recorded op.
pub trait GradFn: Send + Sync {
    /// The op's name, for error messages and debugging.
    fn name(&self) -> &'static str;
    /// The tensors the op read, in the order `backward` returns their gradients.
    fn inputs(&self) -> Vec<&Tensor>;
    /// Given the gradient of the op's output, the gradient for each input (None where an input does
    /// not require grad or receives none).
    fn backward(&self, output: &Tensor, grad_output: &Storage) -> Result<Vec<Option<Storage>>>;
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// True when ops record their backward on this thread.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous grad mode when dropped.
#[must_use = "grad mode is restored when the guard is dropped"]
pub struct GradModeGuard {
    previous: bool,
}

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Inference mode on this thread until the guard drops: nothing is recorded.
pub fn no_grad() -> GradModeGuard {
    set_grad_enabled(false)
}

/// Sets grad mode on this thread until the guard drops.
pub fn set_grad_enabled(on: bool) -> GradModeGuard {
    let previous = GRAD_ENABLED.with(|g| g.replace(on));
    GradModeGuard { previous }
}

/// The gradients one backward pass produced, for leaves that require grad and retained tensors.
#[derive(Default, Debug)]
pub struct Gradients {
    grads: HashMap<TensorId, Tensor>,
}

impl Gradients {
    /// The gradient of `t` from this pass (not accumulated across passes).
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.grads.get(&t.id())
    }
    /// Number of gradients held.
    pub fn len(&self) -> usize {
        self.grads.len()
    }
    /// True when the pass reached no leaf or retained tensor.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

/// Tensors reachable from `root` through recorded ops, each one before the inputs of its op.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    // Iterative post-order DFS: deep networks (DenseNet121) would overflow a recursive walk.
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, children_done)) = stack.pop() {
        if children_done {
            order.push(t);
            continue;
        }
        if !visited.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(f) = t.grad_fn() {
            for input in f.inputs() {
                if input.requires_grad() && !visited.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order.reverse();
    order
}

/// Runs backward from `root`. See the module documentation for the semantics.
pub(crate) fn backward(root: &Tensor, seed: Option<&Tensor>) -> Result<Gradients> {
    if !root.requires_grad() {
        return Err(Error::Autograd(
            "backward on a tensor that does not require grad (no parameter or input requires grad, or it was made under no_grad)".into(),
        ));
    }
    let backend = root.backend()?;
    let seed_storage = match seed {
        Some(s) => {
            if s.dims() != root.dims() {
                return Err(Error::ShapeMismatch {
                    op: "backward",
                    detail: format!("seed gradient {:?} for output {:?}", s.dims(), root.dims()),
                });
            }
            s.storage().clone()
        }
        None => {
            if root.numel() != 1 {
                return Err(Error::Autograd(format!(
                    "backward() without a seed needs a one-element output, got shape {:?}",
                    root.dims()
                )));
            }
            backend.full(1, 1.0)?
        }
    };

    let _no_record = no_grad();
    let mut pending: HashMap<TensorId, Storage> = HashMap::new();
    pending.insert(root.id(), seed_storage);
    let mut result = Gradients::default();

    for node in topological_order(root) {
        let Some(grad) = pending.remove(&node.id()) else { continue };
        let grad = Tensor::from_storage(grad, node.shape().clone())?;
        if node.is_leaf() || node.retains_grad() {
            node.accumulate_grad(&grad)?;
            result.grads.insert(node.id(), grad.clone());
        }
        let Some(f) = node.grad_fn() else { continue };
        let input_grads = f.backward(&node, &grad.storage())?;
        drop(grad);
        for (input, g) in f.inputs().into_iter().zip(input_grads) {
            let Some(g) = g else { continue };
            if !input.requires_grad() {
                continue;
            }
            match pending.get_mut(&input.id()) {
                Some(acc) => backend.add_assign(acc, &g)?,
                None => {
                    pending.insert(input.id(), g);
                }
            }
        }
    }
    Ok(result)
}
