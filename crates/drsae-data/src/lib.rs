//! IDX/MNIST loading, checksums, fetching and seeded minibatches for drsae.
//!
//! The crate reads the four MNIST (or Fashion-MNIST) IDX files, raw or gzip (detected from the
//! bytes, never from the name), validates every field, verifies the SHA-256 of the decompressed
//! MNIST files, splits the training set into train / validation, preprocesses the pixels and
//! yields shuffled minibatches whose order depends only on `(seed, epoch)`.
//!
//! It decides no hyperparameters and never panics on bad input: every problem with a file is a
//! [`DataError`] naming that file.
//!
//! ```no_run
//! use drsae_data::{load, resolve_data_dir, BatchBuf, EpochBatches, LoadOptions};
//! use std::path::Path;
//!
//! let dir = resolve_data_dir(None, Path::new("."));
//! let data = load(&dir, &LoadOptions::default())?;
//! let mut batches = EpochBatches::new(data.train.len(), 100, 42, 0);
//! let mut buf = BatchBuf::new(100, data.train.dim);
//! while batches.next_into(&data.train, &mut buf) {
//!     // buf.x holds buf.len images of buf.dim() pixels each, buf.y their labels.
//! }
//! # Ok::<(), drsae_data::DataError>(())
//! ```

pub mod batch;
pub mod error;
pub mod fetch;
pub mod fixture;
pub mod idx;
pub mod locate;
pub mod mnist;

pub use batch::{BatchBuf, EpochBatches};
pub use error::DataError;
pub use fetch::{MNIST_MIRRORS, fetch_mnist, fetch_mnist_from};
pub use fixture::make_fixture;
pub use idx::{IdxArray, decode_idx, parse_idx, read_idx, write_idx};
pub use locate::{DATA_DIR_ENV, resolve_data_dir};
pub use mnist::{
    ChecksumStatus, Dataset, DatasetKind, FILE_NAMES, LoadOptions, MNIST_SHA256, Preprocess, Split,
    load, load_with_checksums,
};
