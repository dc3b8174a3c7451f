//! The resumable state of a training run, saved beside last.safetensors as
//! last.state.safetensors: the optimizer's buffers as tensors, and the position (step, epoch,
//! batch), schedule, early-stopping counters, log history and dropout stream positions as JSON
//! metadata. Data order and augmentation derive from (seed, epoch, index), so this is all a
//! resumed run needs to continue bit for bit.

use super::optim::Optimizer;
use super::schedule::LrSchedule;
use super::trainer::LogRow;
use crate::error::{Error, Result};
use crate::io::safetensors::{serialize, OutTensor, WeightFile};
use crate::tensor::DType;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// File name of the state inside a run folder.
pub const STATE_FILE: &str = "last.state.safetensors";
const META_KEY: &str = "cxr_train_state";

/// Where a run is and what it has seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub step: u64,
    pub epoch: u64,
    /// Batches of `epoch` already trained on.
    pub batch_in_epoch: usize,
    pub schedule: LrSchedule,
    pub best_auroc: Option<f64>,
    pub best_step: Option<u64>,
    pub bad_validations: u32,
    pub history: Vec<LogRow>,
    /// Training loss accumulated since the last validation.
    pub loss_sum: f64,
    pub loss_count: u64,
    pub images: u64,
    pub seconds: f64,
    pub dropout_calls: Vec<u64>,
    /// The optimizer's step count (Adam's bias correction).
    pub optimizer_steps: u64,
}

impl TrainState {
    /// The state of a run that has not started.
    pub fn new(schedule: LrSchedule) -> TrainState {
        TrainState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            schedule,
            best_auroc: None,
            best_step: None,
            bad_validations: 0,
            history: Vec::new(),
            loss_sum: 0.0,
            loss_count: 0,
            images: 0,
            seconds: 0.0,
            dropout_calls: Vec::new(),
            optimizer_steps: 0,
        }
    }

    /// Writes the state and `optimizer`'s buffers to `path` atomically.
    pub fn save(&mut self, path: &Path, optimizer: &Optimizer) -> Result<()> {
        let (steps, buffers) = optimizer.state()?;
        self.optimizer_steps = steps;
        let tensors: Vec<OutTensor> = buffers
            .into_iter()
            .map(|(name, values)| OutTensor {
                name,
                dtype: DType::F32,
                shape: vec![values.len()],
                bytes: DType::F32.encode_le(&values),
            })
            .collect();
        let json = serde_json::to_string(self).map_err(|e| Error::format(path, format!("cannot encode state: {e}")))?;
        let bytes = serialize(&tensors, HashMap::from([(META_KEY.to_string(), json)]), path)?;
        crate::io::atomic::write_atomic(path, &bytes)
    }

    /// Reads a state written by [`save`](Self::save) and restores `optimizer` from it.
    pub fn load(path: &Path, optimizer: &mut Optimizer) -> Result<TrainState> {
        let file = WeightFile::open(path)?;
        let json = file
            .metadata()
            .get(META_KEY)
            .ok_or_else(|| Error::format(path, "not a cxr training state (no cxr_train_state metadata)"))?;
        let state: TrainState =
            serde_json::from_str(json).map_err(|e| Error::format(path, format!("malformed training state: {e}")))?;
        let mut buffers = HashMap::new();
        for e in file.entries() {
            buffers.insert(e.name.clone(), file.tensor(&e.name)?.to_vec()?);
        }
        optimizer.load_state(state.optimizer_steps, buffers)?;
        Ok(state)
    }
}
