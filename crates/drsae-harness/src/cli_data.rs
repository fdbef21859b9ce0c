//! `drsae data`, `drsae fetch-data` and `drsae fixture`: find, verify and summarise datasets.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use drsae_data::locate::resolve_data_dir;
use drsae_data::mnist::{ChecksumStatus, Dataset, DatasetKind, LoadOptions, Preprocess, Split};

/// The repository root, where `data/mnist/` is looked for when nothing else is given.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Which dataset to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetArg {
    /// MNIST handwritten digits (checksums verified).
    Mnist,
    /// Fashion-MNIST (same file format and names).
    FashionMnist,
}

/// Flags shared by every subcommand that reads a dataset.
#[derive(Clone, Debug, Args)]
pub struct DataArgs {
    /// Folder holding the four IDX files (raw or gzip); else $DRSAE_DATA_DIR, else data/mnist/.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Dataset in that folder.
    #[arg(long, value_enum, default_value = "mnist")]
    pub dataset: DatasetArg,
    /// Accept files whose SHA-256 differs from the published MNIST files (deliberately
    /// modified or subsampled data).
    #[arg(long)]
    pub allow_modified_data: bool,
    /// How many of the last training images form the validation split (the paper: 10,000).
    #[arg(long, default_value_t = 10_000)]
    pub n_valid: usize,
}

impl DataArgs {
    /// The folder the data is read from.
    pub fn dir(&self) -> PathBuf {
        resolve_data_dir(self.data_dir.as_deref(), &repo_root())
    }

    /// Loads the dataset with the paper's preprocessing (pixels in [0, 1], unit-L2 images).
    pub fn load(&self) -> Result<Dataset, drsae_data::DataError> {
        self.load_with(Preprocess::default())
    }

    /// Loads the dataset with the given preprocessing. When neither `--data-dir` nor
    /// `DRSAE_DATA_DIR` names a folder and the repository's `data/mnist/` lacks MNIST, it is
    /// fetched there first (verified; with no network the error says where to put the files).
    pub fn load_with(&self, preprocess: Preprocess) -> Result<Dataset, drsae_data::DataError> {
        let explicit = self.data_dir.is_some()
            || std::env::var_os(drsae_data::locate::DATA_DIR_ENV).is_some_and(|v| !v.is_empty());
        if !explicit && self.dataset == DatasetArg::Mnist {
            let dir = self.dir();
            let present = drsae_data::FILE_NAMES.iter().all(|name| {
                dir.join(name).is_file() || dir.join(name.trim_end_matches(".gz")).is_file()
            });
            if !present {
                eprintln!("MNIST not found in {}; fetching it", dir.display());
                drsae_data::fetch::fetch_mnist(&dir)?;
            }
        }
        let opts = LoadOptions {
            kind: match self.dataset {
                DatasetArg::Mnist => DatasetKind::Mnist,
                DatasetArg::FashionMnist => DatasetKind::FashionMnist,
            },
            preprocess,
            verify_checksums: !self.allow_modified_data,
            n_valid: self.n_valid,
        };
        drsae_data::mnist::load(&self.dir(), &opts)
    }
}

/// Prints counts per split and class, mean pixel value and checksum status.
pub fn run_data(args: &DataArgs) -> Result<(), drsae_data::DataError> {
    let start = std::time::Instant::now();
    let ds = args.load_with(Preprocess {
        scale_01: true,
        unit_l2: false,
    })?;
    let elapsed = start.elapsed();
    println!("dataset    {:?} in {}", args.dataset, ds.dir.display());
    println!(
        "checksums  {}",
        match ds.checksums {
            ChecksumStatus::Verified => "verified (SHA-256 of the decompressed files)",
            ChecksumStatus::Skipped => "skipped (--allow-modified-data)",
            ChecksumStatus::Unknown => "unknown (no published checksums for this dataset)",
        }
    );
    println!("load time  {:.3} s", elapsed.as_secs_f64());
    println!("split      count   mean-pixel  per-class counts (0..9)");
    let mut all_train = [0usize; 10];
    for (name, split) in [
        ("train", &ds.train),
        ("valid", &ds.valid),
        ("test", &ds.test),
    ] {
        print_split(name, split);
        if name != "test" {
            for (total, n) in all_train.iter_mut().zip(split.class_counts()) {
                *total += n;
            }
        }
    }
    println!(
        "train+valid {:>5}               {}",
        all_train.iter().sum::<usize>(),
        join(&all_train)
    );
    Ok(())
}

fn print_split(name: &str, split: &Split) {
    let mean = if split.images.is_empty() {
        0.0
    } else {
        split.images.iter().map(|&v| f64::from(v)).sum::<f64>() / split.images.len() as f64
    };
    println!(
        "{name:<10} {:>5}   {mean:>10.4}  {}",
        split.len(),
        join(&split.class_counts())
    );
}

fn join(counts: &[usize; 10]) -> String {
    counts
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}
