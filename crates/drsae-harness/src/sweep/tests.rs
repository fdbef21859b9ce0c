//! Sweep-level tests against a stand-in `drsae train`: a shell script that follows the run
//! contract (metrics.csv, checkpoint-last, --resume, result.json, exit codes 0/1/3/130), so
//! scheduling, recording, locking and resuming are tested without training anything. The same
//! behaviour against the real trainer is tested in tests/sweep_e2e.rs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

/// The stand-in trainer: 3 epochs of 50 ms; `n_hidden = 13` fails, `learning_rate = 2.0`
/// diverges; SIGINT/SIGTERM stop it after the current epoch with exit 130, and `--resume`
/// continues from `checkpoint-last.safetensors` (here a text file holding the epoch count).
const FAKE_TRAIN: &str = r#"#!/bin/bash
set -u
[ "$1" = train ] || { echo "fake drsae: only train" >&2; exit 2; }
shift
resume=0; threads=1
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config=$2; shift 2;;
    --out) out=$2; shift 2;;
    --resume) resume=1; shift;;
    --threads) threads=$2; shift 2;;
    --n-valid|--data-dir) shift 2;;
    *) shift;;
  esac
done
stop=0
trap 'stop=1' INT TERM
field() { sed -n "s/^$1 = //p" "$config"; }
seed=$(field seed); n_hidden=$(field n_hidden); lr=$(field learning_rate)
if [ "$n_hidden" = 13 ]; then echo "error: field n_hidden is unlucky" >&2; exit 1; fi
start=0
if [ $resume = 1 ] && [ -f "$out/checkpoint-last.safetensors" ]; then
  start=$(cat "$out/checkpoint-last.safetensors"); echo "resumed at epoch $start"
else
  echo "phase,epoch,valid_error" > "$out/metrics.csv"
fi
for e in $(seq $start 2); do
  if [ $stop = 1 ]; then
    echo '{"status":"interrupted","message":"stopped by signal"}' > "$out/result.json"; exit 130
  fi
  sleep 0.05
  if [ "$lr" = 2.0 ]; then
    echo '{"status":"diverged","message":"loss is NaN","epochs_run":1,"kernel":"fake","threads":1}' > "$out/result.json"; exit 3
  fi
  echo "2,$e,0.0$((5 - e))$seed" >> "$out/metrics.csv"
  echo $((e + 1)) > "$out/checkpoint-last.safetensors"
done
printf '{"status":"finished","message":"ok","best_valid_error":0.02%s,"best_epoch":3,"test_error_at_best":0.03%s,"epochs_run":3,"wall_s":0.2,"wall_s_at_best":0.1%s,"examples_per_s":50.0,"kernel":"fake","threads":%s}\n' "$seed" "$seed" "$seed" "$threads" > "$out/result.json"
"#;

struct Fixture {
    dir: tempfile::TempDir,
    spec: PathBuf,
    bin: PathBuf,
}

impl Fixture {
    fn new(spec_text: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("s.toml");
        std::fs::write(&spec, spec_text).unwrap();
        let bin = dir.path().join("fake-drsae");
        std::fs::write(&bin, FAKE_TRAIN).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Fixture { dir, spec, bin }
    }

    fn args(&self) -> SweepArgs {
        SweepArgs {
            spec: self.spec.clone(),
            jobs: Some(2),
            dry_run: false,
            emit: None,
            results_dir: self.dir.path().join("results"),
            retry_failed: false,
            data_dir: None,
            allow_modified_data: false,
            git_rev: Some("test".into()),
            drsae_bin: Some(self.bin.clone()),
        }
    }

    fn layout(&self) -> Layout {
        Layout::new(&self.dir.path().join("results"), "s")
    }

    fn rows(&self) -> Vec<Vec<String>> {
        let spec = Spec::load(&self.spec, &DataOverrides::default()).unwrap();
        summary::read(&self.layout().summary(), &summary::header(&spec.columns))
            .unwrap()
            .rows
    }
}

fn col(rows: &[Vec<String>], spec: &Path, name: &str) -> Vec<String> {
    let spec = Spec::load(spec, &DataOverrides::default()).unwrap();
    let i = summary::header(&spec.columns)
        .iter()
        .position(|h| h == name)
        .unwrap();
    rows.iter().map(|r| r[i].clone()).collect()
}

const SPEC: &str = "[sweep]\nseeds = [1, 2]\n[base]\nn_hidden = 8\n[grid]\nlambda = [0.1, 0.2]\n";

#[test]
fn sweep_records_each_run_once_and_a_rerun_skips_them() {
    let f = Fixture::new(SPEC);
    run_sweep(&f.args()).unwrap();
    let rows = f.rows();
    assert_eq!(rows.len(), 4);
    assert!(
        col(&rows, &f.spec, "status")
            .iter()
            .all(|s| s == "finished")
    );
    let mut seeds = col(&rows, &f.spec, "seed");
    seeds.sort();
    assert_eq!(seeds, ["1", "1", "2", "2"]);
    assert!(
        col(&rows, &f.spec, "test_error_at_best")
            .iter()
            .all(|t| t.starts_with("0.03"))
    );
    // Each run folder has the resolved config the run read, and the run's log.
    let spec = Spec::load(&f.spec, &DataOverrides::default()).unwrap();
    let dir = f.layout().run_dir(&spec.runs[0].id);
    assert_eq!(
        std::fs::read_to_string(dir.join("config.toml")).unwrap(),
        spec.runs[0].config_toml
    );
    assert!(dir.join("log.txt").exists());
    // Nothing left to do: a rerun starts nothing and adds no row.
    run_sweep(&f.args()).unwrap();
    assert_eq!(f.rows().len(), 4);
    assert!(!f.layout().sweep_lock().exists(), "lock released");
}

#[test]
fn second_sweep_on_one_spec_fails_with_the_lock_message() {
    let f = Fixture::new(SPEC);
    std::fs::create_dir_all(&f.layout().root).unwrap();
    let held = LockFile::try_acquire(&f.layout().sweep_lock())
        .unwrap()
        .unwrap();
    let e = run_sweep(&f.args()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, SweepError::Locked { .. }), "{msg}");
    assert!(
        msg.contains("already running a sweep of this spec"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert!(msg.contains(".lock"), "{msg}");
    assert!(f.rows().is_empty(), "nothing ran");
    drop(held);
    run_sweep(&f.args()).unwrap();
}

#[test]
fn interrupted_sweep_records_only_finished_runs_and_resumes_the_rest() {
    let f = Fixture::new(SPEC);
    let mut args = f.args();
    args.jobs = Some(1);
    let summary_path = f.layout().summary();
    let spec = Spec::load(&f.spec, &DataOverrides::default()).unwrap();
    // Stop once the second run has completed an epoch (and so has a checkpoint).
    let second_metrics = f.layout().run_dir(&spec.runs[1].id).join("metrics.csv");
    let stop = || std::fs::read_to_string(&second_metrics).is_ok_and(|s| s.lines().count() >= 2);
    let e = run_sweep_with_stop(&args, &stop).unwrap_err();
    assert!(matches!(e, SweepError::Interrupted { .. }), "{e}");
    assert_eq!(e.exit_code(), 130);
    assert_eq!(f.rows().len(), 1, "the interrupted run has no row");

    let states = run_states(
        &spec,
        &f.layout(),
        &summary::read(&summary_path, &summary::header(&spec.columns)).unwrap(),
    );
    assert!(matches!(states[0].1, RunState::Done(Status::Finished)));
    assert_eq!(states[1].1, RunState::Partial);

    run_sweep(&f.args()).unwrap();
    let rows = f.rows();
    assert_eq!(rows.len(), 4);
    let ids = col(&rows, &f.spec, "run_id");
    assert_eq!(ids[0], spec.runs[0].id, "the finished run was not rerun");
    assert_eq!(ids.iter().filter(|i| **i == spec.runs[0].id).count(), 1);
    let log =
        std::fs::read_to_string(f.layout().run_dir(&spec.runs[1].id).join("log.txt")).unwrap();
    assert!(
        log.contains("resumed at epoch"),
        "second attempt resumed: {log}"
    );
}

#[test]
fn failed_and_diverged_runs_are_recorded_and_failed_ones_retried_on_request() {
    let f = Fixture::new(
        "[sweep]\nseeds = [1]\n[[configs]]\nname = \"ok\"\nn_hidden = 8\n\
         [[configs]]\nname = \"bad\"\nn_hidden = 13\n[[configs]]\nname = \"nan\"\nlearning_rate = 2.0\n",
    );
    run_sweep(&f.args()).unwrap();
    let rows = f.rows();
    let by_variant: std::collections::HashMap<String, (String, String)> =
        col(&rows, &f.spec, "variant")
            .into_iter()
            .zip(
                col(&rows, &f.spec, "status")
                    .into_iter()
                    .zip(col(&rows, &f.spec, "message")),
            )
            .collect();
    assert_eq!(by_variant["ok"].0, "finished");
    assert_eq!(
        by_variant["bad"],
        (
            "failed".into(),
            "exit code 1: error: field n_hidden is unlucky".into()
        )
    );
    assert_eq!(by_variant["nan"], ("diverged".into(), "loss is NaN".into()));
    // Terminal statuses are skipped on a rerun...
    run_sweep(&f.args()).unwrap();
    assert_eq!(f.rows().len(), 3);
    // ...unless failed runs are retried; their new row supersedes the old one.
    let mut retry = f.args();
    retry.retry_failed = true;
    run_sweep(&retry).unwrap();
    assert_eq!(f.rows().len(), 4);
}

#[test]
fn emitted_commands_record_the_same_rows_as_a_local_sweep() {
    let f = Fixture::new(SPEC);
    let mut args = f.args();
    args.emit = Some(EmitKind::Slurm);
    run_sweep(&args).unwrap();
    let commands = std::fs::read_to_string(f.layout().commands()).unwrap();
    assert_eq!(commands.lines().count(), 4);
    assert!(
        commands
            .lines()
            .all(|l| l.contains(" train --config ") && l.contains(" --resume "))
    );
    assert!(commands.lines().all(|l| l.contains(" sweep-record ")));
    let slurm = std::fs::read_to_string(f.layout().slurm()).unwrap();
    assert!(slurm.contains("#SBATCH --array=0-3\n"), "{slurm}");
    assert!(slurm.contains("#SBATCH --cpus-per-task=1\n"), "{slurm}");
    // The fake binary cannot run sweep-record, so record each run in-process as the
    // command would after its train.
    let spec = Spec::load(&f.spec, &DataOverrides::default()).unwrap();
    for (i, run) in spec.runs.iter().enumerate() {
        let dir = f.layout().run_dir(&run.id);
        let status = std::process::Command::new(&f.bin)
            .args(runner::train_args(&dir, 1, &spec.data, None))
            .output()
            .unwrap();
        let record = SweepRecordArgs {
            run_dir: dir,
            spec: f.spec.clone(),
            exit_code: status.status.code(),
            git_rev: Some("test".into()),
        };
        run_sweep_record(&record).unwrap();
        if i == 0 {
            // Recording twice (a rerun command line) adds nothing.
            run_sweep_record(&record).unwrap();
        }
    }
    let rows = f.rows();
    assert_eq!(rows.len(), 4);
    let local = Fixture::new(SPEC);
    run_sweep(&local.args()).unwrap();
    let key = |rows: &[Vec<String>], spec: &Path| {
        let mut v: Vec<(String, String)> = col(rows, spec, "run_id")
            .into_iter()
            .zip(col(rows, spec, "test_error_at_best"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(key(&rows, &f.spec), key(&local.rows(), &local.spec));
}

#[test]
fn dry_run_and_report_work_on_a_finished_sweep() {
    let f = Fixture::new(SPEC);
    let mut dry = f.args();
    dry.dry_run = true;
    run_sweep(&dry).unwrap();
    assert!(!f.layout().summary().exists(), "a dry run writes nothing");
    run_sweep(&f.args()).unwrap();
    run_report(&ReportArgs {
        spec: f.spec.clone(),
        results_dir: f.dir.path().join("results"),
    })
    .unwrap();
    let md = std::fs::read_to_string(f.layout().report()).unwrap();
    assert!(md.contains("| lambda | n | test error (%) |"), "{md}");
    // Seeds 1 and 2 give 0.031 and 0.032: mean 3.15 %, sample std 0.07 %.
    // Each seed's test error; mean wall times 0.115 s up to the best and 0.2 s in all.
    assert!(
        md.contains("| 0.1 | 2 | 3.15 ± 0.07 | 3.10 (1), 3.20 (2) |"),
        "{md}"
    );
    assert!(md.contains("| 0.1s | 0.2s |"), "{md}");
    for png in ["test_error_vs_lambda.png", "valid_curves.png"] {
        let bytes = std::fs::read(f.layout().root.join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{png} is a PNG");
    }
}
