//! Runs a sweep's runs as `drsae train` child processes, N at a time, recording each terminal
//! outcome in the summary, and stopping cleanly on SIGINT/SIGTERM.
//!
//! Children run in their own process group, so a Ctrl-C in the terminal reaches only the
//! sweep, which forwards one SIGINT to each child: every child then finishes its current
//! epoch's checkpoint exactly once instead of racing a second signal. A second Ctrl-C kills
//! the children outright (their last completed epoch's checkpoint is still on disk).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::SweepError;
use super::files::{Layout, atomic_write};
use super::outcome::{Exit, Outcome, Status, classify};
use super::spec::{DataArgs, Run, Spec};
use super::summary::{SummaryFile, row};
use crate::train::files as train_files;
use drsae_model::config::Config;

/// How often children are polled; short enough that the progress line and the next start
/// follow a finished run without noticeable delay, long enough to cost nothing.
const POLL: Duration = Duration::from_millis(50);

/// SIGINT/SIGTERM received since the process started (counted by the ctrlc handler).
static SIGNALS: AtomicUsize = AtomicUsize::new(0);
/// The handler can be installed once per process; later sweeps in the same process (tests)
/// reuse it.
static HANDLER: OnceLock<Result<(), String>> = OnceLock::new();

fn install_signal_handler() {
    let r = HANDLER.get_or_init(|| {
        ctrlc::set_handler(|| {
            SIGNALS.fetch_add(1, Ordering::SeqCst);
        })
        .map_err(|e| e.to_string())
    });
    if let Err(e) = r {
        eprintln!("warning: cannot catch SIGINT/SIGTERM ({e}); an interrupt will not be forwarded");
    }
}

/// What the runner needs besides the spec.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// The `drsae` binary whose `train` subcommand runs each run.
    pub bin: PathBuf,
    /// Runs at a time.
    pub jobs: usize,
    /// Recorded in every row.
    pub git_rev: String,
    /// Mean wall time of runs already finished in earlier invocations, for the first ETA.
    pub prior_wall_s: Vec<f64>,
}

/// The `drsae train` arguments of one run (after the binary), starting phase 2 from
/// `pretrained` when given.
pub fn train_args(
    run_dir: &Path,
    threads: usize,
    data: &DataArgs,
    pretrained: Option<&Path>,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "train".into(),
        "--config".into(),
        run_dir.join("config.toml").into(),
        "--out".into(),
        run_dir.into(),
        "--resume".into(),
        "--threads".into(),
        threads.to_string().into(),
    ];
    if let Some(file) = pretrained {
        a.push("--pretrained".into());
        a.push(file.into());
    }
    a.extend(data.train_flags().into_iter().map(OsString::from));
    a
}

/// The end-of-phase-1 checkpoint of another run of this sweep with the same phase 1
/// (`Config::same_phase1`), for `run` to start phase 2 from instead of pretraining. Phase 1
/// depends on nothing else, so the run's result is the same either way; only the time
/// differs. `None` for a run that will resume its own checkpoint.
pub fn shared_pretraining(layout: &Layout, run: &Run, spec: &Spec) -> Option<PathBuf> {
    let config = Config::from_toml_str(&run.config_toml).ok()?;
    let dir = layout.run_dir(&run.id);
    if config.epochs_phase1 == 0 || dir.join(train_files::LAST).exists() {
        return None;
    }
    spec.runs.iter().filter(|r| r.id != run.id).find_map(|r| {
        let file = layout.run_dir(&r.id).join(train_files::PRETRAINED);
        let same = Config::from_toml_str(&r.config_toml).is_ok_and(|c| c.same_phase1(&config));
        (same && file.is_file()).then_some(file)
    })
}

/// Creates a run's folder and writes its resolved config (before `drsae train` reads it).
pub fn prepare_run_dir(layout: &Layout, run: &Run) -> Result<PathBuf, SweepError> {
    let dir = layout.run_dir(&run.id);
    std::fs::create_dir_all(&dir).map_err(|e| SweepError::io(&dir, e))?;
    let config = dir.join("config.toml");
    atomic_write(&config, run.config_toml.as_bytes()).map_err(|e| SweepError::io(&config, e))?;
    Ok(dir)
}

struct Active {
    run: Run,
    child: Child,
    dir: PathBuf,
    started: Instant,
}

/// Runs `plan` (the runs not yet done) and records them. Returns `Interrupted` when stopped
/// by a signal or by `stop` (tests), after every child has exited.
pub fn execute(
    spec: &Spec,
    layout: &Layout,
    summary: &SummaryFile,
    plan: Vec<Run>,
    opts: &RunnerOptions,
    stop: &dyn Fn() -> bool,
) -> Result<(), SweepError> {
    install_signal_handler();
    let baseline = SIGNALS.load(Ordering::SeqCst);
    let total = spec.runs.len();
    let mut queue: VecDeque<Run> = plan.into();
    let mut active: Vec<Active> = Vec::new();
    let mut walls: Vec<f64> = opts.prior_wall_s.clone();
    let mut progress = Progress {
        stem: &spec.stem,
        total,
        done: total - queue.len(),
    };
    let mut stopping = false;
    let mut killed = false;
    let mut fatal: Option<SweepError> = None;
    let mut unfinished = 0usize;
    // Terminal statuses recorded by this invocation, for the closing line.
    let mut recorded: Vec<Status> = Vec::new();

    loop {
        let signals = SIGNALS.load(Ordering::SeqCst) - baseline;
        if !stopping && (signals > 0 || fatal.is_some() || stop()) {
            stopping = true;
            if !active.is_empty() {
                eprintln!(
                    "[{}] stopping: asking {} running run(s) to checkpoint and exit (Ctrl-C \
                     again to kill them)",
                    spec.stem,
                    active.len()
                );
            }
            for a in &active {
                send_signal(&a.child, libc::SIGINT);
            }
        }
        if signals > 1 && !killed {
            killed = true;
            for a in &mut active {
                let _ = a.child.kill();
            }
        }

        while !stopping && active.len() < opts.jobs {
            let Some(run) = queue.pop_front() else { break };
            match start(layout, &run, spec, opts) {
                Ok((child, dir)) => {
                    eprintln!(
                        "{} started {} ({})",
                        progress.line(
                            active.len() + 1,
                            queue.len(),
                            eta(&walls, &active, queue.len(), opts.jobs)
                        ),
                        run.id,
                        run.describe(&spec.columns)
                    );
                    active.push(Active {
                        run,
                        child,
                        dir,
                        started: Instant::now(),
                    });
                }
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }

        let mut i = 0;
        while i < active.len() {
            let status = match active[i].child.try_wait() {
                Ok(Some(s)) => Exit::from_status(s),
                Ok(None) => {
                    i += 1;
                    continue;
                }
                Err(e) => {
                    eprintln!("warning: cannot wait for run {}: {e}", active[i].run.id);
                    Exit::Unknown
                }
            };
            let a = active.swap_remove(i);
            let wall = a.started.elapsed().as_secs_f64();
            match classify(&a.dir, status, stopping) {
                Outcome::Done(rec) => {
                    if let Err(e) = summary.append(&row(&a.run, &rec, &opts.git_rev), true) {
                        fatal.get_or_insert(e);
                    }
                    if rec.status == Status::Finished {
                        walls.push(rec.wall_s.unwrap_or(wall));
                    }
                    recorded.push(rec.status);
                    progress.done += 1;
                    eprintln!(
                        "{} {} {} ({}): {}",
                        progress.line(
                            active.len(),
                            queue.len(),
                            eta(&walls, &active, queue.len(), opts.jobs)
                        ),
                        rec.status,
                        a.run.id,
                        a.run.describe(&spec.columns),
                        outcome_text(&rec, wall)
                    );
                }
                Outcome::Unfinished(why) => {
                    unfinished += 1;
                    eprintln!(
                        "[{}] {} left unfinished ({why}); a rerun resumes it from its last checkpoint",
                        spec.stem, a.run.id
                    );
                }
            }
        }

        if active.is_empty() && (stopping || queue.is_empty()) {
            break;
        }
        std::thread::sleep(POLL);
    }

    if let Some(e) = fatal {
        return Err(e);
    }
    // A child stopped by someone else's signal is unfinished too: the sweep is then not done,
    // and says so with the same status as an interrupted sweep.
    if stopping || unfinished > 0 {
        return Err(SweepError::Interrupted {
            unfinished: unfinished + queue.len(),
        });
    }
    let counts: Vec<String> = [Status::Finished, Status::Diverged, Status::Failed]
        .into_iter()
        .map(|s| (s, recorded.iter().filter(|&&r| r == s).count()))
        .filter(|&(_, n)| n > 0)
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    eprintln!(
        "[{}] all {total} runs recorded ({} this time{}); summary in {}",
        spec.stem,
        recorded.len(),
        if counts.is_empty() {
            String::new()
        } else {
            format!(": {}", counts.join(", "))
        },
        summary.path.display()
    );
    Ok(())
}

fn start(
    layout: &Layout,
    run: &Run,
    spec: &Spec,
    opts: &RunnerOptions,
) -> Result<(Child, PathBuf), SweepError> {
    let dir = prepare_run_dir(layout, run)?;
    // A result.json left by an earlier attempt (e.g. one that was interrupted) must not be
    // mistaken for this attempt's if this one dies without writing its own.
    let result = dir.join("result.json");
    match std::fs::remove_file(&result) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SweepError::io(&result, e)),
    }
    let log_path = dir.join("log.txt");
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| SweepError::io(&log_path, e))?;
    let pretrained = shared_pretraining(layout, run, spec);
    let args = train_args(&dir, spec.threads, &spec.data, pretrained.as_deref());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // Appended, not truncated: a resumed run's log keeps the history of its attempts. The
    // binary by name only: the log is a result, and its folder says nothing of this machine.
    let bin = opts.bin.file_name().unwrap_or(opts.bin.as_os_str());
    let _ = writeln!(
        log,
        "==== drsae sweep (unix time {now}): {} {}",
        bin.to_string_lossy(),
        shown.join(" ")
    );
    let err_log = log.try_clone().map_err(|e| SweepError::io(&log_path, e))?;
    let child = Command::new(&opts.bin)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .process_group(0)
        .spawn()
        .map_err(|e| SweepError::Spawn {
            bin: opts.bin.clone(),
            source: e,
        })?;
    Ok((child, dir))
}

fn send_signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. The pid is that of
    // our own child, which cannot have been reused: it is not reaped until we call wait.
    let _ = unsafe { libc::kill(pid, signal) };
}

fn outcome_text(rec: &super::outcome::Record, wall: f64) -> String {
    let pct = |x: Option<f64>| {
        x.map(|v| format!("{:.2}%", 100.0 * v))
            .unwrap_or_else(|| "–".into())
    };
    match rec.status {
        Status::Failed => format!("{} ({})", rec.message, duration(wall)),
        _ => format!(
            "valid {}, test {} at epoch {}, {}",
            pct(rec.best_valid_error),
            pct(rec.test_error_at_best),
            rec.best_epoch
                .map(|e| e.to_string())
                .unwrap_or_else(|| "–".into()),
            duration(rec.wall_s.unwrap_or(wall))
        ),
    }
}

struct Progress<'a> {
    stem: &'a str,
    total: usize,
    done: usize,
}

impl Progress<'_> {
    fn line(&self, running: usize, left: usize, eta: Option<f64>) -> String {
        let eta = eta.map(duration).unwrap_or_else(|| "?".into());
        format!(
            "[{}] {}/{} done, {running} running, {left} left, ETA {eta} |",
            self.stem, self.done, self.total
        )
    }
}

/// Time left: the runs still queued take the mean finished-run wall time each, the running
/// ones the rest of it, all spread over `jobs` slots. `None` before any run has finished.
fn eta(walls: &[f64], active: &[Active], left: usize, jobs: usize) -> Option<f64> {
    if walls.is_empty() {
        return None;
    }
    let mean = walls.iter().sum::<f64>() / walls.len() as f64;
    let running: f64 = active
        .iter()
        .map(|a| (mean - a.started.elapsed().as_secs_f64()).max(0.0))
        .sum();
    Some((left as f64 * mean + running) / jobs.max(1) as f64)
}

/// `1h02m`, `3m05s`, `12.3s`.
pub fn duration(s: f64) -> String {
    if s >= 3600.0 {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    } else if s >= 60.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.1}s")
    }
}
