//! The drsae experiment harness: data summaries, training runs, evaluation, benchmarks,
//! sweeps, reports and the analysis of trained networks. It orchestrates the model crate and
//! implements no model math.

pub mod analyze;
pub mod bench;
pub mod cli_data;
pub mod eval;
pub mod fsutil;
pub mod progress;
pub mod sweep;
pub mod train;

/// All cores of this machine (the default thread count).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The short git revision of the working tree, or `unknown`, for result rows.
pub fn git_rev() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(cli_data::repo_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
