//! `drsae train` on the committed fixture: early stopping (and what a resumed run reports),
//! and starting phase 2 from another run's pretrained checkpoint (which must give exactly what
//! pretraining in place gives).

mod common;

use std::path::Path;
use std::process::Command;

use common::{drsae, fixture, run_ok};
use drsae_model::checkpoint;

/// `drsae train` on the fixture with a small network and the given overrides.
fn train(out: &Path, sets: &[&str], extra: &[&str]) -> Command {
    let mut c = drsae();
    c.args([
        "train",
        "--threads",
        "1",
        "--allow-modified-data",
        "--n-valid",
        "200",
    ])
    .arg("--data-dir")
    .arg(fixture())
    .arg("--out")
    .arg(out);
    for s in ["n_hidden=32", "n_steps=3", "valid_interval=1"]
        .iter()
        .chain(sets)
    {
        c.args(["--set", s]);
    }
    c.args(extra);
    c
}

fn result(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("result.json")).expect("result.json");
    serde_json::from_str(&text).expect("json")
}

fn metrics_rows(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .expect("metrics.csv")
        .lines()
        .skip(1)
        .map(String::from)
        .collect()
}

#[test]
fn early_stopping_ends_phase2_patience_epochs_after_the_best() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let sets = ["epochs_phase1=1", "epochs_phase2=60", "patience=3"];
    run_ok(&mut train(&dir, &sets, &[]));
    let r = result(&dir);
    let best = r["best_epoch"].as_u64().expect("best epoch");
    let run = r["epochs_run"].as_u64().expect("epochs run");
    assert!(
        r["message"].as_str().unwrap().starts_with("stopped early"),
        "{r}"
    );
    assert_eq!(run, 1 + best + 3, "{r}");
    assert_eq!(metrics_rows(&dir).len() as u64, run);
    let at_best = r["wall_s_at_best"].as_f64().expect("wall at best");
    assert!(
        at_best > 0.0 && at_best <= r["wall_s"].as_f64().unwrap(),
        "{r}"
    );

    let rate = r["examples_per_s"].as_f64().expect("examples/s");
    assert!(rate > 0.0, "{r}");

    // Resuming a run that has stopped early trains nothing more, and reports the rate of the
    // training its checkpoint records, not of this process (which trained nothing).
    run_ok(&mut train(&dir, &sets, &["--resume"]));
    let again = result(&dir);
    assert_eq!(again["epochs_run"].as_u64(), Some(run));
    assert_eq!(again["examples_per_s"].as_f64(), Some(rate), "{again}");
    assert_eq!(metrics_rows(&dir).len() as u64, run);
}

#[test]
fn phase2_from_a_shared_pretrained_checkpoint_equals_pretraining_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    // The high rate leaves some decoder columns an ulp above their bound after projection
    // and their units silent: a resumed run must project them exactly as an unbroken one.
    let sets = ["epochs_phase1=2", "epochs_phase2=3", "learning_rate=0.05"];
    run_ok(&mut train(&a, &sets, &[]));
    let shared = a.join("pretrained.safetensors");
    run_ok(&mut train(
        &b,
        &sets,
        &["--pretrained", shared.to_str().unwrap()],
    ));

    let last = |d: &Path| checkpoint::load(&d.join("checkpoint-last.safetensors")).unwrap();
    let (la, lb) = (last(&a), last(&b));
    assert_eq!(la.params, lb.params, "parameters after phase 2 differ");
    assert_eq!(la.state.best_valid_error, lb.state.best_valid_error);
    assert_eq!(la.state.updates, lb.state.updates);
    // The phase-1 rows come along, so the metrics cover both phases.
    let (ma, mb) = (metrics_rows(&a), metrics_rows(&b));
    assert_eq!(mb.len(), 5);
    assert_eq!(ma[..2], mb[..2]);
    assert!(b.join("pretrained.safetensors").exists());

    // A config that differs only in what phase 2 reads may share it...
    let c = tmp.path().join("c");
    let frozen = [
        "epochs_phase1=2",
        "epochs_phase2=1",
        "learning_rate=0.05",
        "train_encoder_phase2=false",
    ];
    run_ok(&mut train(
        &c,
        &frozen,
        &["--pretrained", shared.to_str().unwrap()],
    ));
    // ...one whose phase 1 differs may not, and the error names the file.
    let d = tmp.path().join("d");
    let other = [
        "epochs_phase1=2",
        "epochs_phase2=3",
        "learning_rate=0.05",
        "lambda=0.05",
    ];
    let out = train(&d, &other, &["--pretrained", shared.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pretrained.safetensors") && err.contains("different phase-1"),
        "{err}"
    );
    // So may a checkpoint that is not the end of phase 1.
    let e = tmp.path().join("e");
    let mid = a.join("checkpoint-last.safetensors");
    let out = train(&e, &sets, &["--pretrained", mid.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not the end of a 2-epoch phase 1"));
}
