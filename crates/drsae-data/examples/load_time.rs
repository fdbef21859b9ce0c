//! Times loading all of MNIST (gzip, checksums verified, default preprocessing): median of 5 loads.
//!
//! Usage: `cargo run --release -p drsae-data --example load_time [dir]` (default `$DRSAE_DATA_DIR`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use drsae_data::{DATA_DIR_ENV, LoadOptions, load};

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os(DATA_DIR_ENV))
    else {
        eprintln!("usage: load_time <data dir>  (or set {DATA_DIR_ENV})");
        return ExitCode::FAILURE;
    };
    let dir = PathBuf::from(dir);
    let opts = LoadOptions::default();
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let data = match load(&dir, &opts) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        times.push(start.elapsed().as_secs_f64());
        std::hint::black_box(&data);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "load (gzip, sha-256 verified, unit-L2): median {:.1} ms over 5 (min {:.1}, max {:.1}), threads available: {}",
        times[2] * 1e3,
        times[0] * 1e3,
        times[4] * 1e3,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    ExitCode::SUCCESS
}
