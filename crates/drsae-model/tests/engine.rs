//! The fast f32 engine against the f64 reference at full size (784 → 400, T = 11, minibatch
//! 10), on real digits from the committed MNIST fixture, and its thread-count invariance.

use std::path::Path;

use drsae_data::batch::{BatchBuf, EpochBatches};
use drsae_data::mnist::{Dataset, LoadOptions, load};
use drsae_model::engine::Engine;
use drsae_model::init::initialize_seeded;
use drsae_model::optim::{project, sgd_step};
use drsae_model::reference::{Model, Trace, loss_and_grad};
use drsae_model::{Config, Params, Phase};

fn fixture() -> Dataset {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../drsae-data/tests/fixtures/mnist-mini");
    let opts = LoadOptions {
        n_valid: 200,
        verify_checksums: false,
        ..LoadOptions::default()
    };
    load(&dir, &opts).expect("the committed fixture loads")
}

fn full_size_config() -> Config {
    Config {
        seed: 7,
        ..Config::default()
    }
}

/// ‖a − b‖∞ / ‖b‖∞ for one tensor.
fn rel_max_err(a: &[f32], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((f64::from(x) - y).abs()));
    if scale == 0.0 { diff } else { diff / scale }
}

fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// Compares the engine's loss and every gradient tensor with the reference on one batch.
fn check_against_reference(engine: &mut Engine, cfg: &Config, x: &[f32], y: &[u8], phase: Phase) {
    let p64 = engine.params().to_f64();
    let model = Model::new(cfg, phase);
    let (ref_loss, ref_grad) = loss_and_grad(&p64, &to_f64(x), y, &model);
    let (loss, grad) = engine.gradient(x, y, &model.weights).unwrap();
    for (name, a, b) in [
        ("rec", loss.rec, ref_loss.rec),
        ("sparsity", loss.sparsity, ref_loss.sparsity),
        ("cls", loss.cls, ref_loss.cls),
    ] {
        let rel = (a - b).abs() / b.abs().max(1e-12);
        assert!(
            rel < 1e-4 || (a - b).abs() < 1e-6,
            "{phase}: loss term {name}: engine {a} vs reference {b} (relative {rel:e})"
        );
    }
    assert_eq!(loss.errors, ref_loss.errors, "{phase}: misclassified count");
    let mut worst = (0.0f64, "");
    for ((name, _, g32), (_, _, g64)) in grad.tensors().zip(ref_grad.tensors()) {
        let err = rel_max_err(g32, g64);
        if err > worst.0 {
            worst = (err, name);
        }
        assert!(
            err < 2e-4,
            "{phase}: gradient of {name}: relative max-norm error {err:e}"
        );
    }
    eprintln!(
        "{phase}: largest relative gradient error {:e} (tensor {})",
        worst.0, worst.1
    );
}

fn first_batch(ds: &Dataset, bs: usize, seed: u64, epoch: u64) -> (Vec<f32>, Vec<u8>) {
    let mut batches = EpochBatches::new(ds.train.len(), bs, seed, epoch);
    let mut buf = BatchBuf::new(bs, ds.train.dim);
    assert!(batches.next_into(&ds.train, &mut buf));
    (
        buf.x[..buf.len * buf.dim()].to_vec(),
        buf.y[..buf.len].to_vec(),
    )
}

fn train_epoch(
    engine: &mut Engine,
    ds: &Dataset,
    cfg: &Config,
    epoch: u64,
    phase: Phase,
    k: &mut u64,
) {
    let mut batches = EpochBatches::new(ds.train.len(), cfg.batch_size, cfg.seed, epoch);
    let mut buf = BatchBuf::new(cfg.batch_size, ds.train.dim);
    while batches.next_into(&ds.train, &mut buf) {
        engine
            .train_step(&buf.x[..buf.len * buf.dim()], &buf.y[..buf.len], phase, *k)
            .unwrap();
        *k += 1;
    }
}

#[test]
fn engine_gradients_match_reference_at_full_size_at_initialisation() {
    let ds = fixture();
    let cfg = full_size_config();
    let params = initialize_seeded(&cfg, &ds.train.images);
    let mut engine = Engine::new(&params, &cfg, 2).unwrap();
    let (x, y) = first_batch(&ds, 10, 1, 0);
    check_against_reference(&mut engine, &cfg, &x, &y, Phase::Pretrain);
    check_against_reference(&mut engine, &cfg, &x, &y, Phase::Finetune);
}

/// With `train_encoder_phase2 = false` a phase-2 step changes the classifier and nothing
/// else, and phase 1 still trains the encoder.
#[test]
fn frozen_encoder_phase_two_updates_only_the_classifier() {
    let ds = fixture();
    let cfg = Config {
        train_encoder_phase2: false,
        ..full_size_config()
    };
    let params = initialize_seeded(&cfg, &ds.train.images);
    let mut engine = Engine::new(&params, &cfg, 2).unwrap();
    let (x, y) = first_batch(&ds, 10, 1, 0);
    engine.train_step(&x, &y, Phase::Finetune, 0).unwrap();
    let after = engine.params();
    for (name, a, b) in [
        ("e", &after.e, &params.e),
        ("s", &after.s, &params.s),
        ("b", &after.b, &params.b),
        ("d", &after.d, &params.d),
    ] {
        assert!(a == b, "{name} changed in a frozen-encoder phase-2 step");
    }
    assert!(after.c != params.c, "the classifier did not learn");
    engine.train_step(&x, &y, Phase::Pretrain, 1).unwrap();
    assert!(engine.params().e != params.e, "phase 1 must still train E");
}

/// An odd minibatch (7), a single example, and one larger than the engine was built for, on
/// two threads (each owning half of the units): the same gradients as the reference.
#[test]
fn engine_gradients_match_reference_for_uneven_and_growing_batch_sizes() {
    let ds = fixture();
    let cfg = full_size_config();
    let params = initialize_seeded(&cfg, &ds.train.images);
    let mut engine = Engine::new(&params, &cfg, 2).unwrap();
    for bs in [7, 1, 13] {
        let (x, y) = first_batch(&ds, bs, 2, 1);
        check_against_reference(&mut engine, &cfg, &x, &y, Phase::Finetune);
    }
}

/// One and two rectifications: no recurrent step at all (the `S` gradient is empty) and a
/// single one.
#[test]
fn engine_gradients_match_reference_for_one_and_two_steps() {
    let ds = fixture();
    for n_steps in [1, 2] {
        let cfg = Config {
            n_steps,
            ..full_size_config()
        };
        let params = initialize_seeded(&cfg, &ds.train.images);
        let mut engine = Engine::new(&params, &cfg, 2).unwrap();
        let (x, y) = first_batch(&ds, 10, 4, 2);
        check_against_reference(&mut engine, &cfg, &x, &y, Phase::Finetune);
        engine.train_step(&x, &y, Phase::Finetune, 0).unwrap();
        check_against_reference(&mut engine, &cfg, &x, &y, Phase::Finetune);
    }
}

#[test]
fn engine_gradients_match_reference_at_full_size_after_training() {
    let ds = fixture();
    let cfg = full_size_config();
    let params = initialize_seeded(&cfg, &ds.train.images);
    let mut engine = Engine::new(&params, &cfg, 2).unwrap();
    let mut k = 0;
    train_epoch(&mut engine, &ds, &cfg, 0, Phase::Pretrain, &mut k);
    train_epoch(&mut engine, &ds, &cfg, 1, Phase::Finetune, &mut k);
    let (x, y) = first_batch(&ds, 10, 3, 5);
    check_against_reference(&mut engine, &cfg, &x, &y, Phase::Pretrain);
    check_against_reference(&mut engine, &cfg, &x, &y, Phase::Finetune);
}

/// The reference's forward pass of each example of a minibatch.
fn traces(p: &Params<f64>, cfg: &Config, x: &[f32]) -> Vec<Trace> {
    x.chunks_exact(cfg.n_input)
        .map(|xb| drsae_model::reference::forward(p, &to_f64(xb), cfg.n_steps))
        .collect()
}

/// Share of the minibatch's (example, unit) pairs active at some step before the last: the
/// rows the recurrent gradient needs.
fn recurrent_rows_share(traces: &[Trace], cfg: &Config) -> f64 {
    let (n, t) = (cfg.n_hidden, cfg.n_steps);
    let rows: usize = traces
        .iter()
        .map(|tr| (0..n).filter(|&j| (1..t).any(|s| tr.z[s][j] > 0.0)).count())
        .sum();
    rows as f64 / (traces.len() * n) as f64
}

/// Per step: the examples' own active units added up, as a share of (examples × units
/// active in some example): the share of the minibatch-wide products' depth that the
/// products over a state need.
fn example_depth_shares(traces: &[Trace], cfg: &Config) -> Vec<f64> {
    let (n, t) = (cfg.n_hidden, cfg.n_steps);
    (1..=t)
        .map(|s| {
            let on = |j: usize| traces.iter().filter(|tr| tr.z[s][j] > 0.0).count();
            let own: usize = (0..n).map(on).sum();
            let shared = (0..n).filter(|&j| on(j) > 0).count();
            own as f64 / (traces.len() * shared.max(1)) as f64
        })
        .collect()
}

/// The recurrent gradient runs example by example over each example's active units when
/// those are few and as one dense product when they are many, and so do the products over a
/// state (`Z_t·Sᵀ`, `DA_t·S`, `Z_T·Dᵀ`) and the reconstruction's share of the top adjoint:
/// both ways agree with the reference (thresholds raised to make the codes sparse, as
/// training does), and both give the same parameters on one and two threads.
#[test]
fn recurrent_gradient_matches_reference_on_sparse_and_dense_codes() {
    let ds = fixture();
    let cfg = full_size_config();
    let (x, y) = first_batch(&ds, 10, 6, 3);
    let dense = initialize_seeded(&cfg, &ds.train.images);
    let mut sparse = dense.clone();
    sparse.b.fill(0.012);
    for (params, want_sparse) in [(&dense, false), (&sparse, true)] {
        let traces = traces(&params.to_f64(), &cfg, &x);
        let share = recurrent_rows_share(&traces, &cfg);
        assert_eq!(
            share < 0.5,
            want_sparse,
            "active rows {share:.2}: the case does not test the path it names"
        );
        assert!(
            share > 0.1 || !want_sparse,
            "codes {share:.2} too sparse to test much"
        );
        // The engine goes example by example below 45 %: the dense case stays above it at
        // every step, the sparse one below it after the first.
        let depth = example_depth_shares(&traces, &cfg);
        assert!(
            if want_sparse {
                depth[1..].iter().all(|&d| d < 0.4)
            } else {
                depth.iter().all(|&d| d > 0.5)
            },
            "examples' depth shares {depth:.2?}: the case does not test the path it names"
        );
        let mut engine = Engine::new(params, &cfg, 2).unwrap();
        check_against_reference(&mut engine, &cfg, &x, &y, Phase::Pretrain);
        check_against_reference(&mut engine, &cfg, &x, &y, Phase::Finetune);
        let mut one = Engine::new(params, &cfg, 1).unwrap();
        for k in 0..5 {
            engine.train_step(&x, &y, Phase::Finetune, k).unwrap();
            one.train_step(&x, &y, Phase::Finetune, k).unwrap();
        }
        let (a, b) = (engine.params(), one.params());
        assert!(
            a.s.iter()
                .zip(&b.s)
                .all(|(p, q)| p.to_bits() == q.to_bits()),
            "S differs between one and two threads"
        );
    }
}

/// ‖a − b‖_F / ‖b − start‖_F: the gap between two trajectories as a fraction of the
/// distance the exact one travelled.
fn rel_to_travel(a: &[f64], b: &[f64], start: &[f64]) -> f64 {
    let gap: f64 = a.iter().zip(b).map(|(&x, &y)| (x - y).powi(2)).sum();
    let travel: f64 = b.iter().zip(start).map(|(&y, &s)| (y - s).powi(2)).sum();
    (gap / travel.max(1e-300)).sqrt()
}

/// One reference SGD step (gradient in f64, then the projections when due).
fn reference_step(p: &mut Params<f64>, cfg: &Config, x: &[f32], y: &[u8], phase: Phase, k: u64) {
    let (_, g) = loss_and_grad(p, &to_f64(x), y, &Model::new(cfg, phase));
    sgd_step(p, &g, cfg, k);
    if drsae_model::optim::should_project(cfg, k) {
        project(p, cfg);
    }
}

/// Trajectories in f32 and in f64 part where a pre-activation lies within rounding of a ReLU
/// kink: one example's gradient then changes by a whole rank-one term, so an entry-by-entry
/// comparison after hundreds of steps would only measure how many kinks were crossed. The
/// yardstick is therefore the reference itself with its parameters rounded to f32 after every
/// step: the engine must stay as close to the exact f64 trajectory as that does (per-step
/// gradients at equal parameters are checked tightly by the tests above).
#[test]
fn engine_sgd_tracks_reference_parameters_over_hundreds_of_steps() {
    let ds = fixture();
    let cfg = Config {
        projection_interval: 3,
        ..full_size_config()
    };
    let params = initialize_seeded(&cfg, &ds.train.images);
    let start = params.to_f64();
    let mut engine = Engine::new(&params, &cfg, 2).unwrap();
    let mut exact = params.to_f64();
    let mut rounded = params.to_f64();
    let mut batches = EpochBatches::new(ds.train.len(), cfg.batch_size, cfg.seed, 0);
    let mut buf = BatchBuf::new(cfg.batch_size, ds.train.dim);
    let (pretrain, steps) = (150u64, 250u64);
    for k in 0..steps {
        if !batches.next_into(&ds.train, &mut buf) {
            batches.reset(k);
            assert!(batches.next_into(&ds.train, &mut buf));
        }
        let phase = if k < pretrain {
            Phase::Pretrain
        } else {
            Phase::Finetune
        };
        let (x, y) = (&buf.x[..buf.len * buf.dim()], &buf.y[..buf.len]);
        engine.train_step(x, y, phase, k).unwrap();
        reference_step(&mut exact, &cfg, x, y, phase, k);
        reference_step(&mut rounded, &cfg, x, y, phase, k);
        rounded = rounded.to_f32().to_f64();
    }
    let fast = engine.params().to_f64();
    let mut failures = Vec::new();
    for (((name, _, a), (_, _, r)), ((_, _, e), (_, _, s))) in fast
        .tensors()
        .zip(rounded.tensors())
        .zip(exact.tensors().zip(start.tensors()))
    {
        let engine_gap = rel_to_travel(a, e, s);
        let rounding_gap = rel_to_travel(r, e, s);
        eprintln!(
            "after {steps} steps, {name}: engine {engine_gap:.2e}, f32-rounded reference \
             {rounding_gap:.2e} of the distance travelled"
        );
        if engine_gap > 3.0 * rounding_gap + 1e-3 {
            failures.push(format!("{name}: {engine_gap:e} vs {rounding_gap:e}"));
        }
    }
    assert!(failures.is_empty(), "engine drifted: {failures:?}");
}

#[test]
fn parameters_after_an_epoch_are_bit_identical_for_one_and_two_threads() {
    let ds = fixture();
    let cfg = full_size_config();
    let params = initialize_seeded(&cfg, &ds.train.images);
    // `in_pool`: the loop runs on the engine's first worker, as `drsae train` runs it.
    let run = |threads, in_pool: bool| {
        let mut engine = Engine::new(&params, &cfg, threads).unwrap();
        let epochs = |engine: &mut Engine| {
            let mut k = 0;
            train_epoch(engine, &ds, &cfg, 0, Phase::Pretrain, &mut k);
            train_epoch(engine, &ds, &cfg, 1, Phase::Finetune, &mut k);
        };
        if in_pool {
            engine.run_in_pool(epochs);
        } else {
            epochs(&mut engine);
        }
        engine.params()
    };
    let one = run(1, false);
    let two = run(2, true);
    for ((name, _, a), (_, _, b)) in one.tensors().zip(two.tensors()) {
        let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{name} differs between 1 and 2 threads");
    }
    assert!(
        one == run(3, false),
        "parameters differ between 1 and 3 threads"
    );
    assert!(
        one == run(2, false),
        "parameters differ inside and outside the pool"
    );
}

/// Training the classifier on cached codes does what frozen-encoder steps through the whole
/// network do to C and c (up to f32 rounding: the codes come from a forward pass over
/// chunks of 128 rather than over each minibatch), leaves the encoder bit-for-bit alone,
/// and its evaluation predicts what a full forward pass predicts.
#[test]
fn classifier_on_cached_codes_matches_frozen_encoder_steps() {
    let ds = fixture();
    let cfg = Config {
        train_encoder_phase2: false,
        ..full_size_config()
    };
    let params = initialize_seeded(&cfg, &ds.train.images);
    let w = cfg.loss_weights(Phase::Finetune);
    let mut full = Engine::new(&params, &cfg, 2).unwrap();
    let mut cached = Engine::new(&params, &cfg, 1).unwrap();
    let codes = cached
        .encode(&ds.train.images, &ds.train.labels, &w)
        .unwrap();
    let n = cfg.n_hidden;
    assert_eq!(codes.z_hat.len(), ds.train.len() * n);
    let before = cached
        .evaluate(&ds.valid.images, &ds.valid.labels, &w)
        .unwrap();
    assert_eq!(codes.encoder_loss.cls, 0.0);
    assert!(codes.encoder_loss.rec > 0.0 && codes.encoder_loss.sparsity > 0.0);

    let mut batches = EpochBatches::new(ds.train.len(), 10, 3, 0);
    let mut order = batches.order().to_vec();
    order.truncate(300);
    let mut buf = BatchBuf::new(10, ds.train.dim);
    let mut k = 0;
    let (mut cls_full, mut cls_cached) = (0.0, 0.0);
    for chunk in order.chunks(10) {
        assert!(batches.next_into(&ds.train, &mut buf));
        let z: Vec<f32> = chunk
            .iter()
            .flat_map(|&i| codes.z_hat[i * n..(i + 1) * n].iter().copied())
            .collect();
        cls_full += full
            .train_step(&buf.x, &buf.y, Phase::Finetune, k)
            .unwrap()
            .cls;
        cls_cached += cached
            .classifier_step(&z, &buf.y, Phase::Finetune, k)
            .unwrap()
            .cls;
        k += 1;
    }
    assert!(
        (cls_full - cls_cached).abs() <= 1e-5 * cls_full,
        "{cls_full} vs {cls_cached}"
    );
    let (a, b) = (full.params(), cached.params());
    let c_full: Vec<f64> = a.c.iter().map(|&v| f64::from(v)).collect();
    let err = rel_max_err(&b.c, &c_full);
    assert!(err < 1e-4, "C differs by {err:.2e}");
    assert!(b.c != params.c, "the classifier did not learn");
    for (name, x, y) in [
        ("e", &b.e, &params.e),
        ("s", &b.s, &params.s),
        ("b", &b.b, &params.b),
        ("d", &b.d, &params.d),
    ] {
        assert!(x == y, "{name} changed while training on cached codes");
    }

    let valid = cached
        .encode(&ds.valid.images, &ds.valid.labels, &w)
        .unwrap();
    let on_codes = cached
        .evaluate_codes(&valid.z_hat, &ds.valid.labels, &w)
        .unwrap();
    let on_images = cached
        .evaluate(&ds.valid.images, &ds.valid.labels, &w)
        .unwrap();
    assert_eq!(on_codes.predictions, on_images.predictions);
    // Summed in another order (per chunk, then over chunks).
    assert!((on_codes.loss.cls - on_images.loss.cls).abs() <= 1e-12 * on_images.loss.cls);
    assert!(
        on_images.loss.errors < before.loss.errors,
        "training did not help"
    );
    let err = cached.classifier_step(&valid.z_hat[..n], &ds.valid.labels[..2], Phase::Finetune, k);
    assert!(
        err.is_err(),
        "codes of one example with two labels must be rejected"
    );
}
