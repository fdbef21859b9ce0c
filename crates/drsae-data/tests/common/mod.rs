//! Helpers shared by the integration tests: the committed fixture, temporary copies, full MNIST.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

use drsae_data::{DATA_DIR_ENV, FILE_NAMES, LoadOptions};

/// The committed 1000 + 500 example fixture cut from MNIST.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mnist-mini")
}

/// Options that suit the fixture: 200 validation examples, no checksum (it is not official).
pub fn fixture_opts() -> LoadOptions {
    LoadOptions {
        n_valid: 200,
        verify_checksums: false,
        ..LoadOptions::default()
    }
}

/// A temporary folder holding a copy of the fixture, to be damaged by a test.
pub fn copy_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in FILE_NAMES {
        std::fs::copy(fixture_dir().join(name), dir.path().join(name)).unwrap();
    }
    dir
}

/// Decompresses a gzip buffer.
pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The folder holding full MNIST, from `DRSAE_DATA_DIR`; `None` (after printing why) when it is
/// unset or lacks a file, so tests that need it say they did not run instead of passing silently.
pub fn full_mnist_dir(test: &str) -> Option<PathBuf> {
    let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|d| !d.is_empty()) else {
        eprintln!("{test}: not run: {DATA_DIR_ENV} is unset (point it at full MNIST to run it)");
        return None;
    };
    let dir = PathBuf::from(dir);
    for name in FILE_NAMES {
        let raw = name.strip_suffix(".gz").unwrap_or(name);
        if !dir.join(name).is_file() && !dir.join(raw).is_file() {
            eprintln!("{test}: not run: {} has no {name}", dir.display());
            return None;
        }
    }
    Some(dir)
}
