//! The config: spec defaults, TOML round trips, and a named rejection for each nonsense value.

use drsae_model::{Config, ConfigError, Phase};

#[test]
fn defaults_validate_and_match_the_spec() {
    let cfg = Config::default();
    cfg.validate().expect("defaults are valid");
    assert_eq!(
        (cfg.n_input, cfg.n_hidden, cfg.n_classes, cfg.n_steps),
        (784, 400, 10, 11)
    );
    assert_eq!(
        (cfg.w_rec, cfg.lambda, cfg.w_cls_phase1, cfg.w_cls_phase2),
        (5.0, 0.09, 0.0, 1.0)
    );
    assert_eq!(cfg.alpha(), 1.25 / 11.0);
    assert_eq!(cfg.e_row_bound(), 1.25 / 11.0);
    assert_eq!(
        (cfg.mult_e(), cfg.mult_b(), cfg.mult_s()),
        (1.0 / 11.0, 1.0 / 11.0, 1.0 / 10.0)
    );
    assert_eq!((cfg.mult_d, cfg.mult_c, cfg.mult_c_bias), (1.0, 0.2, 0.2));
    assert_eq!(
        (cfg.d_col_bound, cfg.c_row_bound, cfg.b_init),
        (1.0, 5.0, 1e-5)
    );
    assert_eq!((cfg.learning_rate, cfg.lr_decay), (5e-3, 5e-6));
    assert_eq!(
        (
            cfg.batch_size,
            cfg.epochs_phase1,
            cfg.epochs_phase2,
            cfg.valid_interval
        ),
        (10, 100, 1000, 2)
    );
    assert!(cfg.classifier_bias);
    let w1 = cfg.loss_weights(Phase::Pretrain);
    let w2 = cfg.loss_weights(Phase::Finetune);
    assert_eq!((w1.w_rec, w1.lambda, w1.w_cls), (5.0, 0.09, 0.0));
    assert_eq!(w2.w_cls, 1.0);
    // T = 1 uses S zero times; its multiplier must still be finite.
    let t1 = Config {
        n_steps: 1,
        ..Config::default()
    };
    assert_eq!(t1.mult_s(), 1.0);
}

#[test]
fn toml_round_trip_preserves_every_field() {
    let default = Config::default();
    let text = default.to_toml_string().expect("serialise");
    assert_eq!(Config::from_toml_str(&text).expect("parse"), default);

    let custom = Config {
        n_hidden: 200,
        n_steps: 2,
        e_row_bound: Some(1.25 / 10.0),
        mult_e: Some(0.3),
        mult_b: Some(0.0),
        mult_s: Some(1.0 / 3.0),
        lambda: 0.1 + 0.2, // not representable in few digits
        classifier_bias: false,
        train_encoder_phase2: false,
        projection_interval: 5,
        patience: Some(40),
        seed: i64::MAX as u64,
        ..Config::default()
    };
    let text = custom.to_toml_string().expect("serialise");
    assert_eq!(Config::from_toml_str(&text).expect("parse"), custom);
}

/// `train_encoder_phase2` is written only when it departs from the paper, so the TOML (and
/// with it every sweep run id) of a config that does not use it is what it was before.
#[test]
fn encoder_flag_is_written_only_when_false() {
    let text = Config::default().to_toml_string().expect("serialise");
    assert!(!text.contains("train_encoder_phase2"), "{text}");
    let frozen = Config {
        train_encoder_phase2: false,
        ..Config::default()
    };
    let text = frozen.to_toml_string().expect("serialise");
    assert!(text.contains("train_encoder_phase2 = false"), "{text}");
}

/// Early stopping is off unless asked for, and is then written out.
#[test]
fn patience_is_written_only_when_set() {
    let text = Config::default().to_toml_string().expect("serialise");
    assert!(!text.contains("patience"), "{text}");
    let cfg = Config::from_toml_str("patience = 50\nvalid_interval = 5\n").expect("parse");
    assert_eq!(cfg.patience, Some(50));
    assert!(
        cfg.to_toml_string()
            .expect("serialise")
            .contains("patience = 50")
    );
}

/// Runs may share a pretrained checkpoint exactly when they differ only in what phase 2 reads.
#[test]
fn same_phase1_ignores_phase2_fields_and_nothing_else() {
    let base = Config::default();
    let phase2_only = Config {
        w_cls_phase2: 0.5,
        train_encoder_phase2: false,
        epochs_phase2: 7,
        valid_interval: 5,
        patience: Some(20),
        ..base.clone()
    };
    assert!(base.same_phase1(&phase2_only));
    assert!(phase2_only.same_phase1(&base));
    // Without a phase-1 classification loss the classifier's settings do not reach phase 1,
    // unless its bound is below the unit norm the rows start with.
    let classifier = Config {
        c_row_bound: f64::INFINITY,
        mult_c: 1.0,
        classifier_bias: false,
        ..base.clone()
    };
    assert!(base.same_phase1(&classifier));
    let tight = Config {
        c_row_bound: 0.5,
        ..base.clone()
    };
    assert!(!base.same_phase1(&tight));
    let supervised = |c: &Config| Config {
        w_cls_phase1: 0.1,
        ..c.clone()
    };
    assert!(!supervised(&base).same_phase1(&supervised(&classifier)));
    let differs = [
        Config {
            seed: 1,
            ..base.clone()
        },
        Config {
            epochs_phase1: 99,
            ..base.clone()
        },
        Config {
            w_cls_phase1: 0.1,
            ..base.clone()
        },
        Config {
            lr_decay: 1e-5,
            ..base.clone()
        },
        Config {
            n_hidden: 200,
            ..base.clone()
        },
    ];
    for other in differs {
        assert!(!base.same_phase1(&other), "{other:?}");
    }
}

#[test]
fn absent_fields_take_their_defaults() {
    let cfg = Config::from_toml_str("n_hidden = 200\nepochs_phase1 = 30\n").expect("parse");
    assert_eq!(
        cfg,
        Config {
            n_hidden: 200,
            epochs_phase1: 30,
            ..Config::default()
        }
    );
    assert_eq!(Config::from_toml_str("").expect("empty"), Config::default());
}

#[test]
fn each_nonsense_value_is_rejected_with_its_field_named() {
    let cases = [
        ("n_steps = 0", "n_steps"),
        ("n_hidden = 0", "n_hidden"),
        ("n_input = 0", "n_input"),
        ("n_classes = 1", "n_classes"),
        ("n_classes = 300", "n_classes"),
        ("lambda = -1", "lambda"),
        ("lambda = nan", "lambda"),
        ("w_rec = inf", "w_rec"),
        ("w_rec = -0.5", "w_rec"),
        ("w_cls_phase1 = -1", "w_cls_phase1"),
        ("w_cls_phase2 = nan", "w_cls_phase2"),
        ("learning_rate = 0", "learning_rate"),
        ("learning_rate = -1e-3", "learning_rate"),
        ("learning_rate = inf", "learning_rate"),
        ("lr_decay = -1e-6", "lr_decay"),
        ("d_col_bound = 0", "d_col_bound"),
        ("e_row_bound = -0.1", "e_row_bound"),
        ("c_row_bound = nan", "c_row_bound"),
        ("mult_e = -1", "mult_e"),
        ("mult_b = nan", "mult_b"),
        ("mult_s = -0.1", "mult_s"),
        ("mult_d = -1", "mult_d"),
        ("mult_c = nan", "mult_c"),
        ("mult_c_bias = -0.2", "mult_c_bias"),
        ("alpha_scale = 0", "alpha_scale"),
        ("template_weight = -0.25", "template_weight"),
        ("b_init = nan", "b_init"),
        ("batch_size = 0", "batch_size"),
        ("projection_interval = 0", "projection_interval"),
        ("valid_interval = 0", "valid_interval"),
        ("patience = 1", "patience"),
        ("patience = 0", "patience"),
    ];
    for (text, field) in cases {
        let err = Config::from_toml_str(text).expect_err(text);
        assert!(
            matches!(&err, ConfigError::Invalid { field: f, .. } if *f == field),
            "`{text}` gave {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("field `{field}`")),
            "`{text}` gave {msg}"
        );
        let value = text.split(" = ").nth(1).expect("value");
        let shown = value
            .parse::<f64>()
            .map(|v| v.to_string())
            .unwrap_or(value.to_string());
        assert!(msg.contains(&format!("got {shown}")), "`{text}` gave {msg}");
    }
    let err = Config::from_toml_str("lambda = -1").expect_err("negative");
    assert_eq!(
        err.to_string(),
        "field `lambda` must be a finite number ≥ 0, got -1"
    );
    let huge_seed = Config {
        seed: u64::MAX,
        ..Config::default()
    };
    assert!(
        huge_seed
            .validate()
            .expect_err("seed")
            .to_string()
            .contains("field `seed`")
    );
}

#[test]
fn unknown_and_mistyped_fields_are_rejected_with_their_location() {
    let msg = Config::from_toml_str("n_hidden = 200\nn_hiden = 3\n")
        .expect_err("typo")
        .to_string();
    assert!(msg.contains("n_hiden") && msg.contains("line 2"), "{msg}");
    let msg = Config::from_toml_str("lambda = \"big\"\n")
        .expect_err("type")
        .to_string();
    assert!(msg.contains("lambda") && msg.contains("line 1"), "{msg}");
}

#[test]
fn phase_names_are_lowercase_everywhere() {
    assert_eq!(Phase::Pretrain.to_string(), "pretrain");
    assert_eq!(Phase::Finetune.to_string(), "finetune");
    assert_eq!("finetune".parse::<Phase>(), Ok(Phase::Finetune));
    assert!("Finetune".parse::<Phase>().is_err());
    assert_eq!(
        serde_json::to_string(&Phase::Pretrain).expect("json"),
        "\"pretrain\""
    );
}
