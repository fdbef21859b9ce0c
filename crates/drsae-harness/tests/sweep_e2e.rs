//! End-to-end sweeps with the real `drsae train` on the committed 1,000-image fixture: a full
//! sweep, an interrupted-then-resumed sweep that must reproduce it exactly, the batch
//! commands of `--emit list`, and the report.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{drsae, fixture, run_ok};
use drsae_harness::sweep::spec::{DataOverrides, Spec};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Summary rows keyed by run id, each a column → value map.
fn summary(results: &Path, stem: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let path = results.join(stem).join("summary.csv");
    let mut r = csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let mut rows = BTreeMap::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        let row: BTreeMap<String, String> = header
            .iter()
            .cloned()
            .zip(rec.iter().map(String::from))
            .collect();
        assert!(
            rows.insert(row["run_id"].clone(), row).is_none(),
            "one row per run"
        );
    }
    rows
}

/// The numbers a run produced; equal across an interruption when resuming is exact.
fn numbers(rows: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<(String, [String; 5])> {
    rows.iter()
        .map(|(id, r)| {
            let f = |k: &str| r[k].clone();
            (
                id.clone(),
                [
                    f("status"),
                    f("best_valid_error"),
                    f("best_epoch"),
                    f("test_error_at_best"),
                    f("epochs_run"),
                ],
            )
        })
        .collect()
}

#[test]
fn tiny_spec_sweeps_on_the_fixture_reports_and_skips_recorded_runs() {
    let results = tempfile::tempdir().unwrap();
    let sweep = || {
        let mut c = drsae();
        c.arg("sweep")
            .arg(repo().join("experiments/tiny.toml"))
            .arg("--results-dir")
            .arg(results.path());
        c
    };
    run_ok(&mut sweep());
    let rows = summary(results.path(), "tiny");
    assert_eq!(rows.len(), 2);
    for r in rows.values() {
        assert_eq!(r["status"], "finished", "{r:?}");
        assert_eq!(r["git_rev"], "e2e-test");
        let test: f64 = r["test_error_at_best"].parse().unwrap();
        assert!((0.0..=1.0).contains(&test), "{r:?}");
        assert!(!r["kernel"].is_empty());
        let dir = results.path().join("tiny/runs").join(&r["run_id"]);
        for f in [
            "config.toml",
            "metrics.csv",
            "result.json",
            "log.txt",
            "checkpoint-last.safetensors",
        ] {
            assert!(dir.join(f).exists(), "{} missing", dir.join(f).display());
        }
    }
    // A rerun finds everything recorded and starts nothing.
    let out = sweep().output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 already recorded, 0 to run"));
    assert_eq!(summary(results.path(), "tiny").len(), 2);
    // The dry run lists both as done.
    let out = sweep().arg("--dry-run").output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.matches("done (finished)").count(), 2, "{table}");

    run_ok(
        drsae()
            .arg("report")
            .arg(repo().join("experiments/tiny.toml"))
            .arg("--results-dir")
            .arg(results.path()),
    );
    let md = std::fs::read_to_string(results.path().join("tiny/report.md")).unwrap();
    assert!(md.contains("| n | test error (%) |"), "{md}");
    assert!(results.path().join("tiny/valid_curves.png").exists());
}

/// A spec long enough (60 epochs, a few hundred milliseconds) that the sweep can be interrupted
/// in the middle of a run even when this test is descheduled for a while.
fn resumable_spec(dir: &Path) -> PathBuf {
    let spec = dir.join("resume.toml");
    std::fs::write(
        &spec,
        format!(
            "[sweep]\nseeds = [1, 2]\n[sweep.data_args]\ndata_dir = {:?}\nallow_modified_data = true\n\
             n_valid = 200\n[base]\nn_hidden = 32\nn_steps = 3\nepochs_phase1 = 3\nepochs_phase2 = 57\n\
             valid_interval = 1\n",
            fixture().display().to_string()
        ),
    )
    .unwrap();
    spec
}

#[test]
fn interrupted_sweep_resumes_to_the_numbers_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = resumable_spec(dir.path());
    let spec = Spec::load(&spec_path, &DataOverrides::default()).unwrap();
    let straight = dir.path().join("straight");
    let resumed = dir.path().join("resumed");
    run_ok(
        drsae()
            .arg("sweep")
            .arg(&spec_path)
            .arg("--results-dir")
            .arg(&straight),
    );

    // One run at a time; interrupt once the second run has checkpointed at least one epoch.
    let mut child = drsae()
        .arg("sweep")
        .arg(&spec_path)
        .args(["--jobs", "1", "--results-dir"])
        .arg(&resumed)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second = resumed.join("resume/runs").join(&spec.runs[1].id);
    let start = Instant::now();
    let mut interrupted = false;
    while start.elapsed() < Duration::from_secs(300) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let epochs = std::fs::read_to_string(second.join("metrics.csv"))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if epochs >= 2 && second.join("checkpoint-last.safetensors").exists() {
            let pid = libc::pid_t::try_from(child.id()).unwrap();
            // SAFETY: kill(2) reads no memory; the pid is our unreaped child's, so it is not
            // reused.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
            interrupted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        interrupted,
        "the second run finished before it could be interrupted; lengthen resumable_spec:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let partial = summary(&resumed, "resume");
    assert_eq!(
        partial.keys().collect::<Vec<_>>(),
        [&spec.runs[0].id],
        "only the finished run has a row"
    );
    assert!(second.join("checkpoint-last.safetensors").exists());

    run_ok(
        drsae()
            .arg("sweep")
            .arg(&spec_path)
            .arg("--results-dir")
            .arg(&resumed),
    );
    let a = summary(&straight, "resume");
    let b = summary(&resumed, "resume");
    assert_eq!(
        numbers(&a),
        numbers(&b),
        "resumed numbers differ from the uninterrupted sweep"
    );
    // The first run was not run again: its log has one attempt; the second has two.
    let attempts = |id: &str| {
        std::fs::read_to_string(resumed.join("resume/runs").join(id).join("log.txt"))
            .unwrap()
            .matches("==== drsae sweep")
            .count()
    };
    assert_eq!(attempts(&spec.runs[0].id), 1);
    assert_eq!(attempts(&spec.runs[1].id), 2);
}

#[test]
fn emitted_command_list_produces_the_same_summary_as_a_local_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let spec = repo().join("experiments/tiny.toml");
    let local = dir.path().join("local");
    let batch = dir.path().join("batch");
    run_ok(
        drsae()
            .arg("sweep")
            .arg(&spec)
            .arg("--results-dir")
            .arg(&local),
    );
    run_ok(
        drsae()
            .arg("sweep")
            .arg(&spec)
            .args(["--emit", "list", "--results-dir"])
            .arg(&batch),
    );
    let commands = std::fs::read_to_string(batch.join("tiny/commands.txt")).unwrap();
    assert_eq!(commands.lines().count(), 2);
    for line in commands.lines() {
        run_ok(Command::new("sh").arg("-c").arg(line));
    }
    // A line run twice (a batch system's retry) records nothing new.
    run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(commands.lines().next().unwrap()),
    );
    let (a, b) = (summary(&local, "tiny"), summary(&batch, "tiny"));
    assert_eq!(numbers(&a), numbers(&b));
    assert!(b.values().all(|r| r["git_rev"] == "e2e-test"));
}

/// Two variants with the same phase 1 (one trains only an unbounded classifier in phase 2):
/// run one at a time, the second starts phase 2 from the first's pretrained checkpoint, and
/// ends exactly where a run that pretrains itself ends.
#[test]
fn runs_with_the_same_phase1_share_it_without_changing_their_results() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("share.toml");
    std::fs::write(
        &spec_path,
        format!(
            "[sweep]\n[sweep.data_args]\ndata_dir = {:?}\nallow_modified_data = true\n\
             n_valid = 200\n[base]\nn_hidden = 32\nn_steps = 3\nepochs_phase1 = 2\n\
             epochs_phase2 = 2\nvalid_interval = 1\nseed = 4\n\
             [[configs]]\nname = \"full\"\n\
             [[configs]]\nname = \"linear\"\ntrain_encoder_phase2 = false\nc_row_bound = inf\n\
             [[configs]]\nname = \"other_phase1\"\nlambda = 0.05\n",
            fixture().display().to_string()
        ),
    )
    .unwrap();
    let spec = Spec::load(&spec_path, &DataOverrides::default()).unwrap();
    let results = dir.path().join("results");
    run_ok(
        drsae()
            .arg("sweep")
            .arg(&spec_path)
            .args(["--jobs", "1", "--results-dir"])
            .arg(&results),
    );
    let run_dir = |i: usize| results.join("share/runs").join(&spec.runs[i].id);
    let log = |i: usize| std::fs::read_to_string(run_dir(i).join("log.txt")).unwrap();
    let donor = run_dir(0).join("pretrained.safetensors");
    assert!(!log(0).contains("--pretrained"), "{}", log(0));
    assert!(
        log(1).contains(&format!("--pretrained {}", donor.display())),
        "{}",
        log(1)
    );
    assert!(!log(2).contains("--pretrained"), "{}", log(2));

    // The same config trained from scratch outside the sweep.
    let alone = dir.path().join("alone");
    run_ok(
        drsae()
            .args([
                "train",
                "--threads",
                "1",
                "--allow-modified-data",
                "--n-valid",
                "200",
            ])
            .arg("--data-dir")
            .arg(fixture())
            .arg("--config")
            .arg(run_dir(1).join("config.toml"))
            .arg("--out")
            .arg(&alone),
    );
    let last = |d: &Path| {
        drsae_model::checkpoint::load(&d.join("checkpoint-last.safetensors"))
            .unwrap()
            .params
    };
    assert_eq!(last(&run_dir(1)), last(&alone));
    let rows = summary(&results, "share");
    assert_eq!(rows[&spec.runs[1].id]["epochs_run"], "4");
}
