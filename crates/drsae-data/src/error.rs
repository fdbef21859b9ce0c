//! The one error type of the crate: every variant names the file it is about and says what is wrong.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while reading, writing, verifying or fetching data.
///
/// Messages are whole sentences meant for the researcher who has to fix the problem, so each
/// one names the file (or folder) and, where there is one, the remedy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file does not exist.
    #[error(
        "The data file {} does not exist. Put the four files {} (gzip or decompressed) in {}, \
         run `cargo xtask fetch-data` to download them, or pass `--data-dir` / set \
         DRSAE_DATA_DIR to the folder that already holds them.",
        .path.display(), crate::mnist::FILE_NAMES.join(", "), absolute_parent(.path)
    )]
    Missing {
        /// The path that was looked for.
        path: PathBuf,
    },

    /// Something other than a regular file (a folder, a socket, …) sits where a file should be.
    #[error("{} is not a regular file (it is a directory or another kind of entry); expected an IDX data file there.", .path.display())]
    NotAFile {
        /// The offending path.
        path: PathBuf,
    },

    /// The file has zero bytes (often an interrupted download).
    #[error("The file {} is empty (0 bytes); it was probably an interrupted download. Delete it and fetch it again.", .path.display())]
    Empty {
        /// The empty file.
        path: PathBuf,
    },

    /// The operating system refused a read or write.
    #[error("Could not access {}: {source}.", .path.display())]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The gzip stream ends before its end marker: the file was cut short.
    #[error("The gzip stream in {} ends early: the file is truncated (an interrupted download?). Delete it and fetch it again.", .path.display())]
    TruncatedGzip {
        /// The truncated file.
        path: PathBuf,
    },

    /// The gzip stream is damaged (bad header, bad deflate data or CRC mismatch).
    #[error("The gzip data in {} is corrupt ({reason}). Delete the file and fetch it again.", .path.display())]
    CorruptGzip {
        /// The damaged file.
        path: PathBuf,
        /// What the decompressor reported.
        reason: String,
    },

    /// The data would be larger than this crate is willing to hold in memory.
    #[error("{} is too large: {what}; no MNIST-like IDX file is that big.", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Which size was too large, in words.
        what: String,
    },

    /// The first two bytes are not zero, so this is not an IDX file.
    #[error(
        "{} is not an IDX file: it starts with bytes {:02x} {:02x} {:02x} {:02x}, but an IDX file starts with 00 00, a type code and a rank.",
        .path.display(), .found[0], .found[1], .found[2], .found[3]
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Its first four bytes (zero-padded if the file is shorter).
        found: [u8; 4],
    },

    /// The IDX element type is not unsigned byte (0x08), the only one MNIST uses.
    #[error("{} holds IDX elements of type 0x{code:02x} ({}); only type 0x08 (unsigned byte) is supported.", .path.display(), idx_type_name(*.code))]
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// The type code found in byte 2 of the header.
        code: u8,
    },

    /// The number of dimensions in the header is outside 1..=4.
    #[error("{} declares {ndims} dimensions; an IDX file here must have between 1 and 4.", .path.display())]
    BadRank {
        /// The file.
        path: PathBuf,
        /// The declared number of dimensions.
        ndims: u8,
    },

    /// The file ends inside its header.
    #[error("The IDX header of {} is truncated: it needs {expected} bytes but the file has only {actual}.", .path.display())]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// Bytes the header needs.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },

    /// The body is shorter than the dimensions in the header require.
    #[error("{} is truncated: its header promises {expected} bytes in total but the (decompressed) file has only {actual}.", .path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Total bytes (header and body) the header promises.
        expected: usize,
        /// Total bytes present.
        actual: usize,
    },

    /// There are bytes after the end of the data the header describes.
    #[error("{} has trailing bytes: its header describes {expected} bytes in total but the (decompressed) file has {actual}.", .path.display())]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Total bytes (header and body) the header describes.
        expected: usize,
        /// Total bytes present.
        actual: usize,
    },

    /// The array has the wrong rank or size for its role (e.g. images that are not 28×28).
    #[error("{} has shape {found:?}, but {expected} was expected.", .path.display())]
    WrongShape {
        /// The file.
        path: PathBuf,
        /// The expected shape, in words (e.g. "[n, 28, 28]").
        expected: String,
        /// The shape found.
        found: Vec<usize>,
    },

    /// A label outside 0..=9.
    #[error("{} has label {label} at index {index}; labels must be digits 0 to 9.", .path.display())]
    BadLabel {
        /// The labels file.
        path: PathBuf,
        /// Index of the first bad label.
        index: usize,
        /// The bad value.
        label: u8,
    },

    /// The images and labels files hold different numbers of examples.
    #[error("{} holds {images} images but {} holds {labels} labels; the two files must have the same count.", .images_path.display(), .labels_path.display())]
    CountMismatch {
        /// The images file.
        images_path: PathBuf,
        /// Number of images.
        images: usize,
        /// The labels file.
        labels_path: PathBuf,
        /// Number of labels.
        labels: usize,
    },

    /// The requested validation split is not smaller than the training file.
    #[error("{} holds {available} training images, too few to hold out {n_valid} for validation and still train on at least one.", .path.display())]
    SplitTooLarge {
        /// The training images file.
        path: PathBuf,
        /// The requested validation size.
        n_valid: usize,
        /// Training images available.
        available: usize,
    },

    /// A file holds fewer records than were asked for (when cutting a fixture).
    #[error("{} holds {available} records but {requested} were requested.", .path.display())]
    NotEnoughRecords {
        /// The file.
        path: PathBuf,
        /// Records requested.
        requested: usize,
        /// Records present.
        available: usize,
    },

    /// The SHA-256 of the decompressed file differs from the published one.
    #[error(
        "The SHA-256 of the decompressed contents of {} is {actual}, but the official file has {expected}. \
         The file is damaged or not the official one: delete it and fetch it again, or pass \
         `--allow-modified-data` if you changed it on purpose.",
        .path.display()
    )]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The expected lowercase hex digest.
        expected: String,
        /// The lowercase hex digest found.
        actual: String,
    },

    /// Downloading failed from every mirror.
    #[error(
        "Could not download the data into {}: {}. Without network access, place the files {} \
         (gzip or decompressed) in {} by hand, or pass `--data-dir` / set DRSAE_DATA_DIR to a \
         folder that already holds all four.",
        .dir.display(), .attempts.join("; "), .needed.join(", "), .dir.display()
    )]
    Network {
        /// The (absolute) destination folder.
        dir: PathBuf,
        /// The file names that are still missing.
        needed: Vec<String>,
        /// One line per failed attempt: the URL and what went wrong.
        attempts: Vec<String>,
    },

    /// `write_idx` was given dimensions that do not describe the data.
    #[error("Cannot write {} as IDX: {reason}.", .path.display())]
    InvalidArray {
        /// The destination file.
        path: PathBuf,
        /// What is inconsistent.
        reason: String,
    },
}

impl DataError {
    /// The file or folder this error is about (the images file for [`DataError::CountMismatch`]).
    pub fn path(&self) -> &Path {
        match self {
            Self::Missing { path }
            | Self::NotAFile { path }
            | Self::Empty { path }
            | Self::Io { path, .. }
            | Self::TruncatedGzip { path }
            | Self::CorruptGzip { path, .. }
            | Self::TooLarge { path, .. }
            | Self::BadMagic { path, .. }
            | Self::UnsupportedType { path, .. }
            | Self::BadRank { path, .. }
            | Self::TruncatedHeader { path, .. }
            | Self::Truncated { path, .. }
            | Self::TrailingBytes { path, .. }
            | Self::WrongShape { path, .. }
            | Self::BadLabel { path, .. }
            | Self::SplitTooLarge { path, .. }
            | Self::NotEnoughRecords { path, .. }
            | Self::ChecksumMismatch { path, .. }
            | Self::InvalidArray { path, .. } => path,
            Self::CountMismatch { images_path, .. } => images_path,
            Self::Network { dir, .. } => dir,
        }
    }

    /// Wraps an I/O error, turning "not found" into [`DataError::Missing`] so the message says
    /// where the files belong.
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            Self::Missing {
                path: path.to_path_buf(),
            }
        } else {
            Self::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// The folder holding `path`, absolute when the current directory is known, for messages that
/// tell the user where to put files.
fn absolute_parent(path: &Path) -> String {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::path::absolute(parent)
        .unwrap_or_else(|_| parent.to_path_buf())
        .display()
        .to_string()
}

/// Names of the IDX element types, so an unsupported one is reported by name.
fn idx_type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "16-bit integer",
        0x0C => "32-bit integer",
        0x0D => "32-bit float",
        0x0E => "64-bit float",
        _ => "not a valid IDX type code",
    }
}
