//! Downloading MNIST from public mirrors, verifying each file before it is written atomically.
//!
//! Files already present with the right checksum are left alone, so fetching is idempotent and
//! cheap to run before every experiment. Timeouts are short for the parts that fail when there
//! is no network (name resolution, connecting), so an offline machine gets the "put the files
//! here by hand" message within seconds rather than after minutes.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::DataError;
use crate::idx::{decompressed, is_gzip, read_decoded, write_atomically};
use crate::mnist::{FILE_NAMES, MNIST_SHA256, locate_file, sha256_hex};

/// Mirrors tried in order; each serves `<mirror><file name>.gz`.
pub const MNIST_MIRRORS: [&str; 3] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
];

/// Largest download accepted; the biggest MNIST file is under 10 MB compressed, 47 MB raw.
const MAX_DOWNLOAD_BYTES: u64 = 256 << 20;

/// Time allowed to resolve a host name or to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time allowed for one file's whole exchange, body included (10 MB at 35 KB/s).
const GLOBAL_TIMEOUT: Duration = Duration::from_secs(300);

/// Time allowed for the server to go silent mid-download before giving up on that mirror.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes sure `dir` holds the four official MNIST files, downloading those that are missing or
/// fail their checksum from [`MNIST_MIRRORS`].
pub fn fetch_mnist(dir: &Path) -> Result<(), DataError> {
    fetch_mnist_from(dir, &MNIST_MIRRORS)
}

/// [`fetch_mnist`] from the given mirrors (tried in order; each a URL prefix to which the file
/// name is appended). A download is written only after its decompressed SHA-256 matches.
///
/// Stops at the first file that no mirror could supply, with a [`DataError::Network`] that
/// lists the files still missing and the absolute folder to put them in.
pub fn fetch_mnist_from(dir: &Path, mirrors: &[&str]) -> Result<(), DataError> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let abs_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());

    let needed: Vec<(&str, &str)> = FILE_NAMES
        .iter()
        .zip(MNIST_SHA256)
        .filter(|&(name, (_, want))| !present_and_valid(&locate_file(dir, name), want))
        .map(|(name, (_, want))| (*name, want))
        .collect();
    if needed.is_empty() {
        return Ok(());
    }

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_resolve(Some(CONNECT_TIMEOUT))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(GLOBAL_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .build()
        .into();

    for (i, &(name, want)) in needed.iter().enumerate() {
        let mut attempts = Vec::new();
        let mut done = false;
        for mirror in mirrors {
            let url = format!("{}/{name}", mirror.trim_end_matches('/'));
            match fetch_one(&agent, &url, dir, name, want) {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(why) => attempts.push(format!("{url}: {why}")),
            }
        }
        if !done {
            return Err(DataError::Network {
                dir: abs_dir,
                needed: needed[i..].iter().map(|(n, _)| (*n).to_owned()).collect(),
                attempts,
            });
        }
    }
    Ok(())
}

/// Whether `path` exists and its decompressed contents have digest `want`.
fn present_and_valid(path: &Path, want: &str) -> bool {
    read_decoded(path).is_ok_and(|d| sha256_hex(&d.bytes) == want)
}

/// Downloads one file, checks its digest and writes it into `dir`. The error is a short
/// description for the attempt list.
fn fetch_one(
    agent: &ureq::Agent,
    url: &str,
    dir: &Path,
    name: &str,
    want: &str,
) -> Result<(), String> {
    let body = download(agent, url, name)?;
    let dest = dir.join(name);
    let raw = decompressed(&body, &dest).map_err(|e| e.to_string())?;
    let got = sha256_hex(&raw);
    if got != want {
        return Err(format!("checksum mismatch: got {got}, expected {want}"));
    }
    // A server may send the file with `Content-Encoding: gzip`, which the client undoes; then
    // the bytes are raw and go under the decompressed name, so no file named .gz holds raw data.
    let (dest, bytes): (PathBuf, &[u8]) = if is_gzip(&body) {
        (dest, &body)
    } else {
        let raw_name = name.strip_suffix(".gz").unwrap_or(name);
        // A stale, failing .gz would otherwise be preferred over the good raw file on load.
        let _ = std::fs::remove_file(&dest);
        (dir.join(raw_name), &raw)
    };
    write_atomically(&dest, |f| std::io::Write::write_all(f, bytes)).map_err(|e| e.to_string())
}

/// GETs `url` into memory with a progress bar on stderr (hidden when stderr is not a terminal).
fn download(agent: &ureq::Agent, url: &str, name: &str) -> Result<Vec<u8>, String> {
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let len = response.body().content_length();
    let bar = progress_bar(len, name);
    let capacity = len.unwrap_or(0).min(MAX_DOWNLOAD_BYTES) as usize;
    let mut bytes = Vec::with_capacity(capacity);
    let reader = response
        .body_mut()
        .with_config()
        .limit(MAX_DOWNLOAD_BYTES)
        .reader();
    let result = bar.wrap_read(reader).read_to_end(&mut bytes);
    bar.finish_and_clear();
    result.map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// A byte-count progress bar, or a hidden one when nobody is watching stderr (CI, logs).
fn progress_bar(len: Option<u64>, name: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let style = ProgressStyle::with_template(
        "{msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(name.to_owned());
    bar
}
