//! Checkpoints: parameters, config and training state in one safetensors file.
//!
//! Layout (format `drsae-checkpoint-v1`): six F32 little-endian tensors named `e s b d c c_bias`
//! with shapes `[n,m] [n,n] [n] [m,n] [l,n] [l]`; header metadata `format`, `config` (the
//! [`Config`] as TOML, which round-trips every f64 exactly) and `state` (the [`TrainState`] as
//! JSON). Files are written atomically; loading checks everything and never panics on a
//! truncated or foreign file.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Phase};
use crate::params::{Params, TENSOR_NAMES};

/// The value of the `format` metadata entry this module writes and accepts.
pub const FORMAT: &str = "drsae-checkpoint-v1";

/// Where training stands, saved with the parameters so that a run can resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The phase being trained.
    pub phase: Phase,
    /// Epochs completed in this phase.
    pub epoch: u64,
    /// k: minibatch updates since phase 1 began (drives the learning-rate decay).
    pub updates: u64,
    /// The seed of the run.
    pub seed: u64,
    /// The lowest validation error seen so far, if any was measured.
    pub best_valid_error: Option<f64>,
    /// The epoch (of phase 2) at which that error was measured.
    pub best_epoch: Option<u64>,
    /// The test error of the parameters with the best validation error.
    #[serde(default)]
    pub best_test_error: Option<f64>,
    /// Wall time spent training so far, seconds, over every resumption.
    #[serde(default)]
    pub wall_s: f64,
    /// Wall time when the best validation error was measured: the cost of the result,
    /// apart from the epochs that early stopping spends confirming it.
    #[serde(default)]
    pub best_wall_s: Option<f64>,
    /// Examples trained on so far, over every resumption: with `train_s`, the run's mean
    /// training rate, whichever processes trained it.
    #[serde(default)]
    pub examples_trained: u64,
    /// Seconds the training steps of those examples took (evaluation excluded).
    #[serde(default)]
    pub train_s: f64,
}

/// Everything a checkpoint file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The parameters, as trained (f32).
    pub params: Params<f32>,
    /// The configuration they were trained with; its dimensions fix the tensor shapes.
    pub config: Config,
    /// The training state.
    pub state: TrainState,
}

/// Why a checkpoint could not be saved or loaded; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading, writing or renaming failed.
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What was being done, e.g. "read the file".
        action: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The bytes are not a well-formed safetensors file (truncated, garbage, bad header).
    #[error("{}: not a valid safetensors file: {message}", path.display())]
    Format {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A metadata entry is missing or does not parse.
    #[error("{}: metadata `{field}`: {message}", path.display())]
    Metadata {
        /// The file concerned.
        path: PathBuf,
        /// The metadata key: `format`, `config` or `state`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// One of `e s b d c c_bias` is absent.
    #[error("{}: tensor `{name}` is missing", path.display())]
    MissingTensor {
        /// The file concerned.
        path: PathBuf,
        /// The absent tensor.
        name: &'static str,
    },
    /// The file holds a tensor this format does not define.
    #[error("{}: unknown tensor `{name}` (expected only e, s, b, d, c, c_bias)", path.display())]
    UnknownTensor {
        /// The file concerned.
        path: PathBuf,
        /// The unexpected tensor's name.
        name: String,
    },
    /// A tensor is not F32.
    #[error("{}: tensor `{name}` has dtype {dtype}, expected F32", path.display())]
    WrongDtype {
        /// The file concerned.
        path: PathBuf,
        /// The tensor.
        name: &'static str,
        /// Its dtype as stored.
        dtype: String,
    },
    /// A tensor's shape disagrees with the config's dimensions.
    #[error("{}: tensor `{name}` has shape {found:?}, expected {expected:?} from the config", path.display())]
    WrongShape {
        /// The file concerned.
        path: PathBuf,
        /// The tensor.
        name: &'static str,
        /// Its shape as stored.
        found: Vec<usize>,
        /// The shape the config implies.
        expected: Vec<usize>,
    },
    /// The checkpoint to save is inconsistent (invalid config, or parameters of other dimensions).
    #[error("{}: refusing to save: {message}", path.display())]
    Inconsistent {
        /// The file that was to be written.
        path: PathBuf,
        /// What is inconsistent.
        message: String,
    },
}

/// Distinguishes temporary files of concurrent saves from the same process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `ckpt` to `path` atomically: the bytes go to a temporary file in the same folder,
/// which is fsynced and then renamed over `path`, so a reader never sees a partial checkpoint.
pub fn save(path: &Path, ckpt: &Checkpoint) -> Result<(), CheckpointError> {
    let inconsistent = |message: String| CheckpointError::Inconsistent {
        path: path.to_path_buf(),
        message,
    };
    let cfg = &ckpt.config;
    let p = &ckpt.params;
    cfg.validate().map_err(|e| inconsistent(e.to_string()))?;
    if (p.n_input, p.n_hidden, p.n_classes) != (cfg.n_input, cfg.n_hidden, cfg.n_classes) {
        return Err(inconsistent(format!(
            "parameters are (m, n, l) = ({}, {}, {}) but the config says ({}, {}, {})",
            p.n_input, p.n_hidden, p.n_classes, cfg.n_input, cfg.n_hidden, cfg.n_classes
        )));
    }
    p.check_lengths().map_err(inconsistent)?;

    let config_toml = cfg
        .to_toml_string()
        .map_err(|e| inconsistent(e.to_string()))?;
    let state_json = serde_json::to_string(&ckpt.state).map_err(|e| inconsistent(e.to_string()))?;
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("config".to_string(), config_toml),
        ("state".to_string(), state_json),
    ]);

    // safetensors views borrow their bytes, so the little-endian copies must outlive them.
    let bytes: Vec<(&str, Vec<usize>, Vec<u8>)> = p
        .tensors()
        .map(|(name, shape, data)| {
            (
                name,
                shape,
                data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let mut views = Vec::with_capacity(bytes.len());
    for (name, shape, data) in &bytes {
        let view = TensorView::new(Dtype::F32, shape.clone(), data)
            .map_err(|e| inconsistent(format!("tensor `{name}`: {e}")))?;
        views.push((*name, view));
    }
    let buffer = safetensors::serialize(views, Some(metadata))
        .map_err(|e| inconsistent(format!("serialising: {e}")))?;

    write_atomically(path, &buffer)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io_err = |action: &'static str| {
        move |source: std::io::Error| CheckpointError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io_err("name the file")(std::io::Error::other("path has no file name")))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));

    let result = (|| {
        let mut f = fs::File::create_new(&tmp).map_err(io_err("create a temporary file"))?;
        f.write_all(bytes)
            .map_err(io_err("write the temporary file"))?;
        // The data must be on disk before the rename makes it visible under the real name.
        f.sync_all().map_err(io_err("fsync the temporary file"))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err("rename the temporary file into place"))
    })();
    if result.is_err() {
        // Best effort: a leftover temporary file is harmless but untidy.
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Persist the rename itself; some platforms cannot open a directory, which is not an error.
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads and checks a checkpoint: format tag, config (parsed and validated), state, exactly the
/// six tensors, each F32 with the shape the config implies.
pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let buffer = fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        action: "read the file",
        source,
    })?;
    let format_err = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    let meta_err = |field: &'static str, message: String| CheckpointError::Metadata {
        path: path.to_path_buf(),
        field,
        message,
    };

    check_offsets(&buffer).map_err(format_err)?;
    let (_, header) = SafeTensors::read_metadata(&buffer).map_err(|e| format_err(e.to_string()))?;
    let tensors = SafeTensors::deserialize(&buffer).map_err(|e| format_err(e.to_string()))?;

    let empty = HashMap::new();
    let meta = header.metadata().as_ref().unwrap_or(&empty);
    let get = |field: &'static str| {
        meta.get(field)
            .ok_or_else(|| meta_err(field, "missing".to_string()))
    };
    let format = get("format")?;
    if format != FORMAT {
        return Err(meta_err(
            "format",
            format!("is `{format}`, expected `{FORMAT}`"),
        ));
    }
    let config =
        Config::from_toml_str(get("config")?).map_err(|e| meta_err("config", e.to_string()))?;
    let state: TrainState =
        serde_json::from_str(get("state")?).map_err(|e| meta_err("state", e.to_string()))?;

    if let Some(name) = tensors
        .names()
        .into_iter()
        .find(|n| !TENSOR_NAMES.contains(n))
    {
        return Err(CheckpointError::UnknownTensor {
            path: path.to_path_buf(),
            name: name.to_string(),
        });
    }

    let (m, n, l) = (config.n_input, config.n_hidden, config.n_classes);
    let mut params = Params::<f32>::zeros(m, n, l);
    for (name, dst) in params.tensors_mut() {
        let view = tensors
            .tensor(name)
            .map_err(|_| CheckpointError::MissingTensor {
                path: path.to_path_buf(),
                name,
            })?;
        if view.dtype() != Dtype::F32 {
            return Err(CheckpointError::WrongDtype {
                path: path.to_path_buf(),
                name,
                dtype: format!("{:?}", view.dtype()),
            });
        }
        let expected = Params::<f32>::expected_shape(name, m, n, l).expect("known tensor name");
        if view.shape() != expected.as_slice() {
            return Err(CheckpointError::WrongShape {
                path: path.to_path_buf(),
                name,
                found: view.shape().to_vec(),
                expected,
            });
        }
        // The data may sit at any byte offset, so it is decoded chunk by chunk, not cast.
        for (v, chunk) in dst.iter_mut().zip(view.data().chunks_exact(4)) {
            *v = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
    }

    Ok(Checkpoint {
        params,
        config,
        state,
    })
}

/// Checks that every tensor's declared end offset lies inside the file before safetensors
/// validates the header: safetensors 0.8 adds the declared data length to the header length
/// without overflow checks, so a crafted header with huge offsets would otherwise panic.
fn check_offsets(buffer: &[u8]) -> Result<(), String> {
    let Some(len_bytes) = buffer.get(..8) else {
        return Err(format!(
            "file is {} bytes, shorter than the 8-byte header length",
            buffer.len()
        ));
    };
    let header_len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    let data_len = (buffer.len() as u64 - 8)
        .checked_sub(header_len)
        .ok_or_else(|| {
            format!(
                "header length {header_len} exceeds the file size {}",
                buffer.len()
            )
        })?;
    // Within the file, so the cast cannot truncate.
    let header = &buffer[8..8 + header_len as usize];
    let parsed: HashMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| format!("invalid JSON in header: {e}"))?;
    for (name, info) in &parsed {
        if name == "__metadata__" {
            continue;
        }
        let end = info
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(serde_json::Value::as_u64);
        match end {
            Some(end) if end <= data_len => {}
            Some(end) => {
                return Err(format!(
                    "tensor `{name}` ends at byte {end} of a {data_len}-byte data section (truncated?)"
                ));
            }
            None => return Err(format!("tensor `{name}` has no valid data_offsets")),
        }
    }
    Ok(())
}
