//! Reading and writing IDX arrays (LeCun's MNIST format), raw or gzip, with every field checked.
//!
//! An IDX file is a header — two zero bytes, a type code, the number of dimensions `r`, then `r`
//! big-endian `u32` sizes — followed by the elements in row-major order. Only the unsigned-byte
//! type (0x08) is supported, because that is all MNIST and Fashion-MNIST use.
//!
//! Nothing here panics on any input: sizes are multiplied with `checked_mul`, every slice is
//! bounds-checked first, and each failure is a [`DataError`] that names the file.

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::Compression;
use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::error::DataError;

/// The IDX type code for unsigned bytes, the only element type supported.
pub const IDX_TYPE_U8: u8 = 0x08;

/// The two bytes every gzip stream starts with; gzip is detected from these, never from the name.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The largest decompressed file accepted. MNIST's biggest file is 47 MB; the cap stops a
/// malicious or corrupt gzip from exhausting memory.
const MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;

/// The largest ratio deflate can achieve (about 1032:1); used to distrust absurd size hints.
const MAX_DEFLATE_RATIO: usize = 1032;

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The sizes of the dimensions, outermost first (e.g. `[60000, 28, 28]`).
    pub dims: Vec<usize>,
    /// The elements in row-major order; its length is the product of `dims`.
    pub data: Vec<u8>,
}

/// A whole decompressed IDX file with its header already validated.
///
/// Kept whole (header included) because checksums are over the entire decompressed file, and
/// so the body need not be copied out.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The decompressed file, header and body.
    pub bytes: Vec<u8>,
    /// Where the body starts.
    pub header_len: usize,
    /// The dimensions from the header.
    pub dims: Vec<usize>,
}

impl Decoded {
    /// The elements after the header.
    pub fn body(&self) -> &[u8] {
        // The header parser guarantees header_len <= bytes.len(); `get` keeps that a non-panic.
        self.bytes.get(self.header_len..).unwrap_or(&[])
    }
}

/// Parses an uncompressed IDX file held in memory. `path` is used only in error messages.
///
/// The data must be exactly as long as the header says: a short body is
/// [`DataError::Truncated`], extra bytes are [`DataError::TrailingBytes`].
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    let (dims, header_len) = parse_header(bytes, path)?;
    let data = bytes.get(header_len..).unwrap_or(&[]).to_vec();
    Ok(IdxArray { dims, data })
}

/// Parses an IDX file held in memory, decompressing it first if it starts with the gzip magic
/// bytes `1f 8b`. `path` is used only in error messages.
pub fn decode_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        let raw = gunzip(bytes, path)?;
        parse_idx(&raw, path)
    } else {
        parse_idx(bytes, path)
    }
}

/// Reads an IDX file from disk, raw or gzip (detected from its first bytes), and validates it.
///
/// A missing file is [`DataError::Missing`], a directory is [`DataError::NotAFile`], a zero-byte
/// file is [`DataError::Empty`], a cut-short gzip stream is [`DataError::TruncatedGzip`]. The
/// expected rank (3 for images, 1 for labels) is checked by the caller.
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let mut decoded = read_decoded(path)?;
    // Drop the header in place (a memmove) instead of copying the body to a new buffer.
    decoded.bytes.drain(..decoded.header_len);
    Ok(IdxArray {
        dims: decoded.dims,
        data: decoded.bytes,
    })
}

/// The decompressed contents of `bytes`: gunzipped if they start with the gzip magic, else the
/// bytes themselves. Used on downloads, which are checked before they touch the disk.
pub(crate) fn decompressed<'a>(
    bytes: &'a [u8],
    path: &Path,
) -> Result<std::borrow::Cow<'a, [u8]>, DataError> {
    if is_gzip(bytes) {
        Ok(gunzip(bytes, path)?.into())
    } else {
        Ok(bytes.into())
    }
}

/// Whether `bytes` start with the gzip magic `1f 8b`.
pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Reads, decompresses and validates an IDX file, keeping the whole decompressed file.
pub(crate) fn read_decoded(path: &Path) -> Result<Decoded, DataError> {
    let bytes = read_file(path)?;
    let bytes = if bytes.starts_with(&GZIP_MAGIC) {
        gunzip(&bytes, path)?
    } else {
        bytes
    };
    let (dims, header_len) = parse_header(&bytes, path)?;
    Ok(Decoded {
        bytes,
        header_len,
        dims,
    })
}

/// Reads a whole file, after checking that it exists, is a regular file and is not empty.
fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let meta = fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if !meta.is_file() {
        return Err(DataError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if meta.len() == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.is_empty() {
        // The file shrank between the two calls; report it the same way.
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// Decompresses a gzip stream (possibly several concatenated members) into one buffer.
///
/// The buffer is preallocated from the size recorded in the gzip trailer, so a 47 MB file is
/// decompressed with no reallocation; the hint is distrusted beyond the largest ratio deflate
/// can reach, because a corrupt trailer must not cause a huge allocation.
fn gunzip(compressed: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    let hint = match compressed
        .len()
        .checked_sub(4)
        .and_then(|at| compressed.get(at..))
    {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]) as usize,
        _ => 0,
    };
    let cap = hint
        .min(compressed.len().saturating_mul(MAX_DEFLATE_RATIO))
        .min(MAX_DECOMPRESSED_BYTES as usize);
    // One spare byte so that reading exactly `hint` bytes does not reallocate to detect EOF.
    let mut out = Vec::with_capacity(cap.saturating_add(1));
    let mut decoder = MultiGzDecoder::new(compressed).take(MAX_DECOMPRESSED_BYTES + 1);
    match decoder.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(DataError::TruncatedGzip {
                path: path.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(DataError::CorruptGzip {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
    }
    if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            what: format!("it decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes"),
        });
    }
    Ok(out)
}

/// Validates the header and the total length; returns the dimensions and the header length.
pub(crate) fn parse_header(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, usize), DataError> {
    let path_buf = || path.to_path_buf();
    if bytes.is_empty() {
        return Err(DataError::Empty { path: path_buf() });
    }
    // Check the magic on whatever bytes exist, so a short non-IDX file is called that, not
    // "truncated". Missing bytes are padded with zeros, which the magic allows.
    let mut found = [0u8; 4];
    for (dst, src) in found.iter_mut().zip(bytes) {
        *dst = *src;
    }
    if found[0] != 0 || found[1] != 0 {
        return Err(DataError::BadMagic {
            path: path_buf(),
            found,
        });
    }
    let Some(&[_, _, code, ndims]) = bytes.get(..4) else {
        return Err(DataError::TruncatedHeader {
            path: path_buf(),
            expected: 4,
            actual: bytes.len(),
        });
    };
    if code != IDX_TYPE_U8 {
        return Err(DataError::UnsupportedType {
            path: path_buf(),
            code,
        });
    }
    if !(1..=4).contains(&ndims) {
        return Err(DataError::BadRank {
            path: path_buf(),
            ndims,
        });
    }
    let header_len = 4 + 4 * usize::from(ndims);
    let Some(size_bytes) = bytes.get(4..header_len) else {
        return Err(DataError::TruncatedHeader {
            path: path_buf(),
            expected: header_len,
            actual: bytes.len(),
        });
    };
    let dims: Vec<usize> = size_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let total = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_add(header_len))
        .ok_or_else(|| DataError::TooLarge {
            path: path_buf(),
            what: format!("its header declares dimensions {dims:?}, whose product overflows"),
        })?;
    match bytes.len().cmp(&total) {
        std::cmp::Ordering::Less => Err(DataError::Truncated {
            path: path_buf(),
            expected: total,
            actual: bytes.len(),
        }),
        std::cmp::Ordering::Greater => Err(DataError::TrailingBytes {
            path: path_buf(),
            expected: total,
            actual: bytes.len(),
        }),
        std::cmp::Ordering::Equal => Ok((dims, header_len)),
    }
}

/// Writes an unsigned-byte IDX array to `path`, gzip-compressed if `gzip`, atomically: the bytes
/// go to a temporary file in the same folder which is then renamed over `path`, so a reader
/// never sees half a file.
///
/// `dims` must have 1 to 4 entries, each at most `u32::MAX`, whose product is `data.len()`.
/// The gzip header carries no timestamp, so equal inputs give byte-identical files.
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8], gzip: bool) -> Result<(), DataError> {
    let invalid = |reason: String| DataError::InvalidArray {
        path: path.to_path_buf(),
        reason,
    };
    if !(1..=4).contains(&dims.len()) {
        return Err(invalid(format!(
            "{} dimensions given, IDX here needs 1 to 4",
            dims.len()
        )));
    }
    let mut header = vec![0, 0, IDX_TYPE_U8, dims.len() as u8];
    for &d in dims {
        let d = u32::try_from(d).map_err(|_| invalid(format!("dimension {d} exceeds u32::MAX")))?;
        header.extend_from_slice(&d.to_be_bytes());
    }
    let count = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if count != Some(data.len()) {
        return Err(invalid(format!(
            "dimensions {dims:?} do not describe the {} bytes of data given",
            data.len()
        )));
    }
    write_atomically(path, |file| {
        if gzip {
            let mut enc = GzEncoder::new(BufWriter::new(file), Compression::best());
            enc.write_all(&header)?;
            enc.write_all(data)?;
            enc.finish()?.flush()
        } else {
            let mut w = BufWriter::new(file);
            w.write_all(&header)?;
            w.write_all(data)?;
            w.flush()
        }
    })
}

/// Distinguishes temporary files made by concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates a temporary file next to `path`, lets `fill` write it, syncs it and renames it over
/// `path`. On failure the temporary file is removed and `path` is left as it was.
pub(crate) fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> Result<(), DataError> {
    let temp = temp_path(path);
    let result = (|| {
        let mut file = fs::File::create(&temp)?;
        fill(&mut file)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)
    })();
    result.map_err(|source| {
        // Best effort: the temporary file may not even exist if creation failed.
        let _ = fs::remove_file(&temp);
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// `<dir>/.<name>.tmp-<pid>-<n>`: in the same folder, so the rename stays on one file system.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x.idx")
    }

    #[test]
    fn parse_idx_accepts_exact_length_and_returns_body() {
        let bytes = [0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6];
        let a = parse_idx(&bytes, p()).unwrap();
        assert_eq!(a.dims, vec![2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn parse_idx_rejects_unsupported_type_by_name() {
        let err = parse_idx(&[0, 0, 0x0D, 1, 0, 0, 0, 0], p()).unwrap_err();
        assert!(
            matches!(err, DataError::UnsupportedType { code: 0x0D, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("32-bit float"), "{err}");
    }

    #[test]
    fn parse_idx_rejects_rank_zero_and_five() {
        for r in [0u8, 5, 255] {
            let err = parse_idx(&[0, 0, 8, r], p()).unwrap_err();
            assert!(matches!(err, DataError::BadRank { .. }), "{err}");
        }
    }

    #[test]
    fn parse_idx_reports_overflowing_dimensions_without_panicking() {
        let mut bytes = vec![0, 0, 8, 4];
        bytes.extend_from_slice(&[0xff; 16]);
        let err = parse_idx(&bytes, p()).unwrap_err();
        // On 64-bit targets (2^32-1)^4 overflows usize.
        assert!(
            matches!(
                err,
                DataError::TooLarge { .. } | DataError::Truncated { .. }
            ),
            "{err}"
        );
    }

    #[test]
    fn parse_idx_rejects_trailing_bytes() {
        let err = parse_idx(&[0, 0, 8, 1, 0, 0, 0, 1, 7, 7], p()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TrailingBytes {
                    expected: 9,
                    actual: 10,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn decode_idx_reads_gzip_and_raw_alike() {
        let raw = [0u8, 0, 8, 1, 0, 0, 0, 3, 9, 8, 7];
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(&raw).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(
            decode_idx(&gz, p()).unwrap(),
            decode_idx(&raw, p()).unwrap()
        );
    }

    #[test]
    fn write_idx_rejects_inconsistent_dims() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let err = write_idx(&path, &[2, 2], &[0; 3], false).unwrap_err();
        assert!(matches!(err, DataError::InvalidArray { .. }), "{err}");
        assert!(!path.exists());
    }
}
