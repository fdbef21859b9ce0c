//! Experiment sweeps: `drsae sweep`, `drsae sweep-record` and `drsae report`.
//!
//! A spec (`experiments/*.toml`, format in [`spec`]) expands into runs with stable ids. Each
//! run is one `drsae train` child process writing into `results/<stem>/runs/<id>/`; each run
//! that reaches a terminal status (finished, diverged, failed) appends one row to
//! `results/<stem>/summary.csv`. Rerunning a sweep skips recorded runs and resumes the others
//! from their last checkpoint. `--emit list|slurm` writes the same runs as shell commands for a
//! batch system instead; `drsae report` aggregates the summary into a markdown table and plots.
//!
//! This module computes nothing about the model: it parses, schedules, records and reports.

pub mod emit;
pub mod files;
pub mod ident;
pub mod lock;
pub mod outcome;
pub(crate) mod plot;
pub mod random;
pub mod report;
pub mod runner;
pub mod spec;
pub mod summary;

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

pub use report::run_report;
pub use spec::{DataOverrides, Spec, SpecError};

use files::Layout;
use lock::LockFile;
use outcome::{EXIT_INTERRUPTED, Exit, Outcome, Status, classify};
use runner::RunnerOptions;
use summary::SummaryFile;

/// `drsae sweep SPEC.toml`: run (or plan, or emit) every run of a sweep specification.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// The sweep specification, e.g. experiments/paper.toml.
    pub spec: PathBuf,
    /// Runs at a time (default: available cores / threads per run, at least 1).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Print the runs (id, swept fields, seed, state: done / partial / new) and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Instead of running, write commands.txt (`list`) or also a Slurm job array (`slurm`)
    /// into the results folder.
    #[arg(long, value_enum, value_name = "KIND")]
    pub emit: Option<EmitKind>,
    /// Folder holding every spec's results (this spec's go to DIR/<spec stem>/).
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub results_dir: PathBuf,
    /// Rerun runs recorded as failed (their new row supersedes the old one).
    #[arg(long)]
    pub retry_failed: bool,
    /// Data folder passed to every `drsae train` (overrides the spec's data_args.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Passed to every `drsae train`: accept data that is not the published MNIST.
    #[arg(long)]
    pub allow_modified_data: bool,
    /// Revision written in the summary's git_rev column (default: `$DRSAE_GIT_REV`, else
    /// `git rev-parse --short HEAD`, else "unknown"); `--emit` bakes it into the commands.
    #[arg(long, value_name = "REV")]
    pub git_rev: Option<String>,
    /// The `drsae` binary that trains (default: this executable). For tests.
    #[arg(long, value_name = "PATH", hide = true)]
    pub drsae_bin: Option<PathBuf>,
}

/// What `--emit` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmitKind {
    /// `commands.txt`: one shell command per run (e.g. for GNU parallel).
    List,
    /// `commands.txt` and `sweep.slurm`, a job array with one task per line.
    Slurm,
}

/// `drsae sweep-record RUNDIR --spec SPEC`: append one run's row to its sweep's summary (used
/// by the commands of `--emit`; a local sweep records its runs itself).
#[derive(Debug, Clone, Args)]
pub struct SweepRecordArgs {
    /// The run's folder, `<results>/<stem>/runs/<id>`.
    pub run_dir: PathBuf,
    /// The sweep specification the run belongs to.
    #[arg(long)]
    pub spec: PathBuf,
    /// Exit status of the `drsae train` that ran it (classifies runs without result.json).
    #[arg(long, value_name = "CODE", allow_hyphen_values = true)]
    pub exit_code: Option<i32>,
    /// Revision for the git_rev column (default: as for `drsae sweep`).
    #[arg(long, value_name = "REV")]
    pub git_rev: Option<String>,
}

/// `drsae report SPEC.toml`: aggregate a sweep's summary into report.md and PNG plots.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The sweep specification.
    pub spec: PathBuf,
    /// Folder holding every spec's results.
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub results_dir: PathBuf,
}

/// Why a sweep command failed.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The spec is invalid (file, line and field named).
    #[error("{0}")]
    Spec(#[from] SpecError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process holds a lock.
    #[error(
        "another process ({}pid {pid}) is {what} ({}); wait for it to finish, or delete that \
         file if the process is gone",
        if host.is_empty() { String::new() } else { format!("host {host}, ") },
        path.display()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid.
        pid: u32,
        /// The holder's host.
        host: String,
        /// What the holder is doing.
        what: &'static str,
    },
    /// The summary cannot be used.
    #[error("{}: {message}", path.display())]
    Summary {
        /// summary.csv.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `drsae train` could not be started.
    #[error("cannot start {}: {source}", bin.display())]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A run folder given to sweep-record does not belong to the spec.
    #[error("{0}")]
    NotInSpec(String),
    /// Stopped by SIGINT/SIGTERM; the unfinished runs resume on the next invocation.
    #[error("interrupted; {unfinished} run(s) unfinished: rerun the same command to resume them")]
    Interrupted {
        /// Runs not recorded.
        unfinished: usize,
    },
    /// A plot could not be drawn.
    #[error("plotting {}: {message}", path.display())]
    Plot {
        /// The PNG.
        path: PathBuf,
        /// The cause.
        message: String,
    },
}

impl SweepError {
    /// An I/O error about `path`.
    pub fn io(path: &Path, source: std::io::Error) -> SweepError {
        SweepError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A CSV error about `path`.
    pub fn csv(path: &Path, e: csv::Error) -> SweepError {
        SweepError::Summary {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    /// The process exit code for this error: 130 when interrupted (like `drsae train`),
    /// 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            SweepError::Interrupted { .. } => EXIT_INTERRUPTED,
            _ => 1,
        }
    }
}

/// The short git revision of the current directory's checkout, for the summary's git_rev
/// column: `$DRSAE_GIT_REV` if set (batch nodes without git), else `git rev-parse --short
/// HEAD`, else "unknown".
pub fn git_rev() -> String {
    if let Ok(r) = std::env::var("DRSAE_GIT_REV")
        && !r.trim().is_empty()
    {
        return r.trim().to_string();
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The state of a run before a sweep starts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Recorded in the summary with this terminal status.
    Done(Status),
    /// Started before (has metrics or a checkpoint) but not recorded: will resume.
    Partial,
    /// Never started.
    New,
}

impl RunState {
    fn label(self) -> String {
        match self {
            RunState::Done(s) => format!("done ({s})"),
            RunState::Partial => "partial".into(),
            RunState::New => "new".into(),
        }
    }
}

/// Every run of the spec with its state, from the summary and the run folders.
pub fn run_states(
    spec: &Spec,
    layout: &Layout,
    summary: &summary::Summary,
) -> Vec<(spec::Run, RunState)> {
    let statuses = summary.statuses(&summary::header(&spec.columns));
    spec.runs
        .iter()
        .map(|r| {
            let state = match statuses.get(&r.id) {
                Some(&s) => RunState::Done(s),
                None => {
                    let dir = layout.run_dir(&r.id);
                    if dir.join("checkpoint-last.safetensors").exists()
                        || dir.join("metrics.csv").exists()
                    {
                        RunState::Partial
                    } else {
                        RunState::New
                    }
                }
            };
            (r.clone(), state)
        })
        .collect()
}

fn print_table(spec: &Spec, states: &[(spec::Run, RunState)]) {
    let mut header = vec!["id".to_string()];
    header.extend(spec.columns.iter().cloned());
    header.extend(["seed".to_string(), "state".to_string()]);
    let rows: Vec<Vec<String>> = states
        .iter()
        .map(|(r, s)| {
            let mut row = vec![r.id.clone()];
            row.extend(r.values.iter().cloned());
            row.extend([r.seed.to_string(), s.label()]);
            row
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let fmt = |r: &[String]| {
        r.iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", fmt(&header));
    for r in &rows {
        println!("{}", fmt(r));
    }
    let done = states
        .iter()
        .filter(|(_, s)| matches!(s, RunState::Done(_)))
        .count();
    let partial = states
        .iter()
        .filter(|(_, s)| *s == RunState::Partial)
        .count();
    println!(
        "{} runs: {done} done, {partial} partial, {} new; {} thread(s) per run",
        states.len(),
        states.len() - done - partial,
        spec.threads
    );
}

/// `drsae sweep`: see [`SweepArgs`].
pub fn run_sweep(args: &SweepArgs) -> Result<(), SweepError> {
    run_sweep_with_stop(args, &|| false)
}

/// [`run_sweep`] with an extra stop condition, polled like a signal (for tests).
pub fn run_sweep_with_stop(args: &SweepArgs, stop: &dyn Fn() -> bool) -> Result<(), SweepError> {
    let overrides = DataOverrides {
        data_dir: args.data_dir.clone(),
        allow_modified_data: args.allow_modified_data,
    };
    let spec = Spec::load(&args.spec, &overrides)?;
    let layout = Layout::new(&args.results_dir, &spec.stem);
    let summary_file = SummaryFile::new(&layout, &spec.columns);

    if args.dry_run {
        let summary = summary::read(&summary_file.path, &summary_file.header)?;
        if let Some(t) = &summary.torn {
            eprintln!(
                "note: {}",
                t.warning(&summary_file.path)
                    .replace("warning: ", "")
                    .replace("dropped", "will drop")
            );
        }
        print_table(&spec, &run_states(&spec, &layout, &summary));
        return Ok(());
    }

    std::fs::create_dir_all(&layout.root).map_err(|e| SweepError::io(&layout.root, e))?;
    let lock_path = layout.sweep_lock();
    let _lock = match LockFile::try_acquire(&lock_path) {
        Ok(Ok(l)) => l,
        Ok(Err(h)) => {
            return Err(SweepError::Locked {
                path: lock_path,
                pid: h.pid,
                host: h.host,
                what: "already running a sweep of this spec",
            });
        }
        Err(e) => return Err(SweepError::io(&lock_path, e)),
    };
    let summary = summary_file.load_repaired()?;
    let states = run_states(&spec, &layout, &summary);
    let plan: Vec<spec::Run> = states
        .iter()
        .filter(|(_, s)| match s {
            RunState::Done(Status::Failed) => args.retry_failed,
            RunState::Done(_) => false,
            _ => true,
        })
        .map(|(r, _)| r.clone())
        .collect();
    let bin = match &args.drsae_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(|e| SweepError::io(Path::new("drsae"), e))?,
    };

    let rev = args.git_rev.clone().unwrap_or_else(git_rev);

    if let Some(kind) = args.emit {
        if plan.is_empty() {
            eprintln!(
                "all {} runs of {} are recorded; nothing to emit",
                spec.runs.len(),
                spec.stem
            );
            return Ok(());
        }
        return match kind {
            EmitKind::List => emit::write_commands(&spec, &layout, &plan, &bin, &rev),
            EmitKind::Slurm => emit::write_slurm(&spec, &layout, &plan, &bin, &rev),
        };
    }

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let jobs = args.jobs.unwrap_or(cores / spec.threads).max(1);
    let wall_col = summary_file.header.iter().position(|h| h == "wall_s");
    let status_col = summary_file.header.iter().position(|h| h == "status");
    let prior_wall_s = match (wall_col, status_col) {
        (Some(w), Some(s)) => summary
            .latest()
            .values()
            .filter(|r| r[s] == "finished")
            .filter_map(|r| r[w].parse().ok())
            .collect(),
        _ => Vec::new(),
    };
    eprintln!(
        "[{}] {} runs, {} already recorded, {} to run, {jobs} at a time with {} thread(s) each; \
         results in {}",
        spec.stem,
        spec.runs.len(),
        spec.runs.len() - plan.len(),
        plan.len(),
        spec.threads,
        layout.root.display()
    );
    let opts = RunnerOptions {
        bin,
        jobs,
        git_rev: rev,
        prior_wall_s,
    };
    runner::execute(&spec, &layout, &summary_file, plan, &opts, stop)
}

/// `drsae sweep-record`: see [`SweepRecordArgs`].
pub fn run_sweep_record(args: &SweepRecordArgs) -> Result<(), SweepError> {
    let spec = Spec::load(&args.spec, &DataOverrides::default())?;
    let id = args
        .run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let run = spec.runs.iter().find(|r| r.id == id).ok_or_else(|| {
        SweepError::NotInSpec(format!(
            "{}: `{id}` is not a run of {} (its runs: {})",
            args.run_dir.display(),
            args.spec.display(),
            spec.runs
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let layout = Layout::of_run_dir(&args.run_dir).ok_or_else(|| {
        SweepError::NotInSpec(format!(
            "{}: not a run folder of the form <results>/<stem>/runs/<id>",
            args.run_dir.display()
        ))
    })?;
    let exit = args.exit_code.map(Exit::Code).unwrap_or(Exit::Unknown);
    match classify(&args.run_dir, exit, false) {
        Outcome::Unfinished(why) => {
            eprintln!("{id}: unfinished ({why}); not recorded, rerun its command to resume it");
            Ok(())
        }
        Outcome::Done(rec) => {
            let file = SummaryFile::new(&layout, &spec.columns);
            let rev = args.git_rev.clone().unwrap_or_else(git_rev);
            let row = summary::row(run, &rec, &rev);
            if file.append(&row, true)? {
                eprintln!("{id}: recorded {} in {}", rec.status, file.path.display());
            } else {
                eprintln!("{id}: already recorded in {}", file.path.display());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
