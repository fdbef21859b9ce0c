//! Full MNIST from `DRSAE_DATA_DIR`: sizes, canonical class counts and verified checksums.
//!
//! Not run (with a printed reason) when the variable is unset or a file is missing.

mod common;

use drsae_data::{ChecksumStatus, LoadOptions, load};

/// Published per-class counts of the 60,000 MNIST training digits.
const TRAIN_COUNTS: [usize; 10] = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
/// Published per-class counts of the 10,000 MNIST test digits.
const TEST_COUNTS: [usize; 10] = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009];

#[test]
fn full_mnist_has_canonical_sizes_class_counts_and_checksums() {
    let Some(dir) =
        common::full_mnist_dir("full_mnist_has_canonical_sizes_class_counts_and_checksums")
    else {
        return;
    };
    let data = load(&dir, &LoadOptions::default()).unwrap();
    assert_eq!(
        (data.train.len(), data.valid.len(), data.test.len()),
        (50_000, 10_000, 10_000)
    );
    assert_eq!(data.checksums, ChecksumStatus::Verified);
    let train = data.train.class_counts();
    let valid = data.valid.class_counts();
    let all: Vec<usize> = train.iter().zip(valid).map(|(a, b)| a + b).collect();
    assert_eq!(all, TRAIN_COUNTS);
    assert_eq!(data.test.class_counts(), TEST_COUNTS);
    assert_eq!(data.train.labels[0], 5);
}

#[test]
fn fixture_is_the_prefix_of_full_mnist() {
    let Some(dir) = common::full_mnist_dir("fixture_is_the_prefix_of_full_mnist") else {
        return;
    };
    let full = load(
        &dir,
        &LoadOptions {
            verify_checksums: false,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let mini = load(
        &common::fixture_dir(),
        &LoadOptions {
            n_valid: 0,
            ..common::fixture_opts()
        },
    )
    .unwrap();
    assert_eq!(mini.train.images[..], full.train.images[..1000 * 784]);
    assert_eq!(mini.train.labels[..], full.train.labels[..1000]);
    assert_eq!(mini.test.images[..], full.test.images[..500 * 784]);
    assert_eq!(mini.test.labels[..], full.test.labels[..500]);
}
