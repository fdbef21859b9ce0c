//! Cutting a small test fixture (the first records of each MNIST file) out of the full dataset.

use std::path::Path;

use crate::error::DataError;
use crate::idx::{read_idx, write_idx};
use crate::mnist::{FILE_NAMES, locate_file};

/// Writes the first `n_train` training and first `n_test` test images and labels found in
/// `src_dir` to `out_dir` as gzip IDX files with the standard names (creating `out_dir`).
///
/// The output is deterministic (gzip without a timestamp), so regenerating a committed
/// fixture gives identical bytes. Checksums are not verified: the source may be any dataset
/// in MNIST format.
pub fn make_fixture(
    src_dir: &Path,
    out_dir: &Path,
    n_train: usize,
    n_test: usize,
) -> Result<(), DataError> {
    std::fs::create_dir_all(out_dir).map_err(|e| DataError::io(out_dir, e))?;
    for (i, name) in FILE_NAMES.iter().enumerate() {
        let n = if i < 2 { n_train } else { n_test };
        let src = locate_file(src_dir, name);
        let array = read_idx(&src)?;
        let available = array.dims.first().copied().unwrap_or(0);
        if n > available {
            return Err(DataError::NotEnoughRecords {
                path: src,
                requested: n,
                available,
            });
        }
        // Records are contiguous, so the first n are a prefix of the data.
        let record: usize = array.dims.iter().skip(1).product();
        let mut dims = array.dims.clone();
        dims[0] = n;
        write_idx(&out_dir.join(name), &dims, &array.data[..n * record], true)?;
    }
    Ok(())
}
