//! Loading MNIST / Fashion-MNIST: the four IDX files, validated, checksummed, split and preprocessed.
//!
//! The 60,000 training images are split into train (the first `60000 - n_valid`) and
//! validation (the last `n_valid`, 10,000 by default, as in the paper); the 10,000 test images
//! are kept apart. The four files are read in parallel (one thread each), and each thread
//! hashes its file right after decompressing it, while the bytes are still in cache.

use std::path::{Path, PathBuf};
use std::thread;

use sha2::{Digest, Sha256};

use crate::error::DataError;
use crate::idx::{Decoded, read_decoded};

/// The four file names, in the order train images, train labels, test images, test labels.
///
/// Each is looked for first under this (gzip) name and then without the `.gz`; either may hold
/// raw or gzip bytes, since compression is detected from the contents.
pub const FILE_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// SHA-256 (lowercase hex) of the official MNIST files after decompression, keyed by the
/// decompressed file name.
pub const MNIST_SHA256: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

/// Image side length; both datasets are 28×28.
const SIDE: usize = 28;

/// Pixels per image.
const DIM: usize = SIDE * SIDE;

/// Number of classes; labels are 0..=9.
const N_CLASSES: u8 = 10;

/// Which dataset the files hold. Both use the same four file names and the same format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DatasetKind {
    /// LeCun, Cortes & Burges' handwritten digits.
    #[default]
    Mnist,
    /// Zalando's Fashion-MNIST, a drop-in replacement with clothing classes.
    ///
    /// Its decompressed SHA-256 digests are not built in (only the MD5 of its gzip files is
    /// published), so loading it reports [`ChecksumStatus::Unknown`] and verifies nothing.
    FashionMnist,
}

impl DatasetKind {
    /// The built-in table of decompressed SHA-256 digests, if this dataset has one.
    pub fn checksums(self) -> Option<&'static [(&'static str, &'static str)]> {
        match self {
            Self::Mnist => Some(&MNIST_SHA256),
            Self::FashionMnist => None,
        }
    }

    /// A short lowercase name (`mnist`, `fashion-mnist`) for logs and result files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::FashionMnist => "fashion-mnist",
        }
    }
}

/// How pixels are turned into model inputs.
///
/// The paper divides pixels by 255 and then scales each image to unit L2 norm. Because the
/// second step removes any common factor, `unit_l2` alone gives the same result; it is computed
/// directly from the integer pixels as `p / ‖p‖` (exact sum of squares, one rounding per pixel).
/// An all-zero image stays zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preprocess {
    /// Divide pixels by 255 so they lie in [0, 1].
    pub scale_01: bool,
    /// Scale each image to unit Euclidean norm.
    pub unit_l2: bool,
}

impl Default for Preprocess {
    /// Both steps, as in the paper.
    fn default() -> Self {
        Self {
            scale_01: true,
            unit_l2: true,
        }
    }
}

/// What to load and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Which dataset the folder holds.
    pub kind: DatasetKind,
    /// Pixel preprocessing.
    pub preprocess: Preprocess,
    /// Check the SHA-256 of each decompressed file (default `true`); `false` allows data that
    /// was modified on purpose (the harness's `--allow-modified-data`).
    pub verify_checksums: bool,
    /// How many of the last training images form the validation split (default 10,000).
    pub n_valid: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            kind: DatasetKind::Mnist,
            preprocess: Preprocess::default(),
            verify_checksums: true,
            n_valid: 10_000,
        }
    }
}

/// A set of examples: images as rows of a row-major matrix, and their labels.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Split {
    /// `len() × dim` pixels, row-major, preprocessed.
    pub images: Vec<f32>,
    /// One label in 0..=9 per image.
    pub labels: Vec<u8>,
    /// Pixels per image (784).
    pub dim: usize,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of example `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * self.dim..(i + 1) * self.dim]
    }

    /// How many examples of each class 0..=9 there are.
    pub fn class_counts(&self) -> [usize; 10] {
        let mut counts = [0usize; 10];
        for &l in &self.labels {
            // Labels are validated on load; a hand-built Split with a bad label is ignored here.
            if let Some(c) = counts.get_mut(usize::from(l)) {
                *c += 1;
            }
        }
        counts
    }
}

/// Whether the files' checksums were verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumStatus {
    /// All four files match the known digests.
    Verified,
    /// Verification was turned off (`verify_checksums: false`).
    Skipped,
    /// No digests are known for this dataset (or for some of its files), so nothing was checked.
    Unknown,
}

/// The three splits of a dataset and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Training examples: the first `60000 - n_valid` of the training file.
    pub train: Split,
    /// Validation examples: the last `n_valid` of the training file.
    pub valid: Split,
    /// Test examples: the whole test file.
    pub test: Split,
    /// Whether the files were checked against the known SHA-256 digests.
    pub checksums: ChecksumStatus,
    /// The folder the files were read from.
    pub dir: PathBuf,
}

/// Loads the dataset in `dir`, verifying it against the built-in digests of `opts.kind`.
///
/// Every file problem is a [`DataError`] naming the file; structural problems are reported
/// before checksum mismatches, because they say more precisely what is wrong.
pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
    load_with_checksums(dir, opts, opts.kind.checksums())
}

/// [`load`] with an explicit table of expected digests: `(decompressed file name, lowercase hex
/// SHA-256)`. `None` means no digests are known ([`ChecksumStatus::Unknown`]); a table that
/// lacks one of the four files also gives `Unknown` (the files it does list are still checked).
/// With `opts.verify_checksums == false` nothing is hashed and the status is `Skipped`.
pub fn load_with_checksums(
    dir: &Path,
    opts: &LoadOptions,
    expected: Option<&[(&str, &str)]>,
) -> Result<Dataset, DataError> {
    let paths = FILE_NAMES.map(|name| locate_file(dir, name));
    let hash = opts.verify_checksums && expected.is_some();
    let pre = opts.preprocess;

    // One thread per file; the train-images file (47 MB of the 55) runs on this thread.
    let (train_images, train_labels, test_images, test_labels) = thread::scope(|s| {
        let h1 = s.spawn(|| load_labels(&paths[1], hash));
        let h2 = s.spawn(|| load_images(&paths[2], hash, 0, pre));
        let h3 = s.spawn(|| load_labels(&paths[3], hash));
        let r0 = load_images(&paths[0], hash, opts.n_valid, pre);
        (r0, join(h1), join(h2), join(h3))
    });
    // Errors in file order, so the same bad folder always gives the same message.
    let train_images = train_images?;
    let train_labels = train_labels?;
    let test_images = test_images?;
    let test_labels = test_labels?;

    for (images, labels, ip, lp) in [
        (&train_images, &train_labels, &paths[0], &paths[1]),
        (&test_images, &test_labels, &paths[2], &paths[3]),
    ] {
        if images.count != labels.labels.len() {
            return Err(DataError::CountMismatch {
                images_path: ip.clone(),
                images: images.count,
                labels_path: lp.clone(),
                labels: labels.labels.len(),
            });
        }
    }

    let checksums = if !opts.verify_checksums {
        ChecksumStatus::Skipped
    } else if let Some(table) = expected {
        let digests = [
            &train_images.sha256,
            &train_labels.sha256,
            &test_images.sha256,
            &test_labels.sha256,
        ];
        let mut all_known = true;
        for ((name, path), digest) in FILE_NAMES.iter().zip(&paths).zip(digests) {
            let key = name.strip_suffix(".gz").unwrap_or(name);
            let Some(&(_, want)) = table.iter().find(|(k, _)| *k == key) else {
                all_known = false;
                continue;
            };
            let got = digest.as_deref().unwrap_or_default();
            if !got.eq_ignore_ascii_case(want) {
                return Err(DataError::ChecksumMismatch {
                    path: path.clone(),
                    expected: want.to_ascii_lowercase(),
                    actual: got.to_owned(),
                });
            }
        }
        if all_known {
            ChecksumStatus::Verified
        } else {
            ChecksumStatus::Unknown
        }
    } else {
        ChecksumStatus::Unknown
    };

    let n_train = train_images.first.len() / DIM;
    let mut train_label_vec = train_labels.labels;
    let valid_labels = train_label_vec.split_off(n_train);
    Ok(Dataset {
        train: Split {
            images: train_images.first,
            labels: train_label_vec,
            dim: DIM,
        },
        valid: Split {
            images: train_images.second,
            labels: valid_labels,
            dim: DIM,
        },
        test: Split {
            images: test_images.first,
            labels: test_labels.labels,
            dim: DIM,
        },
        checksums,
        dir: dir.to_path_buf(),
    })
}

/// Waits for a loader thread; the loaders do not panic on any input, so a panic is a bug and is
/// passed on unchanged.
fn join<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// `dir/name` if it exists, else `dir/name` without `.gz` if that exists, else `dir/name` (so
/// the "missing" error names the canonical gzip file).
pub(crate) fn locate_file(dir: &Path, name: &str) -> PathBuf {
    let gz = dir.join(name);
    if gz.exists() {
        return gz;
    }
    match name.strip_suffix(".gz") {
        Some(raw) if dir.join(raw).exists() => dir.join(raw),
        _ => gz,
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest.iter() {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

/// Digits for [`sha256_hex`].
const HEX: &[u8; 16] = b"0123456789abcdef";

/// An images file, converted and cut into two row ranges.
struct Images {
    /// The first `count - n_second` images.
    first: Vec<f32>,
    /// The last `n_second` images.
    second: Vec<f32>,
    /// Total number of images in the file.
    count: usize,
    /// Digest of the decompressed file, if requested.
    sha256: Option<String>,
}

/// A labels file.
struct Labels {
    /// All labels, each validated to be < 10.
    labels: Vec<u8>,
    /// Digest of the decompressed file, if requested.
    sha256: Option<String>,
}

/// Reads an images file, checks it is `[n, 28, 28]`, and converts it, with the last
/// `n_second` images going to a separate buffer (the validation split).
fn load_images(
    path: &Path,
    hash: bool,
    n_second: usize,
    pre: Preprocess,
) -> Result<Images, DataError> {
    let decoded = read_decoded(path)?;
    // Hash on a second thread while this one converts: both only read the decompressed bytes.
    let (sha256, converted) = thread::scope(|s| {
        let hasher = hash.then(|| s.spawn(|| sha256_hex(&decoded.bytes)));
        let converted = convert_split(path, &decoded, n_second, pre);
        (hasher.map(join), converted)
    });
    let (first, second, count) = converted?;
    Ok(Images {
        first,
        second,
        count,
        sha256,
    })
}

/// Checks that `decoded` is `[n, 28, 28]` and converts it, the last `n_second` images into a
/// second buffer. Returns both buffers and `n`.
fn convert_split(
    path: &Path,
    decoded: &Decoded,
    n_second: usize,
    pre: Preprocess,
) -> Result<(Vec<f32>, Vec<f32>, usize), DataError> {
    let count = match decoded.dims[..] {
        [n, SIDE, SIDE] => n,
        _ => {
            return Err(DataError::WrongShape {
                path: path.to_path_buf(),
                expected: "[n, 28, 28] (an images file)".into(),
                found: decoded.dims.clone(),
            });
        }
    };
    if n_second > 0 && n_second >= count {
        return Err(DataError::SplitTooLarge {
            path: path.to_path_buf(),
            n_valid: n_second,
            available: count,
        });
    }
    // The header parser checked that the body is exactly count × 784 bytes.
    let (a, b) = decoded.body().split_at((count - n_second) * DIM);
    Ok((convert_images(a, pre), convert_images(b, pre), count))
}

/// Reads a labels file, checks it is one-dimensional and that every label is a digit.
fn load_labels(path: &Path, hash: bool) -> Result<Labels, DataError> {
    let decoded = read_decoded(path)?;
    let sha256 = hash.then(|| sha256_hex(&decoded.bytes));
    if decoded.dims.len() != 1 {
        return Err(DataError::WrongShape {
            path: path.to_path_buf(),
            expected: "[n] (a labels file)".into(),
            found: decoded.dims,
        });
    }
    if let Some((index, &label)) = decoded
        .body()
        .iter()
        .enumerate()
        .find(|&(_, &l)| l >= N_CLASSES)
    {
        return Err(DataError::BadLabel {
            path: path.to_path_buf(),
            index,
            label,
        });
    }
    let header_len = decoded.header_len;
    let mut labels = decoded.bytes;
    labels.drain(..header_len);
    Ok(Labels { labels, sha256 })
}

/// Converts whole images of [`DIM`] bytes to `f32` with the requested preprocessing.
///
/// Naively: `x = p / 255`, then `x /= ‖x‖`. Here one factor per image is computed (from the
/// exact integer sum of squares when normalising) and applied in a single pass that the
/// compiler vectorises.
fn convert_images(pixels: &[u8], pre: Preprocess) -> Vec<f32> {
    let mut out = Vec::with_capacity(pixels.len());
    for image in pixels.chunks_exact(DIM) {
        let scale = if pre.unit_l2 {
            let sum_sq: u32 = image.iter().map(|&p| u32::from(p) * u32::from(p)).sum();
            // 784 · 255² < 2³², so the sum is exact in u32.
            if sum_sq == 0 {
                0.0
            } else {
                (1.0 / f64::from(sum_sq).sqrt()) as f32
            }
        } else if pre.scale_01 {
            1.0 / 255.0
        } else {
            1.0
        };
        out.extend(image.iter().map(|&p| f32::from(p) * scale));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convert_images_gives_unit_norm_and_keeps_blank_images_zero() {
        let mut pixels = vec![0u8; 2 * DIM];
        pixels[3] = 255;
        pixels[10] = 17;
        pixels[DIM + 5] = 0;
        let out = convert_images(&pixels, Preprocess::default());
        let norm: f32 = out[..DIM].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6, "{norm}");
        assert!(out[DIM..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn convert_images_scale_01_only_maps_255_to_one() {
        let mut pixels = vec![0u8; DIM];
        pixels[0] = 255;
        pixels[1] = 51;
        let pre = Preprocess {
            scale_01: true,
            unit_l2: false,
        };
        let out = convert_images(&pixels, pre);
        assert_eq!(out[0], 1.0);
        assert!((out[1] - 0.2).abs() < 1e-7);
    }

    #[test]
    fn sha256_hex_matches_known_digest_of_abc() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
