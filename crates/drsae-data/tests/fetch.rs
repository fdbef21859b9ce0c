//! Fetching: fails fast with a useful message offline, skips verified files, downloads and
//! verifies through a local HTTP server standing in for the mirrors.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use drsae_data::{DataError, FILE_NAMES, LoadOptions, fetch_mnist_from, load};

/// A local URL nothing listens on, so connections are refused at once: the port was free a
/// moment ago (more dependable than a fixed port such as 9, which a discard service may hold).
fn unreachable() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/")
}

#[test]
fn fetch_fails_fast_offline_and_says_which_files_to_place_where() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnist");
    let start = Instant::now();
    let url = unreachable();
    let err = fetch_mnist_from(&dir, &[&url, &url]).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
    let DataError::Network {
        dir: err_dir,
        needed,
        attempts,
    } = &err
    else {
        panic!("expected Network, got {err}");
    };
    assert!(err_dir.is_absolute());
    assert_eq!(needed, &FILE_NAMES.map(String::from));
    assert_eq!(attempts.len(), 2);
    let msg = err.to_string();
    let abs = std::path::absolute(&dir).unwrap().display().to_string();
    for needle in FILE_NAMES
        .iter()
        .copied()
        .chain([abs.as_str(), "--data-dir", "DRSAE_DATA_DIR"])
    {
        assert!(msg.contains(needle), "message lacks {needle:?}: {msg}");
    }
    assert!(
        msg.contains(&url),
        "message should say what was tried: {msg}"
    );
}

/// Copies full MNIST into a temporary folder, or `None` (with a printed reason).
fn copy_full_mnist(test: &str) -> Option<tempfile::TempDir> {
    let src = common::full_mnist_dir(test)?;
    let tmp = tempfile::tempdir().unwrap();
    for name in FILE_NAMES {
        std::fs::copy(src.join(name), tmp.path().join(name)).ok()?;
    }
    Some(tmp)
}

#[test]
fn fetch_skips_files_already_present_and_verified() {
    let Some(tmp) = copy_full_mnist("fetch_skips_files_already_present_and_verified") else {
        return;
    };
    let url = unreachable();
    fetch_mnist_from(tmp.path(), &[&url]).unwrap();

    // With one file damaged, only that one is reported as needed.
    std::fs::write(tmp.path().join(FILE_NAMES[1]), [0, 0, 8, 1, 0, 0, 0, 0]).unwrap();
    let err = fetch_mnist_from(tmp.path(), &[&url]).unwrap_err();
    assert!(
        matches!(&err, DataError::Network { needed, .. } if needed == &[FILE_NAMES[1]]),
        "{err}"
    );
}

/// Serves `files` (name → bytes) over HTTP/1.1 on localhost for `n_requests` requests; other
/// paths get 404. Returns the base URL of the folder `/<prefix>/`.
fn serve(files: Vec<(String, Vec<u8>)>, prefix: &'static str, n_requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(n_requests) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            // Drain the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            let body = files
                .iter()
                .find(|(name, _)| path == format!("/{prefix}/{name}"))
                .map(|(_, bytes)| bytes.as_slice());
            let _ = match body {
                Some(bytes) => write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    bytes.len()
                )
                .and_then(|()| stream.write_all(bytes)),
                None => write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                ),
            };
        }
    });
    format!("http://{addr}/{prefix}/")
}

fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
    FILE_NAMES
        .iter()
        .map(|n| (n.to_string(), std::fs::read(dir.join(n)).unwrap()))
        .collect()
}

#[test]
fn fetch_downloads_verifies_and_falls_back_between_mirrors() {
    let Some(src) =
        common::full_mnist_dir("fetch_downloads_verifies_and_falls_back_between_mirrors")
    else {
        return;
    };
    // Mirror 1 knows nothing (404), mirror 2 serves the fixture (wrong checksum), mirror 3 is
    // right: every file must come from mirror 3.
    let empty = serve(Vec::new(), "empty", 4);
    let wrong = serve(read_all(&common::fixture_dir()), "wrong", 4);
    let good = serve(read_all(&src), "good", 4);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new");
    fetch_mnist_from(&dir, &[&empty, &wrong, &good]).unwrap();
    let data = load(&dir, &LoadOptions::default()).unwrap();
    assert_eq!(data.checksums, drsae_data::ChecksumStatus::Verified);
    for name in FILE_NAMES {
        let a = std::fs::read(src.join(name)).unwrap();
        assert!(
            a == std::fs::read(dir.join(name)).unwrap(),
            "{name} differs from the source"
        );
    }
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 4);
}

#[test]
fn fetch_reports_checksum_mismatch_of_every_mirror() {
    let wrong = serve(read_all(&common::fixture_dir()), "wrong", 1);
    let tmp = tempfile::tempdir().unwrap();
    let err = fetch_mnist_from(tmp.path(), &[&wrong]).unwrap_err();
    assert!(
        matches!(&err, DataError::Network { attempts, .. } if attempts[0].contains("checksum mismatch")),
        "{err}"
    );
    // Nothing unverified was written.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
