//! Hand-made bad files: each defect gives its own `DataError` variant, naming the file.

mod common;

use std::io::Write;
use std::path::Path;

use sha2::Digest;

use common::{copy_fixture, fixture_opts, gunzip};
use drsae_data::{
    DataError, FILE_NAMES, LoadOptions, MNIST_SHA256, load, load_with_checksums, read_idx,
    write_idx,
};

/// Asserts the error is about `path`, and that its message says so.
fn assert_names(err: &DataError, path: &Path) {
    assert_eq!(err.path(), path, "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "message lacks path: {err}"
    );
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn idx_reader_rejects_bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("raw", vec![1u8, 2, 8, 1, 0, 0, 0, 0]),
        ("gz", gzip(&[1u8, 2, 8, 1, 0, 0, 0, 0])),
        ("text", b"<html>not found</html>".to_vec()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let err = read_idx(&path).unwrap_err();
        assert!(matches!(err, DataError::BadMagic { .. }), "{name}: {err}");
        assert_names(&err, &path);
    }
    let err = read_idx(&dir.path().join("raw")).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::BadMagic {
                found: [1, 2, 8, 1],
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("01 02 08 01"), "{err}");
}

#[test]
fn idx_reader_rejects_truncated_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short-header");
    std::fs::write(&path, [0, 0, 8, 3, 0, 0, 0, 5, 0, 0]).unwrap();
    let err = read_idx(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TruncatedHeader {
                expected: 16,
                actual: 10,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, &path);

    std::fs::write(&path, [0, 0, 8]).unwrap();
    let err = read_idx(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TruncatedHeader {
                expected: 4,
                actual: 3,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn idx_reader_rejects_truncated_body() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short-body.gz");
    write_idx(&path, &[10], &[1; 10], false).unwrap();
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, gzip(&full[..full.len() - 5])).unwrap();
    let err = read_idx(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Truncated {
                expected: 18,
                actual: 13,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, &path);
}

#[test]
fn idx_reader_rejects_trailing_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long");
    write_idx(&path, &[2, 2], &[1, 2, 3, 4], false).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.push(0);
    std::fs::write(&path, &bytes).unwrap();
    let err = read_idx(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TrailingBytes {
                expected: 16,
                actual: 17,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, &path);
}

#[test]
fn idx_reader_rejects_unsupported_element_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("floats");
    std::fs::write(&path, [0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap();
    let err = read_idx(&path).unwrap_err();
    assert!(
        matches!(err, DataError::UnsupportedType { code: 0x0D, .. }),
        "{err}"
    );
    assert_names(&err, &path);
}

#[test]
fn idx_reader_rejects_gzip_stream_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(common::fixture_dir().join(FILE_NAMES[0])).unwrap();
    let path = dir.path().join("cut.gz");
    // Cuts inside the gzip header, the deflate data and the 8-byte trailer.
    for keep in [3, 11, 100, good.len() / 2, good.len() - 9, good.len() - 1] {
        std::fs::write(&path, &good[..keep]).unwrap();
        let err = read_idx(&path).unwrap_err();
        assert!(
            matches!(err, DataError::TruncatedGzip { .. }),
            "cut at {keep}: {err}"
        );
        assert_names(&err, &path);
    }
}

#[test]
fn idx_reader_rejects_gzip_with_bad_crc() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(common::fixture_dir().join(FILE_NAMES[1])).unwrap();
    let n = bytes.len();
    bytes[n - 8] ^= 0xff; // first byte of the CRC-32 in the trailer
    let path = dir.path().join("crc.gz");
    std::fs::write(&path, &bytes).unwrap();
    let err = read_idx(&path).unwrap_err();
    assert!(matches!(err, DataError::CorruptGzip { .. }), "{err}");
    assert_names(&err, &path);
}

#[test]
fn idx_reader_rejects_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.gz");
    std::fs::write(&path, []).unwrap();
    let err = read_idx(&path).unwrap_err();
    assert!(matches!(err, DataError::Empty { .. }), "{err}");
    assert_names(&err, &path);
}

#[test]
fn idx_reader_rejects_directory_where_file_should_be() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAMES[0]);
    std::fs::create_dir(&path).unwrap();
    let err = read_idx(&path).unwrap_err();
    assert!(matches!(err, DataError::NotAFile { .. }), "{err}");
    assert_names(&err, &path);
}

#[test]
fn load_reports_missing_file_and_where_to_put_it() {
    let dir = copy_fixture();
    let path = dir.path().join(FILE_NAMES[3]);
    std::fs::remove_file(&path).unwrap();
    let err = load(dir.path(), &fixture_opts()).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err}");
    assert_names(&err, &path);
    let msg = err.to_string();
    let abs = std::path::absolute(dir.path()).unwrap();
    for needle in [
        "cargo xtask fetch-data",
        "--data-dir",
        "DRSAE_DATA_DIR",
        &abs.display().to_string(),
    ] {
        assert!(msg.contains(needle), "message lacks {needle:?}: {msg}");
    }
    for name in FILE_NAMES {
        assert!(msg.contains(name), "message lacks {name}: {msg}");
    }
}

#[test]
fn load_reports_missing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder");
    let err = load(&missing, &fixture_opts()).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err}");
    assert_names(&err, &missing.join(FILE_NAMES[0]));
}

#[test]
fn load_rejects_image_label_count_mismatch() {
    let dir = copy_fixture();
    let labels = dir.path().join(FILE_NAMES[3]);
    write_idx(&labels, &[499], &[1; 499], true).unwrap();
    let err = load(dir.path(), &fixture_opts()).unwrap_err();
    match &err {
        DataError::CountMismatch {
            images_path,
            images: 500,
            labels_path,
            labels: 499,
        } => {
            assert_eq!(images_path, &dir.path().join(FILE_NAMES[2]));
            assert_eq!(labels_path, &labels);
        }
        _ => panic!("expected CountMismatch, got {err}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&labels.display().to_string()) && msg.contains("499"),
        "{msg}"
    );
}

#[test]
fn load_rejects_label_of_ten() {
    let dir = copy_fixture();
    let path = dir.path().join(FILE_NAMES[1]);
    let mut labels = read_idx(&path).unwrap();
    labels.data[3] = 10;
    write_idx(&path, &labels.dims, &labels.data, true).unwrap();
    let err = load(dir.path(), &fixture_opts()).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::BadLabel {
                index: 3,
                label: 10,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, &path);
}

#[test]
fn load_rejects_images_that_are_not_28_by_28() {
    let dir = copy_fixture();
    let path = dir.path().join(FILE_NAMES[2]);
    write_idx(&path, &[500, 27, 28], &vec![0; 500 * 27 * 28], true).unwrap();
    let err = load(dir.path(), &fixture_opts()).unwrap_err();
    assert!(matches!(err, DataError::WrongShape { .. }), "{err}");
    assert_names(&err, &path);
}

#[test]
fn load_rejects_labels_of_rank_two() {
    let dir = copy_fixture();
    let path = dir.path().join(FILE_NAMES[1]);
    write_idx(&path, &[500, 2], &[1; 1000], true).unwrap();
    let err = load(dir.path(), &fixture_opts()).unwrap_err();
    assert!(matches!(err, DataError::WrongShape { .. }), "{err}");
    assert_names(&err, &path);
}

#[test]
fn load_rejects_validation_split_as_large_as_training_file() {
    let opts = LoadOptions {
        n_valid: 1000,
        ..fixture_opts()
    };
    let err = load(&common::fixture_dir(), &opts).unwrap_err();
    assert!(matches!(
        err,
        DataError::SplitTooLarge {
            n_valid: 1000,
            available: 1000,
            ..
        }
    ));
    assert_names(&err, &common::fixture_dir().join(FILE_NAMES[0]));
}

/// The table of digests of the unmodified fixture, as the official table would list them.
fn fixture_table() -> Vec<(&'static str, String)> {
    FILE_NAMES
        .iter()
        .map(|name| {
            let bytes = gunzip(&std::fs::read(common::fixture_dir().join(name)).unwrap());
            let digest = sha2::Sha256::digest(&bytes);
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            (name.strip_suffix(".gz").unwrap(), hex)
        })
        .collect()
}

#[test]
fn load_accepts_data_matching_checksum_table() {
    let table = fixture_table();
    let table: Vec<(&str, &str)> = table.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let opts = LoadOptions {
        verify_checksums: true,
        ..fixture_opts()
    };
    let data = load_with_checksums(&common::fixture_dir(), &opts, Some(&table)).unwrap();
    assert_eq!(data.checksums, drsae_data::ChecksumStatus::Verified);
}

#[test]
fn load_rejects_checksum_mismatch_after_one_pixel_changes() {
    let table = fixture_table();
    let table: Vec<(&str, &str)> = table.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = copy_fixture();
    let path = dir.path().join(FILE_NAMES[0]);
    let mut images = read_idx(&path).unwrap();
    images.data[28 * 14 + 14] ^= 1;
    write_idx(&path, &images.dims, &images.data, true).unwrap();

    let opts = LoadOptions {
        verify_checksums: true,
        ..fixture_opts()
    };
    let err = load_with_checksums(dir.path(), &opts, Some(&table)).unwrap_err();
    match &err {
        DataError::ChecksumMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, table[0].1);
            assert_ne!(actual, expected);
        }
        _ => panic!("expected ChecksumMismatch, got {err}"),
    }
    assert_names(&err, &path);
    assert!(err.to_string().contains("--allow-modified-data"), "{err}");

    // The same modified data loads when verification is turned off on purpose.
    let data = load_with_checksums(dir.path(), &fixture_opts(), Some(&table)).unwrap();
    assert_eq!(data.checksums, drsae_data::ChecksumStatus::Skipped);
}

#[test]
fn fixture_fails_the_official_mnist_checksums() {
    let opts = LoadOptions {
        verify_checksums: true,
        ..fixture_opts()
    };
    let err = load(&common::fixture_dir(), &opts).unwrap_err();
    assert!(
        matches!(&err, DataError::ChecksumMismatch { expected, .. } if expected == MNIST_SHA256[0].1)
    );
}

#[test]
fn raw_files_load_identically_to_gzip() {
    let gz = load(&common::fixture_dir(), &fixture_opts()).unwrap();
    // Raw bytes under the .gz names (detection is by content) and under the plain names.
    let under_gz_names = tempfile::tempdir().unwrap();
    let under_raw_names = tempfile::tempdir().unwrap();
    for name in FILE_NAMES {
        let raw = gunzip(&std::fs::read(common::fixture_dir().join(name)).unwrap());
        std::fs::write(under_gz_names.path().join(name), &raw).unwrap();
        std::fs::write(
            under_raw_names
                .path()
                .join(name.strip_suffix(".gz").unwrap()),
            &raw,
        )
        .unwrap();
    }
    for dir in [&under_gz_names, &under_raw_names] {
        let raw = load(dir.path(), &fixture_opts()).unwrap();
        assert_eq!(raw.train, gz.train);
        assert_eq!(raw.valid, gz.valid);
        assert_eq!(raw.test, gz.test);
    }
}

#[test]
fn load_prefers_the_first_file_in_order_when_several_are_bad() {
    let dir = copy_fixture();
    std::fs::write(dir.path().join(FILE_NAMES[3]), []).unwrap();
    std::fs::write(dir.path().join(FILE_NAMES[1]), [9, 9]).unwrap();
    let err = load(dir.path(), &fixture_opts()).unwrap_err();
    assert!(matches!(err, DataError::BadMagic { .. }), "{err}");
    assert_names(&err, &dir.path().join(FILE_NAMES[1]));
}
