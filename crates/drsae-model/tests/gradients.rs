//! The analytic BPTT gradient of the reference against central differences and closed forms.

mod common;

use std::cell::RefCell;

use drsae_model::reference::{self, Model};
use drsae_model::{Grads, LossWeights, Params};
use proptest::prelude::*;
use proptest::test_runner::{
    Config as ProptestConfig, FileFailurePersistence, TestCaseError, TestRunner,
};
use rand::RngExt;

/// Central-difference step. Parameters are O(1), so an absolute step suits every entry.
const H: f64 = 1e-6;
/// Accept |analytic − numeric| ≤ REL_TOL · max(1, |analytic|, |numeric|).
const REL_TOL: f64 = 1e-6;

/// For every example, which units are active (a > 0) at every step: the ReLU pattern that
/// fixes which smooth piece of the loss we are on.
fn active_pattern(p: &Params<f64>, xs: &[f64], n_steps: usize) -> Vec<bool> {
    xs.chunks_exact(p.n_input)
        .flat_map(|x| {
            let t = reference::forward(p, x, n_steps);
            t.pre
                .into_iter()
                .flatten()
                .map(|a| a > 0.0)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[derive(Debug, Default)]
struct FdStats {
    checked: usize,
    skipped: usize,
    max_rel_err: f64,
    worst: String,
}

/// Compares every gradient entry with a central difference; returns the first mismatch.
fn check_against_central_differences(
    p: &Params<f64>,
    xs: &[f64],
    ys: &[u8],
    model: &Model,
    stats: &mut FdStats,
) -> Result<(), String> {
    let (_, g) = reference::loss_and_grad(p, xs, ys, model);
    let base = active_pattern(p, xs, model.n_steps);
    let analytic: Vec<(&'static str, Vec<f64>)> =
        g.tensors().map(|(name, _, d)| (name, d.to_vec())).collect();

    for (t_idx, (name, grad)) in analytic.iter().enumerate() {
        // With the switch off, c is not a parameter: the loss still reads it, but training must
        // leave it alone, so its gradient is zero by definition rather than ∂L/∂c.
        if *name == "c_bias" && !model.classifier_bias {
            if grad.iter().any(|&v| v != 0.0) {
                return Err(format!("c_bias gradient {grad:?} with classifier_bias off"));
            }
            continue;
        }
        for (i, &a) in grad.iter().enumerate() {
            let shifted = |delta: f64| {
                let mut q = p.clone();
                let (_, data) = q.tensors_mut().nth(t_idx).expect("tensor index");
                data[i] += delta;
                q
            };
            let points = [shifted(2.0 * H), shifted(H), shifted(-H), shifted(-2.0 * H)];
            // A kink inside [θ−2h, θ+2h] makes the difference quotient meaningless there.
            if points
                .iter()
                .any(|q| active_pattern(q, xs, model.n_steps) != base)
            {
                stats.skipped += 1;
                continue;
            }
            stats.checked += 1;
            let l = points.map(|q| reference::batch_loss(&q, xs, ys, model).total());
            // Fourth-order central difference (Richardson on the h and 2h quotients), error
            // O(h⁴ f⁽⁵⁾). The plain (f(θ+h) − f(θ−h))/2h is not enough: when a code is tiny but
            // non-zero, ν = ‖z^T‖ ≈ 1e-4..1e-3 and the normalisation's derivatives grow like
            // 1/ν^k, so its O(h² f''') error reaches (h/ν)² ≈ 1e-5 (seen in practice), while
            // (2h/ν)⁴ stays below 2e-7 even at the ε floor ν = 1e-4. Rounding adds
            // ≈ ε·|L|/h ≈ 1e-10·|L|.
            let numeric = (8.0 * (l[1] - l[2]) - (l[0] - l[3])) / (12.0 * H);
            let scale = 1f64.max(a.abs()).max(numeric.abs());
            let rel = (a - numeric).abs() / scale;
            if rel > stats.max_rel_err {
                stats.max_rel_err = rel;
                stats.worst = format!("{name}[{i}]: analytic {a:e}, numeric {numeric:e}");
            }
            if rel > REL_TOL {
                return Err(format!(
                    "{name}[{i}]: analytic {a:e} vs central difference {numeric:e} (relative error {rel:e})"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn bptt_matches_central_differences() {
    // 128 cases keep the suite fast; PROPTEST_CASES=N runs a longer search.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        source_file: Some(file!()),
        // Relative to the crate root, where cargo runs integration tests.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/gradients.txt",
        ))),
        ..ProptestConfig::default()
    });
    let strategy = (
        (1usize..=8, 1usize..=8, 2usize..=4, 1usize..=5),
        (any::<bool>(), any::<bool>(), 1usize..=3, any::<u64>()),
    );
    let stats = RefCell::new(FdStats::default());
    let result = runner.run(
        &strategy,
        |((m, n, l, t), (phase2, classifier_bias, batch, seed))| {
            let mut rng = common::rng(seed);
            let p = common::random_params(&mut rng, m, n, l, classifier_bias);
            let xs = common::uniform(&mut rng, batch * m, -1.0, 1.0);
            let ys: Vec<u8> = (0..batch).map(|_| rng.random_range(0..l as u8)).collect();
            let weights = LossWeights {
                w_rec: rng.random_range(0.5..5.0),
                lambda: rng.random_range(0.0..0.5),
                w_cls: if phase2 {
                    rng.random_range(0.5..2.0)
                } else {
                    0.0
                },
            };
            let model = Model {
                n_steps: t,
                classifier_bias,
                weights,
            };
            let mut case = FdStats::default();
            let outcome = check_against_central_differences(&p, &xs, &ys, &model, &mut case);
            let mut s = stats.borrow_mut();
            s.checked += case.checked;
            s.skipped += case.skipped;
            if case.max_rel_err > s.max_rel_err {
                s.max_rel_err = case.max_rel_err;
                s.worst = case.worst;
            }
            outcome.map_err(TestCaseError::fail)
        },
    );
    let s = stats.into_inner();
    eprintln!(
        "bptt_matches_central_differences: {} coordinates checked, {} skipped (ReLU flip within ±2h); \
         largest relative error {:.3e} at {}",
        s.checked, s.skipped, s.max_rel_err, s.worst
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    let total = s.checked + s.skipped;
    assert!(
        s.skipped * 20 <= total,
        "skipped {} of {total} coordinates (> 5%)",
        s.skipped
    );
}

fn relu(v: f64) -> f64 {
    v.max(0.0)
}

/// With T = 1 the model is a one-layer ReLU auto-encoder, z = relu(Ex − b), whose gradient
/// written out by hand (phase-1 loss, r = Dz − x, m = 1[Ex − b > 0]) is
///   ∂L/∂D = w_rec r zᵀ,   δ = (w_rec Dᵀ r + λ) ⊙ m,   ∂L/∂E = δ xᵀ,   ∂L/∂b = −δ,   ∂L/∂S = 0.
#[test]
fn t1_gradient_equals_one_layer_relu_autoencoder() {
    let (m, n, l) = (6, 5, 3);
    let mut rng = common::rng(7);
    let p = common::random_params(&mut rng, m, n, l, true);
    let x = common::uniform(&mut rng, m, -1.0, 1.0);
    let weights = LossWeights {
        w_rec: 2.0,
        lambda: 0.3,
        w_cls: 0.0,
    };
    let model = Model {
        n_steps: 1,
        classifier_bias: true,
        weights,
    };
    let (_, g) = reference::loss_and_grad(&p, &x, &[1], &model);

    let pre: Vec<f64> = (0..n)
        .map(|i| (0..m).map(|k| p.e[i * m + k] * x[k]).sum::<f64>() - p.b[i])
        .collect();
    assert!(
        pre.iter().any(|&v| v > 0.0) && pre.iter().any(|&v| v < 0.0),
        "want both kinds of unit"
    );
    let z: Vec<f64> = pre.iter().map(|&v| relu(v)).collect();
    let r: Vec<f64> = (0..m)
        .map(|k| (0..n).map(|i| p.d[k * n + i] * z[i]).sum::<f64>() - x[k])
        .collect();
    let delta: Vec<f64> = (0..n)
        .map(|i| {
            let back: f64 = (0..m).map(|k| p.d[k * n + i] * r[k]).sum();
            if pre[i] > 0.0 {
                weights.w_rec * back + weights.lambda
            } else {
                0.0
            }
        })
        .collect();

    let mut want = Grads::<f64>::zeros(m, n, l);
    for k in 0..m {
        for i in 0..n {
            want.d[k * n + i] = weights.w_rec * r[k] * z[i];
            want.e[i * m + k] = delta[i] * x[k];
        }
    }
    want.b = delta.iter().map(|v| -v).collect();
    let (diff, at) = g.max_abs_diff(&want);
    assert!(
        diff <= 1e-13,
        "T=1 gradient differs from the closed form by {diff:e} in `{at}`"
    );
}

/// A worked example of the classifier path alone (w_rec = λ = 0, T = 1, E = I, b = 0, C = I,
/// c = 0, x = (3, 4), y = 0), done by hand:
///   z = (3, 4), ν = √(25 + 1e-8) ≈ 5, ẑ ≈ (0.6, 0.8), logits = ẑ,
///   p₁ = e^0.2 / (1 + e^0.2) = 0.549833997…, p₀ = 1 − p₁, loss = ln(1 + e^0.2) = 0.798138869…
///   d_logits = p − e₀ = (−p₁, p₁)  ⇒  ∂L/∂C = d_logits ẑᵀ, ∂L/∂c = d_logits
///   d_ẑ = Cᵀ d_logits = (−p₁, p₁), ẑᵀd_ẑ = 0.2 p₁
///   d_z = (d_ẑ − ẑ (ẑᵀd_ẑ)) / ν = p₁ (−1 − 0.12, 1 − 0.16) / 5 = p₁ (−0.224, 0.168)
///   ∂L/∂E = d_z xᵀ, ∂L/∂b = −d_z, ∂L/∂D = 0 (w_rec = 0), ∂L/∂S = 0 (T = 1).
#[test]
fn normalised_classifier_gradient_matches_hand_derivation() {
    let mut p = Params::<f64>::zeros(2, 2, 2);
    p.e = vec![1.0, 0.0, 0.0, 1.0];
    p.c = vec![1.0, 0.0, 0.0, 1.0];
    p.d = vec![0.3, -0.2, 0.1, 0.7]; // arbitrary: w_rec = 0 must make it irrelevant
    let x = [3.0, 4.0];
    let model = Model {
        n_steps: 1,
        classifier_bias: true,
        weights: LossWeights {
            w_rec: 0.0,
            lambda: 0.0,
            w_cls: 1.0,
        },
    };
    let (loss, g) = reference::loss_and_grad(&p, &x, &[0], &model);

    let p1 = 0.549_833_997_312_478_f64;
    // The hand derivation rounds ν to 5; the 1e-8 inside the root moves results by ~1e-10.
    let tol = 1e-9;
    assert!(
        (loss.total() - 0.798_138_869_381_592_4).abs() < tol,
        "loss {}",
        loss.total()
    );
    let close = |got: &[f64], want: &[f64], what: &str| {
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < tol, "{what}: got {got:?}, want {want:?}");
        }
    };
    let dz = [-0.224 * p1, 0.168 * p1];
    close(&g.c, &[-p1 * 0.6, -p1 * 0.8, p1 * 0.6, p1 * 0.8], "dC");
    close(&g.c_bias, &[-p1, p1], "dc");
    close(
        &g.e,
        &[dz[0] * 3.0, dz[0] * 4.0, dz[1] * 3.0, dz[1] * 4.0],
        "dE",
    );
    close(&g.b, &[-dz[0], -dz[1]], "db");
    close(&g.d, &[0.0; 4], "dD");
    close(&g.s, &[0.0; 4], "dS");
}

#[test]
fn classifier_gradient_is_exactly_zero_when_w_cls_is_zero() {
    let mut rng = common::rng(11);
    let p = common::random_params(&mut rng, 5, 4, 3, true);
    let xs = common::uniform(&mut rng, 2 * 5, -1.0, 1.0);
    let model = Model {
        n_steps: 3,
        classifier_bias: true,
        weights: LossWeights {
            w_rec: 5.0,
            lambda: 0.09,
            w_cls: 0.0,
        },
    };
    let (loss, g) = reference::loss_and_grad(&p, &xs, &[0, 2], &model);
    assert_eq!(loss.cls, 0.0);
    assert!(g.c.iter().chain(&g.c_bias).all(|&v| v == 0.0));
    assert!(
        g.e.iter().any(|&v| v != 0.0),
        "the rest of the network still learns"
    );
}

#[test]
fn classifier_bias_gradient_is_exactly_zero_when_switched_off() {
    let mut rng = common::rng(12);
    let p = common::random_params(&mut rng, 5, 4, 3, false);
    let xs = common::uniform(&mut rng, 2 * 5, -1.0, 1.0);
    let mut model = Model {
        n_steps: 3,
        classifier_bias: false,
        weights: LossWeights {
            w_rec: 5.0,
            lambda: 0.09,
            w_cls: 1.0,
        },
    };
    let (_, g) = reference::loss_and_grad(&p, &xs, &[0, 2], &model);
    assert!(g.c_bias.iter().all(|&v| v == 0.0));
    assert!(g.c.iter().any(|&v| v != 0.0), "C still learns");
    model.classifier_bias = true;
    let (_, g) = reference::loss_and_grad(&p, &xs, &[0, 2], &model);
    assert!(
        g.c_bias.iter().any(|&v| v != 0.0),
        "with the switch on, c learns"
    );
}

#[test]
fn all_zero_code_gives_finite_loss_and_gradient() {
    let mut rng = common::rng(13);
    let mut p = common::random_params(&mut rng, 4, 3, 2, true);
    p.b = vec![100.0; 3]; // every unit off at every step
    let x = common::uniform(&mut rng, 4, -1.0, 1.0);
    let model = Model {
        n_steps: 4,
        classifier_bias: true,
        weights: LossWeights {
            w_rec: 5.0,
            lambda: 0.09,
            w_cls: 1.0,
        },
    };
    let trace = reference::forward(&p, &x, 4);
    assert!(trace.z_final().iter().all(|&v| v == 0.0));
    assert!(trace.z_hat.iter().all(|&v| v == 0.0));
    let (loss, g) = reference::loss_and_grad(&p, &x, &[1], &model);
    assert!(loss.total().is_finite());
    assert!(g.tensors().all(|(_, _, d)| d.iter().all(|v| v.is_finite())));
    assert!(g.e.iter().chain(&g.s).chain(&g.b).all(|&v| v == 0.0));
}
