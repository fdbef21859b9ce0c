//! SGD follows the spec's step rule and descends; projections enforce exactly the norm bounds.

mod common;

use drsae_model::optim::{project, sgd_step, should_project};
use drsae_model::reference::{self, Model};
use drsae_model::{Config, Params, Phase};

fn small_config() -> Config {
    Config {
        n_input: 6,
        n_hidden: 5,
        n_classes: 3,
        n_steps: 4,
        ..Config::default()
    }
}

#[test]
fn sgd_steps_with_a_small_learning_rate_decrease_the_batch_loss() {
    let cfg = Config {
        learning_rate: 1e-3,
        ..small_config()
    };
    let mut rng = common::rng(21);
    let mut p = common::random_params(&mut rng, 6, 5, 3, true);
    let xs = common::unit_images(&mut rng, 4, 6);
    let ys = [0u8, 1, 2, 1];
    for phase in [Phase::Pretrain, Phase::Finetune] {
        let model = Model::new(&cfg, phase);
        let mut last = reference::batch_loss(&p, &xs, &ys, &model).total();
        for k in 0..5 {
            let (_, g) = reference::loss_and_grad(&p, &xs, &ys, &model);
            sgd_step(&mut p, &g, &cfg, k);
            let now = reference::batch_loss(&p, &xs, &ys, &model).total();
            assert!(now < last, "{phase} step {k}: loss {last} -> {now}");
            last = now;
        }
    }
}

#[test]
fn sgd_step_applies_decayed_rate_and_per_parameter_multipliers() {
    let cfg = small_config();
    let mut rng = common::rng(22);
    let p0 = common::random_params(&mut rng, 6, 5, 3, true);
    let g = common::random_params(&mut rng, 6, 5, 3, true);
    let k = 40_000;
    let mut p = p0.clone();
    sgd_step(&mut p, &g, &cfg, k);
    let eta = 5e-3 / (1.0 + 5e-6 * k as f64);
    let mults = [
        ("e", 1.0 / 4.0),
        ("s", 1.0 / 3.0),
        ("b", 1.0 / 4.0),
        ("d", 1.0),
        ("c", 0.2),
        ("c_bias", 0.2),
    ];
    for (((name, _, new), (_, _, old)), ((_, _, grad), (mname, mult))) in
        p.tensors().zip(p0.tensors()).zip(g.tensors().zip(mults))
    {
        assert_eq!(name, mname);
        for ((a, b), gv) in new.iter().zip(old).zip(grad) {
            let want = b - eta * mult * gv;
            assert!(
                (a - want).abs() <= 1e-15 * want.abs().max(1.0),
                "{name}: {a} vs {want}"
            );
        }
    }
}

#[test]
fn learning_rate_decays_with_the_update_count() {
    let cfg = Config::default();
    assert_eq!(cfg.learning_rate_at(0), 5e-3);
    assert!((cfg.learning_rate_at(200_000) - 5e-3 / 2.0).abs() < 1e-18);
}

#[test]
fn should_project_after_every_interval_th_update() {
    let every = Config::default();
    assert!((0..10).all(|k| should_project(&every, k)));
    let fifth = Config {
        projection_interval: 5,
        ..Config::default()
    };
    let hits: Vec<u64> = (0..15).filter(|&k| should_project(&fifth, k)).collect();
    assert_eq!(hits, [4, 9, 14]);
}

fn column_norm(p: &Params<f64>, i: usize) -> f64 {
    (0..p.n_input)
        .map(|k| p.d[k * p.n_hidden + i].powi(2))
        .sum::<f64>()
        .sqrt()
}

fn row_norm(data: &[f64], row: usize, len: usize) -> f64 {
    data[row * len..(row + 1) * len]
        .iter()
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt()
}

#[test]
fn projection_bounds_every_constrained_vector_and_leaves_the_rest_unchanged() {
    let cfg = Config {
        e_row_bound: Some(1.5),
        c_row_bound: 2.0,
        ..small_config()
    };
    let (m, n, l) = (6, 5, 3);
    let mut rng = common::rng(23);
    let mut p0 = common::random_params(&mut rng, m, n, l, true);
    // Make some vectors clearly inside their bound, so both branches are exercised.
    for k in 0..m {
        p0.d[k * n] *= 0.01;
    }
    p0.e[..m].iter_mut().for_each(|v| *v *= 0.01);
    p0.c[..n].iter_mut().for_each(|v| *v *= 0.01);
    let mut p = p0.clone();
    project(&mut p, &cfg);

    let tol = 1.0 + 1e-12;
    let mut scaled = 0;
    for i in 0..n {
        let (before, after) = (column_norm(&p0, i), column_norm(&p, i));
        assert!(after <= cfg.d_col_bound * tol, "D column {i} norm {after}");
        if before <= cfg.d_col_bound {
            assert!(
                (0..m).all(|k| p.d[k * n + i] == p0.d[k * n + i]),
                "D column {i} changed"
            );
        } else {
            scaled += 1;
            assert!(
                (after - cfg.d_col_bound).abs() < 1e-12,
                "D column {i} not on the bound"
            );
            let ratio = p.d[i] / p0.d[i];
            assert!((0..m).all(|k| (p.d[k * n + i] - ratio * p0.d[k * n + i]).abs() < 1e-12));
        }
    }
    for i in 0..n {
        let (before, after) = (row_norm(&p0.e, i, m), row_norm(&p.e, i, m));
        assert!(after <= 1.5 * tol, "E row {i} norm {after}");
        if before <= 1.5 {
            assert_eq!(p.e[i * m..(i + 1) * m], p0.e[i * m..(i + 1) * m]);
        } else {
            scaled += 1;
        }
    }
    for q in 0..l {
        let (before, after) = (row_norm(&p0.c, q, n), row_norm(&p.c, q, n));
        assert!(after <= 2.0 * tol, "C row {q} norm {after}");
        if before <= 2.0 {
            assert_eq!(p.c[q * n..(q + 1) * n], p0.c[q * n..(q + 1) * n]);
        } else {
            scaled += 1;
        }
    }
    assert!(
        scaled >= 3,
        "the random draw should put some vectors over their bounds"
    );
    assert_eq!(
        (&p.s, &p.b, &p.c_bias),
        (&p0.s, &p0.b, &p0.c_bias),
        "S, b, c are unconstrained"
    );

    // The f32 path obeys the same bounds up to f32 rounding.
    let mut p32 = p0.to_f32();
    project(&mut p32, &cfg);
    let back = p32.to_f64();
    assert!((0..n).all(|i| column_norm(&back, i) <= 1.0 + 1e-6));
    assert!((0..n).all(|i| row_norm(&back.e, i, m) <= 1.5 * (1.0 + 1e-6)));
    // The default E bound is α = alpha_scale / T.
    let mut p = p0.clone();
    project(&mut p, &small_config());
    assert!((0..n).all(|i| row_norm(&p.e, i, m) <= 1.25 / 4.0 * tol));
}
