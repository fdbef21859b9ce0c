//! At ISTA parameter values the recurrence is ISTA: its objective never increases from step to
//! step, and z^T approaches the non-negative lasso solution as T grows.

mod common;

use drsae_model::LossWeights;
use drsae_model::init::ista_params;
use drsae_model::reference;

const M: usize = 20;
const N: usize = 30;
const W_REC: f64 = 5.0;
/// Larger than the default 0.09 on purpose: with θ = λ/w_rec = 0.1 the lasso solution is
/// sparse, and ISTA converges linearly on its support, so 200 steps reach it. At the default
/// θ = 0.018 on this overcomplete D convergence is sublinear (error only ≈17× smaller at
/// T = 200 than at T = 5); monotone descent is checked at both values.
const LAMBDA: f64 = 0.5;
const DEFAULT_LAMBDA: f64 = 0.09;

/// L = the largest eigenvalue of DᵀD, by power iteration (DᵀD is symmetric PSD, so the
/// Rayleigh quotient of the iterate converges to it from below; a few hundred steps suffice
/// for the few-digit accuracy a step size needs).
fn largest_eigenvalue_dtd(d: &[f64]) -> f64 {
    let mut v = vec![1.0; N];
    let mut lambda = 0.0;
    for _ in 0..500 {
        let dv: Vec<f64> = (0..M)
            .map(|k| (0..N).map(|i| d[k * N + i] * v[i]).sum())
            .collect();
        let w: Vec<f64> = (0..N)
            .map(|i| (0..M).map(|k| d[k * N + i] * dv[k]).sum())
            .collect();
        let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        lambda = (0..N).map(|i| v[i] * w[i]).sum::<f64>() / v.iter().map(|x| x * x).sum::<f64>();
        v = w.iter().map(|x| x / norm).collect();
    }
    lambda
}

/// F(z) = ½‖x − Dz‖² + θ Σ z, the phase-1 loss divided by w_rec (θ = λ / w_rec).
fn objective(d: &[f64], x: &[f64], z: &[f64], theta: f64) -> f64 {
    let rec: f64 = (0..M)
        .map(|k| {
            let r = x[k] - (0..N).map(|i| d[k * N + i] * z[i]).sum::<f64>();
            r * r
        })
        .sum();
    0.5 * rec + theta * z.iter().sum::<f64>()
}

/// The non-negative lasso minimiser by cyclic coordinate descent, a method independent of ISTA:
/// z_j ← max(0, (D_jᵀ(x − Dz) + ‖D_j‖² z_j − θ) / ‖D_j‖²), until no coordinate moves.
fn lasso_by_coordinate_descent(d: &[f64], x: &[f64], theta: f64) -> Vec<f64> {
    let mut z = vec![0.0; N];
    let mut r = x.to_vec(); // residual x − Dz
    let col_sq: Vec<f64> = (0..N)
        .map(|j| (0..M).map(|k| d[k * N + j].powi(2)).sum())
        .collect();
    for _ in 0..100_000 {
        let mut biggest = 0.0f64;
        for j in 0..N {
            let corr: f64 = (0..M).map(|k| d[k * N + j] * r[k]).sum();
            let new = ((corr + col_sq[j] * z[j] - theta) / col_sq[j]).max(0.0);
            let delta = new - z[j];
            if delta != 0.0 {
                for k in 0..M {
                    r[k] -= d[k * N + j] * delta;
                }
                z[j] = new;
                biggest = biggest.max(delta.abs());
            }
        }
        if biggest < 1e-15 {
            break;
        }
    }
    z
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn ista_objective_never_increases_and_converges_to_the_lasso_solution() {
    let mut rng = common::rng(2013);
    let mut d = common::uniform(&mut rng, M * N, -1.0, 1.0);
    // Unit-norm columns, as after initialisation and projection.
    for i in 0..N {
        let norm = (0..M).map(|k| d[k * N + i].powi(2)).sum::<f64>().sqrt();
        (0..M).for_each(|k| d[k * N + i] /= norm);
    }
    let x = common::unit_images(&mut rng, 1, M);
    let theta = LAMBDA / W_REC;
    let alpha = 1.0 / largest_eigenvalue_dtd(&d);
    let p = ista_params(&d, M, N, 2, alpha, alpha * theta);
    let z_star = lasso_by_coordinate_descent(&d, &x, theta);
    assert!(
        z_star.iter().any(|&v| v > 0.0),
        "a trivial solution would test nothing"
    );
    assert!(
        z_star.contains(&0.0),
        "the penalty should switch some units off"
    );

    let weights = LossWeights {
        w_rec: W_REC,
        lambda: LAMBDA,
        w_cls: 0.0,
    };
    // Monotone descent: the classic ISTA guarantee for step α ≤ 1/L. Rounding allows a few ulps.
    for lambda in [DEFAULT_LAMBDA, LAMBDA] {
        let th = lambda / W_REC;
        let q = ista_params(&d, M, N, 2, alpha, alpha * th);
        let tr = reference::forward(&q, &x, 200);
        let f: Vec<f64> = tr.z[1..].iter().map(|z| objective(&d, &x, z, th)).collect();
        for t in 1..f.len() {
            assert!(
                f[t] <= f[t - 1] + 1e-14 * f[t - 1].abs(),
                "λ = {lambda}: objective rose from step {t} to {}: {} -> {}",
                t + 1,
                f[t - 1],
                f[t]
            );
        }
    }
    let trace = reference::forward(&p, &x, 200);
    let f: Vec<f64> = trace.z[1..]
        .iter()
        .map(|z| objective(&d, &x, z, theta))
        .collect();
    // The model's phase-1 loss is w_rec times the same objective.
    let model_loss = reference::loss(&x, 0, &trace, &weights).total();
    let f_final = *f.last().expect("200 steps");
    assert!((model_loss / W_REC - f_final).abs() <= 1e-12 * f_final);

    let err_5 = distance(reference::forward(&p, &x, 5).z_final(), &z_star);
    let err_200 = distance(trace.z_final(), &z_star);
    eprintln!("‖z^T − z*‖: T=5 {err_5:.3e}, T=200 {err_200:.3e}");
    assert!(
        err_200 < 1e-3 * err_5,
        "T=200 error {err_200:e} not ≪ T=5 error {err_5:e}"
    );
    assert!(f_final <= objective(&d, &x, &z_star, theta) + 1e-6);
}
