//! Dense GEMM against an f64 triple loop, for every ISA this machine can run.

mod common;

use common::*;
use drsae_kernels::{Kernels, MatMut, MatRef, Parallelism, kernels};
use proptest::prelude::*;

/// Storage layout of one GEMM case.
#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    /// A stored column-major (so the kernel sees a transpose view).
    a_t: bool,
    b_t: bool,
    /// C column-major (general-stride store path).
    c_t: bool,
    /// Element offset of every operand inside its buffer (1 = unaligned).
    off: usize,
    /// Padding between rows (or columns) of every operand.
    pad: usize,
    alpha: f32,
    beta: f32,
    seed: u64,
}

/// Runs one case on every kernel (the f64 reference is computed once); returns the failures.
fn run_case(kerns: &[Kernels], cs: Case) -> Vec<String> {
    let mut rng = rng(cs.seed);
    let a = Strided::random(&mut rng, cs.m, cs.k, cs.a_t, cs.pad, cs.off);
    let b = Strided::random(&mut rng, cs.k, cs.n, cs.b_t, cs.pad, cs.off);
    let c0 = if cs.beta == 0.0 {
        // β = 0: C holds NaN that must not leak into the result.
        Strided::new(cs.m, cs.n, cs.c_t, cs.pad + 1, cs.off, |_, _| f32::NAN)
    } else {
        Strided::random(&mut rng, cs.m, cs.n, cs.c_t, cs.pad + 1, cs.off)
    };
    let (r, scale) = reference_gemm(cs.alpha, &a.view(), &b.view(), cs.beta, Some(&c0));
    let mut failures = Vec::new();
    for kern in kerns {
        let mut c = c0.clone();
        kern.gemm(cs.alpha, a.view(), b.view(), cs.beta, c.view_mut());
        let what = format!("{}: {cs:?}", kern.name());
        check_c(&c, &r, &scale, cs.k, &what, &mut failures);
    }
    failures
}

/// Checks C against the f64 reference `r` (row-major, C's shape) within the depth-`k`
/// tolerance of each element's `scale`, and that nothing outside C was written; adds at most
/// one failure of each kind, prefixed with `what`.
fn check_c(
    c: &Strided,
    r: &[f64],
    scale: &[f64],
    k: usize,
    what: &str,
    failures: &mut Vec<String>,
) {
    let outside = c.touched_outside();
    if outside > 0 {
        failures.push(format!(
            "{what}: {outside} positions outside C were written"
        ));
    }
    for i in 0..c.rows {
        for j in 0..c.cols {
            let got = f64::from(c.at(i, j));
            let (want, tol) = (r[i * c.cols + j], tolerance(k, scale[i * c.cols + j]));
            // Written so that NaN fails the check.
            let within = (got - want).abs() <= tol;
            if !within {
                failures.push(format!(
                    "{what}: C[{i}][{j}] = {got}, reference {want}, tolerance {tol:.3e}"
                ));
                return;
            }
        }
    }
}

/// Runs every case on every available ISA and fails once with the full list of failures.
fn run_all(cases: &[Case]) {
    let kerns = all_kernels();
    let failures: Vec<String> = cases.iter().flat_map(|&cs| run_case(&kerns, cs)).collect();
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn layouts() -> impl Iterator<Item = (bool, bool)> {
    [(false, false), (false, true), (true, false), (true, true)].into_iter()
}

#[test]
fn gemm_matches_reference_for_awkward_sizes() {
    // 0, 1, MR±1 for MR ∈ {4, 6, 12}, NR±1 for NR ∈ {16, 32}, 15, 16, 17, 33 (and 25 > the
    // small-m threshold of 24).
    let ms = [0, 1, 2, 3, 5, 6, 7, 11, 12, 13, 17, 25];
    let ns = [0, 1, 7, 15, 16, 17, 31, 32, 33, 48];
    let ks = [0, 1, 3, 16, 17, 33];
    let mut cases = Vec::new();
    let mut seed = 0;
    for &m in &ms {
        for &n in &ns {
            for &k in &ks {
                for (a_t, b_t) in layouts() {
                    seed += 1;
                    cases.push(Case {
                        m,
                        n,
                        k,
                        a_t,
                        b_t,
                        c_t: false,
                        off: (seed % 2) as usize,
                        pad: (seed % 3) as usize,
                        alpha: if seed % 5 == 0 { -1.5 } else { 1.0 },
                        beta: if seed % 2 == 0 { 0.0 } else { 0.75 },
                        seed,
                    });
                }
            }
        }
    }
    run_all(&cases);
}

#[test]
fn gemm_matches_reference_across_blocking_boundaries() {
    // k crosses KC = 256 (several depth chunks), m crosses MC = 144, n crosses NC = 1024.
    let shapes = [
        (25, 40, 257),
        (37, 33, 513),
        (150, 70, 300),
        (30, 1040, 20),
        (145, 17, 5),
    ];
    let mut cases = Vec::new();
    for (s, &(m, n, k)) in shapes.iter().enumerate() {
        for (l, (a_t, b_t)) in layouts().enumerate() {
            cases.push(Case {
                m,
                n,
                k,
                a_t,
                b_t,
                c_t: l == 3,
                off: 1,
                pad: 3,
                alpha: 0.5,
                beta: if l % 2 == 0 { 0.0 } else { -1.0 },
                seed: 1000 + (s * 4 + l) as u64,
            });
        }
    }
    run_all(&cases);
}

#[test]
fn gemm_matches_reference_for_model_shapes() {
    // (B×784)(784×400), (B×400)(400×400) and the weight gradients (400×B)(B×784),
    // (400×B)(B×400), for B = 1, 10, 128, in the layouts the model uses and a few others.
    let mut cases = Vec::new();
    let mut seed = 5000;
    for b in [1, 10, 128] {
        for (m, k, n) in [(b, 784, 400), (b, 400, 400), (400, b, 784), (400, b, 400)] {
            for (a_t, b_t) in layouts() {
                // Keep the runtime sane: the f64 reference of the largest shapes is the cost.
                if b == 128 && (a_t || m == 400) && b_t {
                    continue;
                }
                seed += 1;
                cases.push(Case {
                    m,
                    n,
                    k,
                    a_t,
                    b_t,
                    c_t: false,
                    off: (seed % 2) as usize,
                    pad: 1,
                    alpha: 1.0,
                    beta: if seed % 2 == 0 { 0.0 } else { 1.0 },
                    seed,
                });
            }
        }
    }
    run_all(&cases);
}

#[test]
fn gemm_with_beta_zero_ignores_nan_in_c_and_alpha_zero_scales() {
    for kern in all_kernels() {
        for (m, n, k) in [(3, 5, 0), (13, 33, 17), (30, 40, 50)] {
            // α = 0: C ← β·C without reading A or B (which hold NaN here).
            let a = vec![f32::NAN; m * k];
            let b = vec![f32::NAN; k * n];
            let mut c = vec![2.0f32; m * n];
            kern.gemm(
                0.0,
                MatRef::row_major(&a, m, k).unwrap(),
                MatRef::row_major(&b, k, n).unwrap(),
                0.5,
                MatMut::row_major(&mut c, m, n).unwrap(),
            );
            assert!(c.iter().all(|&x| x == 1.0), "{}: α = 0", kern.name());
            // k = 0 or α = 0 with β = 0: C becomes exactly zero even if it held NaN.
            let mut c = vec![f32::NAN; m * n];
            kern.gemm(
                0.0,
                MatRef::row_major(&a, m, k).unwrap(),
                MatRef::row_major(&b, k, n).unwrap(),
                0.0,
                MatMut::row_major(&mut c, m, n).unwrap(),
            );
            assert!(c.iter().all(|&x| x == 0.0), "{}: β = 0", kern.name());
        }
    }
}

#[test]
fn gemm_par_matches_serial_gemm() {
    let mut failures = Vec::new();
    for kern in all_kernels() {
        for (m, n, k) in [(10, 400, 784), (400, 10, 128), (128, 400, 400), (3, 700, 9)] {
            for threads in [1, 2, 3, 8] {
                let mut rng = rng((m * n * k + threads) as u64);
                let a = random_vec(&mut rng, m * k);
                let b = random_vec(&mut rng, k * n);
                let mut c1 = vec![f32::NAN; m * n];
                let mut c2 = vec![f32::NAN; m * n];
                let (av, bv) = (
                    MatRef::row_major(&a, m, k).unwrap(),
                    MatRef::row_major(&b, k, n).unwrap(),
                );
                kern.gemm(1.0, av, bv, 0.0, MatMut::row_major(&mut c1, m, n).unwrap());
                kern.gemm_par(
                    Parallelism::Rayon(threads),
                    1.0,
                    av,
                    bv,
                    0.0,
                    MatMut::row_major(&mut c2, m, n).unwrap(),
                );
                let (r, scale) = reference_gemm(1.0, &av, &bv, 0.0, None);
                for (idx, (&x, &y)) in c1.iter().zip(&c2).enumerate() {
                    let tol = tolerance(k, scale[idx]);
                    if !((f64::from(x) - r[idx]).abs() <= tol
                        && (f64::from(y) - r[idx]).abs() <= tol)
                    {
                        failures.push(format!("{} {m}x{n}x{k} t={threads} at {idx}", kern.name()));
                        break;
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn gemm_rejects_mismatched_dimensions() {
    let a = vec![0.0; 6];
    let mut c = vec![0.0; 4];
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        kernels().gemm(
            1.0,
            MatRef::row_major(&a, 2, 3).unwrap(),
            MatRef::row_major(&a, 2, 3).unwrap(),
            0.0,
            MatMut::row_major(&mut c, 2, 2).unwrap(),
        );
    }));
    assert!(result.is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn gemm_matches_reference_for_random_strides(
        m in 0usize..40,
        n in 0usize..70,
        k in 0usize..40,
        a_t: bool,
        b_t: bool,
        c_t: bool,
        off in 0usize..3,
        pad in 0usize..5,
        alpha in prop::sample::select(vec![1.0f32, -0.5, 2.0]),
        beta in prop::sample::select(vec![0.0f32, 1.0, -0.25]),
        seed: u64,
    ) {
        let cs = Case { m, n, k, a_t, b_t, c_t, off, pad, alpha, beta, seed };
        let failures = run_case(&all_kernels(), cs);
        prop_assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

/// One `gemm_depth_subset` case: A (m × k) and C in the given layouts, B (k × n) row-major with
/// padding, and the depth steps `depth` (any order, repeats allowed).
#[derive(Clone, Debug)]
struct SubsetCase {
    m: usize,
    n: usize,
    k: usize,
    depth: Vec<u32>,
    a_t: bool,
    c_t: bool,
    off: usize,
    beta: f32,
    seed: u64,
}

/// Runs a subset case on every kernel against an f64 loop over the listed steps; returns the
/// failures.
fn run_subset_case(kerns: &[Kernels], cs: &SubsetCase) -> Vec<String> {
    let mut rng = rng(cs.seed);
    let a = Strided::random(&mut rng, cs.m, cs.k, cs.a_t, 2, cs.off);
    let b = Strided::random(&mut rng, cs.k, cs.n, false, 3, cs.off);
    let c0 = if cs.beta == 0.0 {
        Strided::new(cs.m, cs.n, cs.c_t, 1, cs.off, |_, _| f32::NAN)
    } else {
        Strided::random(&mut rng, cs.m, cs.n, cs.c_t, 1, cs.off)
    };
    let alpha = -1.5f32;
    // The reference: A's listed columns against B's listed rows, repeats counted each time.
    let (mut r, mut scale) = (vec![0.0; cs.m * cs.n], vec![0.0; cs.m * cs.n]);
    for i in 0..cs.m {
        for j in 0..cs.n {
            let (mut acc, mut mag) = (0.0f64, 0.0f64);
            for &p in &cs.depth {
                let x = f64::from(a.at(i, p as usize)) * f64::from(b.at(p as usize, j));
                acc += x;
                mag += x.abs();
            }
            r[i * cs.n + j] = f64::from(alpha) * acc;
            scale[i * cs.n + j] = f64::from(alpha).abs() * mag;
            if cs.beta != 0.0 {
                let c_in = f64::from(cs.beta) * f64::from(c0.at(i, j));
                r[i * cs.n + j] += c_in;
                scale[i * cs.n + j] += c_in.abs();
            }
        }
    }
    let mut failures = Vec::new();
    for kern in kerns {
        let mut c = c0.clone();
        kern.gemm_depth_subset(alpha, a.view(), b.view(), &cs.depth, cs.beta, c.view_mut());
        let what = format!("{}: {cs:?}", kern.name());
        check_c(&c, &r, &scale, cs.depth.len(), &what, &mut failures);
    }
    failures
}

/// A subset of `0..k` at `density`, in ascending order.
fn depth_subset(seed: u64, k: usize, density: f64) -> Vec<u32> {
    let mut rng = rng(seed);
    (0..k as u32)
        .filter(|_| rng.random_range(0.0..1.0) < density)
        .collect()
}

#[test]
fn gemm_depth_subset_matches_reference_for_awkward_and_model_shapes() {
    let kerns = all_kernels();
    let mut failures = Vec::new();
    let mut seed = 9000;
    // Rows: 1 (the row-at-a-time path), MR ± 1, a group of 5; columns: below, at and above a
    // vector and a tile, and the model's 400 and 784; depths at 0 %, 5 %, 50 % and 100 %.
    for (m, n, k) in [
        (1, 400, 400),
        (1, 17, 33),
        (1, 784, 400),
        (5, 400, 400),
        (5, 784, 400),
        (5, 1, 7),
        (2, 7, 17),
        (11, 33, 17),
        (12, 15, 16),
        (13, 16, 1),
        (25, 47, 40),
        (10, 400, 784),
    ] {
        for density in [0.0, 0.05, 0.5, 1.0] {
            seed += 1;
            let layout = seed % 4;
            failures.extend(run_subset_case(
                &kerns,
                &SubsetCase {
                    m,
                    n,
                    k,
                    depth: depth_subset(seed, k, density),
                    a_t: layout & 1 == 1,
                    c_t: layout == 2,
                    off: (seed % 3) as usize,
                    beta: if seed % 2 == 0 { 0.0 } else { 0.75 },
                    seed,
                },
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn gemm_depth_subset_equals_gemm_on_the_zeroed_complement() {
    // A zero outside the subset: the subset product is the dense product (the engine's use).
    for kern in all_kernels() {
        let (m, k, n) = (5, 400, 400);
        let mut rng = rng(77);
        let depth = depth_subset(78, k, 0.3);
        let mut a = random_vec(&mut rng, m * k);
        for (p, v) in a.iter_mut().enumerate() {
            if !depth.contains(&((p % k) as u32)) {
                *v = 0.0;
            }
        }
        let b = random_vec(&mut rng, k * n);
        let (av, bv) = (
            MatRef::row_major(&a, m, k).unwrap(),
            MatRef::row_major(&b, k, n).unwrap(),
        );
        let mut dense = vec![f32::NAN; m * n];
        let mut subset = vec![f32::NAN; m * n];
        kern.gemm(
            1.0,
            av,
            bv,
            0.0,
            MatMut::row_major(&mut dense, m, n).unwrap(),
        );
        kern.gemm_depth_subset(
            1.0,
            av,
            bv,
            &depth,
            0.0,
            MatMut::row_major(&mut subset, m, n).unwrap(),
        );
        let (r, scale) = reference_gemm(1.0, &av, &bv, 0.0, None);
        for (idx, (&x, &y)) in dense.iter().zip(&subset).enumerate() {
            let tol = tolerance(k, scale[idx]);
            assert!(
                (f64::from(x) - r[idx]).abs() <= tol && (f64::from(y) - r[idx]).abs() <= tol,
                "{}: element {idx}: dense {x}, subset {y}, reference {}",
                kern.name(),
                r[idx]
            );
        }
    }
}

#[test]
fn gemm_depth_subset_rejects_bad_indices_and_strided_b() {
    let a = vec![0.0; 6];
    let mut c = vec![0.0; 4];
    let call = |depth: &[u32], b_t: bool, c: &mut [f32]| {
        let b = MatRef::row_major(&a, 3, 2).unwrap();
        let b = if b_t {
            MatRef::row_major(&a, 2, 3).unwrap().t()
        } else {
            b
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            kernels().gemm_depth_subset(
                1.0,
                MatRef::row_major(&a, 2, 3).unwrap(),
                b,
                depth,
                0.0,
                MatMut::row_major(c, 2, 2).unwrap(),
            );
        }))
        .is_err()
    };
    assert!(!call(&[0, 2], false, &mut c), "a valid subset is accepted");
    assert!(call(&[0, 3], false, &mut c), "index 3 of a depth of 3");
    assert!(call(&[0], true, &mut c), "B with a column stride");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn gemm_depth_subset_matches_reference_for_random_subsets(
        m in 0usize..30,
        n in 0usize..70,
        k in 1usize..40,
        picks in prop::collection::vec(0usize..1000, 0..60),
        a_t: bool,
        c_t: bool,
        off in 0usize..3,
        beta in prop::sample::select(vec![0.0f32, 1.0, -0.25]),
        seed: u64,
    ) {
        // Any order, with repeats.
        let depth = picks.iter().map(|&p| (p % k) as u32).collect();
        let cs = SubsetCase { m, n, k, depth, a_t, c_t, off, beta, seed };
        let failures = run_subset_case(&all_kernels(), &cs);
        prop_assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
