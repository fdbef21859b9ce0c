//! Initialisation (spec §4): an ISTA encoder around a unit-norm decoder, reproducible per seed.

mod common;

use drsae_model::init::{initialize, initialize_seeded};
use drsae_model::{Config, Params};

const M: usize = 16;
const N: usize = 12;
const L: usize = 4;

fn cfg() -> Config {
    Config {
        n_input: M,
        n_hidden: N,
        n_classes: L,
        seed: 3,
        ..Config::default()
    }
}

fn images() -> Vec<f32> {
    let mut rng = common::rng(77);
    common::unit_images(&mut rng, 7, M)
        .iter()
        .map(|&v| v as f32)
        .collect()
}

#[test]
fn initial_encoder_is_ista_around_a_unit_norm_decoder() {
    let cfg = cfg();
    let p = initialize_seeded(&cfg, &images()).to_f64();
    let alpha = 1.25 / 11.0;
    // f32 storage: entries are within half an ulp of their f64 formulas.
    let tol = 1e-7;
    for i in 0..N {
        let norm = (0..M).map(|k| p.d[k * N + i].powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6, "D column {i} norm {norm}");
        for k in 0..M {
            assert!(
                (p.e[i * M + k] - alpha * p.d[k * N + i]).abs() < tol,
                "E != αDᵀ at ({i},{k})"
            );
        }
        for j in 0..N {
            let dot: f64 = (0..M).map(|k| p.d[k * N + i] * p.d[k * N + j]).sum();
            let want = f64::from(u8::from(i == j)) - alpha * dot;
            assert!(
                (p.s[i * N + j] - want).abs() < tol,
                "S != I − αDᵀD at ({i},{j})"
            );
        }
    }
    for q in 0..L {
        let norm = p.c[q * N..(q + 1) * N]
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-6, "C row {q} norm {norm}");
    }
    assert!(p.b.iter().all(|&v| v == f64::from(1e-5f32)));
    assert!(p.c_bias.iter().all(|&v| v == 0.0));
    // The templates pull decoder columns towards the (non-negative) images.
    let imgs = images();
    let mean_alignment: f64 = (0..N)
        .map(|i| {
            (0..M)
                .map(|k| p.d[k * N + i] * f64::from(imgs[k]))
                .sum::<f64>()
        })
        .sum::<f64>()
        / N as f64;
    assert!(
        mean_alignment > 0.05,
        "templates added: mean alignment {mean_alignment}"
    );
}

#[test]
fn initialisation_is_reproducible_for_a_seed() {
    let cfg = cfg();
    let imgs = images();
    let a = initialize_seeded(&cfg, &imgs);
    let b = initialize_seeded(&cfg, &imgs);
    assert_eq!(a, b);
    let mut rng = common::rng(3);
    let c = initialize(&cfg, &imgs, &mut rng);
    assert_eq!(initialize(&cfg, &imgs, &mut common::rng(3)), c);
    let other = initialize_seeded(
        &Config {
            seed: 4,
            ..cfg.clone()
        },
        &imgs,
    );
    assert_ne!(a, other);
}

#[test]
fn initialisation_without_templates_needs_no_images() {
    let cfg = Config {
        template_weight: 0.0,
        ..cfg()
    };
    let p: Params<f32> = initialize_seeded(&cfg, &[]);
    assert_eq!(p.num_scalars(), N * M + N * N + N + M * N + L * N + L);
}
