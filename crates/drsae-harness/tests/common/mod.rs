//! Helpers shared by the end-to-end tests that run the `drsae` binary on the fixture.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The committed 1,000-image MNIST fixture.
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../drsae-data/tests/fixtures/mnist-mini")
}

/// `drsae` with a fixed git revision, so that no test depends on (or runs) git.
pub fn drsae() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_drsae"));
    c.env("DRSAE_GIT_REV", "e2e-test");
    c
}

/// Runs `c`, failing the test with its stderr unless it exits successfully.
#[track_caller]
pub fn run_ok(c: &mut Command) -> Output {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{c:?} did not start: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
