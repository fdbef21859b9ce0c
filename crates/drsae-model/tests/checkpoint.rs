//! Checkpoints round-trip bit-exactly, and every malformed file is a clear error, never a panic.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use drsae_model::checkpoint::{self, Checkpoint, CheckpointError, TrainState};
use drsae_model::{Config, Params, Phase};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

fn small_config() -> Config {
    Config {
        n_input: 5,
        n_hidden: 4,
        n_classes: 3,
        n_steps: 3,
        e_row_bound: Some(0.125),
        mult_s: Some(0.37),
        seed: 42,
        ..Config::default()
    }
}

fn sample_checkpoint() -> Checkpoint {
    let cfg = small_config();
    let mut rng = common::rng(5);
    let mut params = common::random_params(&mut rng, 5, 4, 3, true).to_f32();
    // Values that a lossy encoding would mangle.
    params.e[0] = -0.0;
    params.e[1] = f32::MIN_POSITIVE / 8.0; // subnormal
    params.s[2] = f32::MAX;
    params.b[3] = 1e-5;
    Checkpoint {
        params,
        config: cfg,
        state: TrainState {
            phase: Phase::Finetune,
            epoch: 17,
            updates: 123_456,
            seed: 42,
            best_valid_error: Some(0.010_8 + 1e-17 * 3.0),
            best_epoch: Some(16),
            best_test_error: Some(0.0112),
            best_wall_s: Some(1234.5),
            wall_s: 1234.5,
            examples_trained: 8_500_000,
            train_s: 1100.25,
        },
    }
}

fn bits(p: &Params<f32>) -> Vec<u32> {
    p.tensors()
        .flat_map(|(_, _, d)| d.iter().map(|v| v.to_bits()))
        .collect()
}

#[test]
fn checkpoint_round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ckpt.safetensors");
    let ckpt = sample_checkpoint();
    checkpoint::save(&path, &ckpt).expect("save");
    let back = checkpoint::load(&path).expect("load");
    assert_eq!(bits(&back.params), bits(&ckpt.params));
    assert_eq!(back, ckpt);
    // Saving again over the file replaces it and leaves no temporary files behind.
    checkpoint::save(&path, &back).expect("save over");
    let names: Vec<_> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("ckpt.safetensors")]);
}

#[test]
fn checkpoint_uses_the_documented_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ckpt.safetensors");
    let ckpt = sample_checkpoint();
    checkpoint::save(&path, &ckpt).expect("save");
    let bytes = fs::read(&path).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let (_, header) = SafeTensors::read_metadata(&bytes).expect("header");
    let meta = header.metadata().as_ref().expect("metadata");
    assert_eq!(meta["format"], "drsae-checkpoint-v1");
    assert_eq!(
        Config::from_toml_str(&meta["config"]).expect("config TOML"),
        ckpt.config
    );
    let state: TrainState = serde_json::from_str(&meta["state"]).expect("state JSON");
    assert_eq!(state, ckpt.state);
    let shapes: HashMap<&str, Vec<usize>> = [
        ("e", vec![4, 5]),
        ("s", vec![4, 4]),
        ("b", vec![4]),
        ("d", vec![5, 4]),
        ("c", vec![3, 4]),
        ("c_bias", vec![3]),
    ]
    .into();
    let mut names = st.names();
    names.sort_unstable();
    assert_eq!(names, ["b", "c", "c_bias", "d", "e", "s"]);
    for (name, shape) in shapes {
        let t = st.tensor(name).expect("tensor");
        assert_eq!(t.dtype(), Dtype::F32);
        assert_eq!(t.shape(), shape.as_slice(), "{name}");
    }
    let e = st.tensor("e").expect("e");
    assert_eq!(
        &e.data()[4..8],
        ckpt.params.e[1].to_le_bytes(),
        "little-endian F32"
    );
}

/// Rewrites the saved checkpoint with one tensor changed by `edit`, keeping the metadata.
fn rewrite(
    src: &Path,
    dst: &Path,
    edit: impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<(String, Dtype, Vec<usize>, Vec<u8>)>,
) {
    let bytes = fs::read(src).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("valid");
    let (_, header) = SafeTensors::read_metadata(&bytes).expect("header");
    let owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter_map(|(name, t)| edit(&name, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, dt, sh, data)| {
            (
                n.clone(),
                TensorView::new(*dt, sh.clone(), data).expect("view"),
            )
        })
        .collect();
    let out = safetensors::serialize(views, header.metadata().clone()).expect("serialize");
    fs::write(dst, out).expect("write");
}

fn load_err(path: &Path) -> (CheckpointError, String) {
    let err = checkpoint::load(path).expect_err("must be rejected");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message must name the file: {msg}"
    );
    (err, msg)
}

#[test]
fn load_rejects_truncated_and_garbage_files_without_panicking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.safetensors");
    checkpoint::save(&good, &sample_checkpoint()).expect("save");
    let bytes = fs::read(&good).expect("read");
    let bad = dir.path().join("bad.safetensors");
    for len in 0..bytes.len() {
        fs::write(&bad, &bytes[..len]).expect("write");
        let (err, _) = load_err(&bad);
        assert!(
            matches!(err, CheckpointError::Format { .. }),
            "prefix of {len} bytes: {err}"
        );
    }
    let (_, msg) = load_err(&bad);
    assert!(
        msg.contains("truncated") || msg.contains("not a valid"),
        "{msg}"
    );

    let mut rng = common::rng(9);
    for len in [1, 7, 8, 9, 64, 1000] {
        let junk: Vec<u8> = common::uniform(&mut rng, len, 0.0, 256.0)
            .iter()
            .map(|&v| v as u8)
            .collect();
        fs::write(&bad, &junk).expect("write");
        load_err(&bad);
    }
    // A header whose offsets would overflow safetensors' own size arithmetic.
    let huge = usize::MAX / 8;
    let header = format!(
        r#"{{"a":{{"dtype":"U8","shape":[{huge}],"data_offsets":[0,{huge}]}},"b":{{"dtype":"U8","shape":[{huge}],"data_offsets":[{huge},{}]}}}}"#,
        2 * huge
    );
    let mut crafted = (header.len() as u64).to_le_bytes().to_vec();
    crafted.extend(header.as_bytes());
    fs::write(&bad, &crafted).expect("write");
    load_err(&bad);

    let missing = dir.path().join("nope.safetensors");
    let (err, _) = load_err(&missing);
    assert!(matches!(err, CheckpointError::Io { .. }));
}

#[test]
fn load_rejects_wrong_tensor_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.safetensors");
    checkpoint::save(&good, &sample_checkpoint()).expect("save");
    let bad = dir.path().join("renamed.safetensors");
    rewrite(&good, &bad, |n, dt, sh, d| {
        Some((if n == "s" { "S".into() } else { n.into() }, dt, sh, d))
    });
    let (err, msg) = load_err(&bad);
    assert!(
        matches!(err, CheckpointError::UnknownTensor { .. }),
        "{msg}"
    );
    assert!(msg.contains("`S`"), "{msg}");

    rewrite(&good, &bad, |n, dt, sh, d| {
        (n != "c_bias").then(|| (n.into(), dt, sh, d))
    });
    let (err, msg) = load_err(&bad);
    assert!(
        matches!(err, CheckpointError::MissingTensor { name: "c_bias", .. }),
        "{msg}"
    );
    assert!(msg.contains("`c_bias` is missing"), "{msg}");
}

#[test]
fn load_rejects_wrong_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.safetensors");
    checkpoint::save(&good, &sample_checkpoint()).expect("save");
    let bad = dir.path().join("shape.safetensors");
    // Same element count, transposed: only a shape check can catch it.
    rewrite(&good, &bad, |n, dt, sh, d| {
        Some((
            n.into(),
            dt,
            if n == "e" { vec![sh[1], sh[0]] } else { sh },
            d,
        ))
    });
    let (err, msg) = load_err(&bad);
    assert!(
        matches!(err, CheckpointError::WrongShape { name: "e", .. }),
        "{msg}"
    );
    assert!(msg.contains("[5, 4]") && msg.contains("[4, 5]"), "{msg}");
}

#[test]
fn load_rejects_wrong_dtype() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.safetensors");
    checkpoint::save(&good, &sample_checkpoint()).expect("save");
    let bad = dir.path().join("dtype.safetensors");
    rewrite(&good, &bad, |n, dt, sh, d| {
        if n == "b" {
            let wide: Vec<u8> = d
                .chunks_exact(4)
                .flat_map(|c| f64::from(f32::from_le_bytes(c.try_into().expect("4"))).to_le_bytes())
                .collect();
            Some((n.into(), Dtype::F64, sh, wide))
        } else {
            Some((n.into(), dt, sh, d))
        }
    });
    let (err, msg) = load_err(&bad);
    assert!(
        matches!(err, CheckpointError::WrongDtype { name: "b", .. }),
        "{msg}"
    );
    assert!(msg.contains("F64"), "{msg}");
}

#[test]
fn load_rejects_bad_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("meta.safetensors");
    let write_with = |meta: HashMap<String, String>| {
        let data = vec![0u8; 4];
        let view = TensorView::new(Dtype::F32, vec![1], &data).expect("view");
        fs::write(
            &bad,
            safetensors::serialize([("b", view)], Some(meta)).expect("ser"),
        )
        .expect("write");
    };
    let ckpt = sample_checkpoint();
    let good_config = ckpt.config.to_toml_string().expect("toml");
    let good_state = serde_json::to_string(&ckpt.state).expect("json");
    let meta = |f: &str, c: &str, s: &str| {
        HashMap::from([
            ("format".to_string(), f.to_string()),
            ("config".to_string(), c.to_string()),
            ("state".to_string(), s.to_string()),
        ])
    };

    write_with(meta("something-else", &good_config, &good_state));
    assert!(load_err(&bad).1.contains("metadata `format`"));
    write_with(meta("drsae-checkpoint-v1", "n_hiden = 4", &good_state));
    let msg = load_err(&bad).1;
    assert!(
        msg.contains("metadata `config`") && msg.contains("n_hiden"),
        "{msg}"
    );
    write_with(meta("drsae-checkpoint-v1", "lambda = -1.0", &good_state));
    assert!(load_err(&bad).1.contains("`lambda`"));
    write_with(meta(
        "drsae-checkpoint-v1",
        &good_config,
        "{\"phase\": \"warmup\"}",
    ));
    assert!(load_err(&bad).1.contains("metadata `state`"));
    write_with(HashMap::new());
    assert!(load_err(&bad).1.contains("metadata `format`: missing"));
}

#[test]
fn save_refuses_parameters_that_disagree_with_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ckpt.safetensors");
    let mut ckpt = sample_checkpoint();
    ckpt.config.n_hidden = 5;
    let err = checkpoint::save(&path, &ckpt).expect_err("dims differ");
    assert!(matches!(err, CheckpointError::Inconsistent { .. }), "{err}");
    let mut ckpt = sample_checkpoint();
    ckpt.params.b.pop();
    let err = checkpoint::save(&path, &ckpt).expect_err("short tensor");
    assert!(err.to_string().contains("`b`"), "{err}");
    assert!(!path.exists());
}
