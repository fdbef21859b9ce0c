//! What became of one `drsae train` run: read from its `result.json` and exit status, and
//! classified as a terminal record (finished, diverged, failed) or an unfinished run to resume.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// Terminal statuses of a run; an interrupted run is not terminal and gets no summary row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Completed its schedule.
    Finished,
    /// Stopped on a NaN/inf loss (exit 3).
    Diverged,
    /// Anything else: bad config or data, a crash, an unexpected exit.
    Failed,
}

impl Status {
    /// The word written in `result.json` and `summary.csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Finished => "finished",
            Status::Diverged => "diverged",
            Status::Failed => "failed",
        }
    }

    /// Parses a terminal status word.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "finished" => Some(Status::Finished),
            "diverged" => Some(Status::Diverged),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `result.json` as `drsae train` writes it; every field optional so that a partial or older
/// file still yields what it has.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ResultJson {
    /// finished | diverged | interrupted | failed.
    pub status: String,
    /// Human-readable detail.
    pub message: String,
    /// Best validation error (fraction).
    pub best_valid_error: Option<f64>,
    /// Epoch of the best validation error.
    pub best_epoch: Option<u64>,
    /// Test error of the best-validation checkpoint (fraction).
    pub test_error_at_best: Option<f64>,
    /// Epochs completed.
    pub epochs_run: Option<u64>,
    /// Wall time of the run in seconds.
    pub wall_s: Option<f64>,
    /// Wall time when the best validation error was measured.
    pub wall_s_at_best: Option<f64>,
    /// Training throughput.
    pub examples_per_s: Option<f64>,
    /// Kernel name (ISA) used.
    pub kernel: Option<String>,
    /// Threads used.
    pub threads: Option<usize>,
}

/// A finished run's summary fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Terminal status.
    pub status: Status,
    /// One-line message.
    pub message: String,
    /// Best validation error (fraction).
    pub best_valid_error: Option<f64>,
    /// Epoch of the best validation error.
    pub best_epoch: Option<u64>,
    /// Test error at the best validation epoch (fraction).
    pub test_error_at_best: Option<f64>,
    /// Epochs completed.
    pub epochs_run: Option<u64>,
    /// Wall time in seconds.
    pub wall_s: Option<f64>,
    /// Wall time when the best validation error was measured.
    pub wall_s_at_best: Option<f64>,
    /// Training throughput.
    pub examples_per_s: Option<f64>,
    /// Kernel name.
    pub kernel: String,
    /// Threads used.
    pub threads: Option<usize>,
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Not known (`drsae sweep-record` without `--exit-code`).
    Unknown,
}

impl Exit {
    /// From a std exit status.
    pub fn from_status(s: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Unknown,
        }
    }
}

/// The outcome of one attempt at a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Terminal: gets a summary row.
    Done(Record),
    /// Interrupted or killed while the sweep was stopping: resumes next time, no row.
    Unfinished(String),
}

/// Exit code of `drsae train` for a diverged run.
pub const EXIT_DIVERGED: i32 = 3;
/// Exit code of `drsae train` (and `drsae sweep`) when interrupted by SIGINT/SIGTERM.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Classifies an attempt from `run_dir/result.json` (which wins when present) and the exit
/// status. `stopping` says the sweep itself asked the child to stop, so that a child killed by
/// a signal counts as interrupted rather than failed.
pub fn classify(run_dir: &Path, exit: Exit, stopping: bool) -> Outcome {
    let result_path = run_dir.join("result.json");
    let parsed = std::fs::read_to_string(&result_path)
        .ok()
        .map(|t| serde_json::from_str::<ResultJson>(&t));
    match parsed {
        Some(Ok(r)) => {
            if r.status == "interrupted" {
                return Outcome::Unfinished(one_line(&r.message));
            }
            let (status, message) = match Status::parse(&r.status) {
                Some(s) => (s, r.message.clone()),
                None => (
                    Status::Failed,
                    format!(
                        "result.json has unknown status `{}`: {}",
                        r.status, r.message
                    ),
                ),
            };
            Outcome::Done(Record {
                status,
                message: one_line(&message),
                best_valid_error: r.best_valid_error,
                best_epoch: r.best_epoch,
                test_error_at_best: r.test_error_at_best,
                epochs_run: r.epochs_run,
                wall_s: r.wall_s,
                wall_s_at_best: r.wall_s_at_best,
                examples_per_s: r.examples_per_s,
                kernel: r.kernel.unwrap_or_default(),
                threads: r.threads,
            })
        }
        Some(Err(e)) if !matches!(exit, Exit::Code(EXIT_INTERRUPTED)) => {
            failed(format!("result.json is unreadable: {e}"))
        }
        _ => match exit {
            Exit::Code(EXIT_INTERRUPTED) => Outcome::Unfinished("interrupted".into()),
            Exit::Signal(sig) if stopping => {
                Outcome::Unfinished(format!("stopped by signal {sig}"))
            }
            Exit::Signal(sig) => failed(format!("killed by signal {sig}{}", log_tail(run_dir))),
            Exit::Code(0) => failed("exited 0 without writing result.json".into()),
            Exit::Code(EXIT_DIVERGED) => Outcome::Done(Record {
                status: Status::Diverged,
                ..empty_record("exited 3 (diverged) without writing result.json".into())
            }),
            Exit::Code(c) => failed(format!("exit code {c}{}", log_tail(run_dir))),
            Exit::Unknown => failed("no result.json".into()),
        },
    }
}

fn failed(message: String) -> Outcome {
    Outcome::Done(empty_record(message))
}

fn empty_record(message: String) -> Record {
    Record {
        status: Status::Failed,
        message: one_line(&message),
        best_valid_error: None,
        best_epoch: None,
        test_error_at_best: None,
        epochs_run: None,
        wall_s: None,
        wall_s_at_best: None,
        examples_per_s: None,
        kernel: String::new(),
        threads: None,
    }
}

/// `: <last non-empty line of log.txt>`, where a failing `drsae train` prints its error.
fn log_tail(run_dir: &Path) -> String {
    std::fs::read_to_string(run_dir.join("log.txt"))
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| format!(": {}", l.trim()))
        })
        .unwrap_or_default()
}

/// Messages go into one CSV cell and one progress line: newlines become spaces.
pub fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_json_wins_over_exit_code_and_interrupted_is_unfinished() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("result.json"),
            r#"{"status":"finished","message":"ok","best_valid_error":0.0108,"best_epoch":7,
               "test_error_at_best":0.011,"epochs_run":8,"wall_s":1.5,"examples_per_s":100.0,
               "kernel":"avx2","threads":1}"#,
        )
        .unwrap();
        match classify(dir.path(), Exit::Code(0), false) {
            Outcome::Done(r) => {
                assert_eq!(r.status, Status::Finished);
                assert_eq!(r.best_valid_error, Some(0.0108));
                assert_eq!(r.kernel, "avx2");
            }
            o => panic!("{o:?}"),
        }
        std::fs::write(
            dir.path().join("result.json"),
            r#"{"status":"interrupted"}"#,
        )
        .unwrap();
        assert!(matches!(
            classify(dir.path(), Exit::Code(130), false),
            Outcome::Unfinished(_)
        ));
    }

    #[test]
    fn missing_result_json_is_classified_from_the_exit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("log.txt"), "loading\nerror: bad data\n\n").unwrap();
        match classify(dir.path(), Exit::Code(1), false) {
            Outcome::Done(r) => {
                assert_eq!(r.status, Status::Failed);
                assert_eq!(r.message, "exit code 1: error: bad data");
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            classify(dir.path(), Exit::Code(130), false),
            Outcome::Unfinished(_)
        ));
        assert!(matches!(
            classify(dir.path(), Exit::Signal(9), true),
            Outcome::Unfinished(_)
        ));
        assert!(matches!(
            classify(dir.path(), Exit::Signal(9), false),
            Outcome::Done(_)
        ));
    }
}
