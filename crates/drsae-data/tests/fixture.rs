//! The committed fixture (first 1000 training and 500 test MNIST examples) loads as MNIST should.

mod common;

use common::{fixture_dir, fixture_opts};
use drsae_data::{ChecksumStatus, DatasetKind, LoadOptions, Preprocess, load};

#[test]
fn fixture_loads_with_expected_sizes_and_class_counts() {
    let data = load(&fixture_dir(), &fixture_opts()).unwrap();
    assert_eq!(
        (data.train.len(), data.valid.len(), data.test.len()),
        (800, 200, 500)
    );
    for split in [&data.train, &data.valid, &data.test] {
        assert_eq!(split.dim, 784);
        assert_eq!(split.images.len(), split.len() * 784);
        assert_eq!(split.class_counts().iter().sum::<usize>(), split.len());
    }
    // Every class occurs among 800 MNIST digits.
    assert!(data.train.class_counts().iter().all(|&c| c > 0));
    assert_eq!(data.checksums, ChecksumStatus::Skipped);
    assert_eq!(data.dir, fixture_dir());
}

#[test]
fn first_mnist_training_label_is_five() {
    let data = load(&fixture_dir(), &fixture_opts()).unwrap();
    assert_eq!(data.train.labels[0], 5);
    // And the first test label is 7, as in every MNIST tutorial.
    assert_eq!(data.test.labels[0], 7);
}

#[test]
fn validation_split_is_the_last_training_examples() {
    let all = load(
        &fixture_dir(),
        &LoadOptions {
            n_valid: 0,
            ..fixture_opts()
        },
    )
    .unwrap();
    let split = load(&fixture_dir(), &fixture_opts()).unwrap();
    assert!(all.valid.is_empty());
    assert_eq!(split.train.images[..], all.train.images[..800 * 784]);
    assert_eq!(split.valid.images[..], all.train.images[800 * 784..]);
    assert_eq!(split.valid.labels[..], all.train.labels[800..]);
}

#[test]
fn scaled_pixels_lie_in_unit_interval_before_normalising() {
    let opts = LoadOptions {
        preprocess: Preprocess {
            scale_01: true,
            unit_l2: false,
        },
        ..fixture_opts()
    };
    let data = load(&fixture_dir(), &opts).unwrap();
    let (min, max) = data
        .train
        .images
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    assert_eq!(min, 0.0);
    assert_eq!(max, 1.0); // MNIST digits are saturated somewhere.
}

#[test]
fn raw_pixels_are_kept_when_no_preprocessing_is_asked() {
    let opts = LoadOptions {
        preprocess: Preprocess {
            scale_01: false,
            unit_l2: false,
        },
        ..fixture_opts()
    };
    let data = load(&fixture_dir(), &opts).unwrap();
    assert!(
        data.train
            .images
            .iter()
            .all(|&x| x == x.trunc() && (0.0..=255.0).contains(&x))
    );
    assert!(data.train.images.contains(&255.0));
}

#[test]
fn default_preprocessing_gives_unit_norm_images() {
    let data = load(&fixture_dir(), &fixture_opts()).unwrap();
    for split in [&data.train, &data.valid, &data.test] {
        for i in 0..split.len() {
            let norm = split
                .image(i)
                .iter()
                .map(|&x| f64::from(x).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "image {i} has norm {norm}");
        }
    }
}

#[test]
fn unit_norm_is_the_same_with_or_without_scaling_first() {
    let both = load(&fixture_dir(), &fixture_opts()).unwrap();
    let opts = LoadOptions {
        preprocess: Preprocess {
            scale_01: false,
            unit_l2: true,
        },
        ..fixture_opts()
    };
    let l2_only = load(&fixture_dir(), &opts).unwrap();
    assert_eq!(both.train, l2_only.train);
}

#[test]
fn fashion_mnist_has_no_known_checksums() {
    let opts = LoadOptions {
        kind: DatasetKind::FashionMnist,
        verify_checksums: true,
        ..fixture_opts()
    };
    let data = load(&fixture_dir(), &opts).unwrap();
    assert_eq!(data.checksums, ChecksumStatus::Unknown);
}

#[test]
fn regenerating_the_fixture_gives_identical_bytes() {
    // The fixture is its own source: cutting its first 1000/500 records must reproduce it
    // exactly, which shows the writer is deterministic (no gzip timestamp).
    let out = tempfile::tempdir().unwrap();
    drsae_data::make_fixture(&fixture_dir(), out.path(), 1000, 500).unwrap();
    for name in drsae_data::FILE_NAMES {
        let a = std::fs::read(fixture_dir().join(name)).unwrap();
        let b = std::fs::read(out.path().join(name)).unwrap();
        assert!(a == b, "{name} differs after regeneration");
    }
}

#[test]
fn make_fixture_refuses_more_records_than_exist() {
    let out = tempfile::tempdir().unwrap();
    let err = drsae_data::make_fixture(&fixture_dir(), out.path(), 1001, 10).unwrap_err();
    assert!(
        matches!(
            err,
            drsae_data::DataError::NotEnoughRecords {
                requested: 1001,
                available: 1000,
                ..
            }
        ),
        "{err}"
    );
}
