//! Sparsity-aware kernels against naive loops and against the dense GEMM they replace.

mod common;

use common::*;
use drsae_kernels::{MatMut, MatRef, SparseRows, kernels};
use rand::RngExt;

/// A `rows × cols` matrix with roughly `density` of its entries non-zero.
fn sparse_dense(seed: u64, rows: usize, cols: usize, density: f64) -> Vec<f32> {
    let mut rng = rng(seed);
    (0..rows * cols)
        .map(|_| {
            if rng.random_bool(density) {
                rng.random_range(-1.0f32..1.0)
            } else {
                0.0
            }
        })
        .collect()
}

/// Sorted distinct indices below `bound`, each kept with probability `density`.
fn index_set(seed: u64, bound: usize, density: f64) -> Vec<u32> {
    let mut rng = rng(seed);
    (0..bound as u32)
        .filter(|_| rng.random_bool(density))
        .collect()
}

fn close(got: f32, want: f64, k: usize, scale: f64) -> bool {
    (f64::from(got) - want).abs() <= tolerance(k, scale)
}

const DENSITIES: [f64; 4] = [0.0, 0.05, 0.5, 1.0];
const WIDTHS: [usize; 9] = [0, 1, 7, 15, 16, 17, 33, 400, 449];

#[test]
fn gather_axpy_matches_naive_loop() {
    let mut failures = Vec::new();
    for kern in all_kernels() {
        for &n in &WIDTHS {
            for (d, &density) in DENSITIES.iter().enumerate() {
                let rows = 37;
                let seed = (n * 10 + d) as u64;
                let mut r = rng(seed);
                // Rows contiguous, padded, at an unaligned offset.
                let w = Strided::random(&mut r, rows, n, false, 3, 1);
                let idx = index_set(seed + 1, rows, density);
                let vals = random_vec(&mut r, idx.len());
                let y0 = random_vec(&mut r, n);
                let mut y = y0.clone();
                kern.gather_axpy(&mut y, w.view(), &idx, &vals);
                for j in 0..n {
                    let (mut want, mut scale) = (f64::from(y0[j]), f64::from(y0[j]).abs());
                    for (&i, &v) in idx.iter().zip(&vals) {
                        let t = f64::from(v) * f64::from(w.at(i as usize, j));
                        want += t;
                        scale += t.abs();
                    }
                    if !close(y[j], want, idx.len(), scale) {
                        failures.push(format!("{} n={n} density={density} j={j}", kern.name()));
                        break;
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn sparse_gemm_matches_dense_gemm_at_all_densities() {
    let mut failures = Vec::new();
    for kern in all_kernels() {
        for (b, k, n) in [
            (10, 784, 400),
            (1, 400, 400),
            (7, 33, 17),
            (3, 5, 0),
            (0, 4, 4),
        ] {
            for (d, &density) in DENSITIES.iter().enumerate() {
                let seed = (b * 1000 + k + n + d) as u64;
                let x = sparse_dense(seed, b, k, density);
                let mut r = rng(seed + 7);
                let w = random_vec(&mut r, k * n);
                let y0 = random_vec(&mut r, b * n);
                let mut sx = SparseRows::new();
                sx.from_dense_into(&kern, MatRef::row_major(&x, b, k).unwrap());
                assert_eq!(sx.nnz(), x.iter().filter(|&&v| v != 0.0).count());
                let (xv, wv) = (
                    MatRef::row_major(&x, b, k).unwrap(),
                    MatRef::row_major(&w, k, n).unwrap(),
                );
                let mut dense = y0.clone();
                kern.gemm(
                    1.0,
                    xv,
                    wv,
                    1.0,
                    MatMut::row_major(&mut dense, b, n).unwrap(),
                );
                let mut sparse = y0.clone();
                kern.sparse_gemm(&sx, wv, MatMut::row_major(&mut sparse, b, n).unwrap());
                let (r0, scale) = reference_gemm(1.0, &xv, &wv, 0.0, None);
                for e in 0..b * n {
                    let want = r0[e] + f64::from(y0[e]);
                    let s = scale[e] + f64::from(y0[e]).abs();
                    if !close(sparse[e], want, k, s) || !close(dense[e], want, k, s) {
                        failures.push(format!("{} {b}x{k}x{n} density={density}", kern.name()));
                        break;
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn sparse_gemm_handles_strided_outputs() {
    for kern in all_kernels() {
        let (b, k, n) = (4, 30, 20);
        let x = sparse_dense(3, b, k, 0.3);
        let mut r = rng(4);
        let w = Strided::random(&mut r, k, n, true, 2, 1); // column-major W: general path
        let mut sx = SparseRows::new();
        sx.from_dense_into(&kern, MatRef::row_major(&x, b, k).unwrap());
        let mut y = Strided::new(b, n, false, 3, 1, |_, _| 0.0);
        kern.sparse_gemm(&sx, w.view(), y.view_mut());
        assert_eq!(y.touched_outside(), 0);
        let (r0, scale) = reference_gemm(
            1.0,
            &MatRef::row_major(&x, b, k).unwrap(),
            &w.view(),
            0.0,
            None,
        );
        for i in 0..b {
            for j in 0..n {
                assert!(
                    close(y.at(i, j), r0[i * n + j], k, scale[i * n + j]),
                    "{}",
                    kern.name()
                );
            }
        }
    }
}

#[test]
fn from_dense_into_reuses_its_buffers() {
    let kern = drsae_kernels::kernels();
    let x = sparse_dense(9, 10, 784, 0.19);
    let mut sx = SparseRows::new();
    sx.from_dense_into(kern, MatRef::row_major(&x, 10, 784).unwrap());
    let first = sx.row(0).0.as_ptr();
    let y = sparse_dense(10, 10, 784, 0.5);
    sx.from_dense_into(kern, MatRef::row_major(&y, 10, 784).unwrap());
    assert_eq!(sx.row(0).0.as_ptr(), first, "buffers were reallocated");
    assert_eq!(sx.rows(), 10);
    for r in 0..10 {
        let (idx, val) = sx.row(r);
        let want: Vec<(u32, f32)> = (0..784)
            .filter(|&j| y[r * 784 + j] != 0.0)
            .map(|j| (j as u32, y[r * 784 + j]))
            .collect();
        let got: Vec<(u32, f32)> = idx.iter().copied().zip(val.iter().copied()).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn sparse_rows_from_parts_validates_the_invariant() {
    assert!(SparseRows::from_parts(4, vec![0, 1, 2], vec![0, 3], vec![1.0, 2.0]).is_ok());
    assert!(SparseRows::from_parts(3, vec![0, 1, 2], vec![0, 3], vec![1.0, 2.0]).is_err());
    assert!(SparseRows::from_parts(4, vec![0, 2, 1], vec![0, 3], vec![1.0, 2.0]).is_err());
    assert!(SparseRows::from_parts(4, vec![1, 2], vec![0, 3], vec![1.0, 2.0]).is_err());
    assert!(SparseRows::from_parts(4, vec![0, 2], vec![0, 3], vec![1.0]).is_err());
}

#[test]
fn gather_dots_matches_naive_loop() {
    let mut failures = Vec::new();
    for kern in all_kernels() {
        for &n in &WIDTHS {
            for (d, &density) in DENSITIES.iter().enumerate() {
                let rows = 41;
                let seed = (n * 7 + d) as u64;
                let mut r = rng(seed);
                let w = Strided::random(&mut r, rows, n, false, 1, 1);
                let x = random_vec(&mut r, n);
                let sel = index_set(seed + 3, rows, density);
                let mut out = vec![f32::NAN; sel.len()];
                kern.gather_dots(&mut out, w.view(), &sel, &x);
                for (a, &row) in sel.iter().enumerate() {
                    let (mut want, mut scale) = (0.0f64, 0.0f64);
                    for (j, &xj) in x.iter().enumerate() {
                        let t = f64::from(w.at(row as usize, j)) * f64::from(xj);
                        want += t;
                        scale += t.abs();
                    }
                    if !close(out[a], want, n, scale) {
                        failures.push(format!("{} n={n} density={density} a={a}", kern.name()));
                        break;
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn rank1_rows_matches_naive_loop_and_stays_inside_g() {
    let mut failures = Vec::new();
    for kern in all_kernels() {
        for &n in &WIDTHS {
            for (d, &density) in DENSITIES.iter().enumerate() {
                let rows = 23;
                let seed = (n * 13 + d) as u64;
                let mut r = rng(seed);
                let mut g = Strided::random(&mut r, rows, n, false, 2, 1);
                let g0 = g.clone();
                let sel = index_set(seed + 5, rows, density);
                let row_vals = random_vec(&mut r, sel.len());
                let x = random_vec(&mut r, n);
                kern.rank1_rows(g.view_mut(), &sel, &row_vals, &x, -0.5);
                if g.touched_outside() > 0 {
                    failures.push(format!("{} n={n}: wrote outside G", kern.name()));
                }
                for i in 0..rows {
                    let coef = sel
                        .iter()
                        .position(|&s| s as usize == i)
                        .map_or(0.0, |a| -0.5 * f64::from(row_vals[a]));
                    for (j, &xj) in x.iter().enumerate() {
                        let want = f64::from(g0.at(i, j)) + coef * f64::from(xj);
                        if !close(g.at(i, j), want, 2, want.abs() + 1.0) {
                            failures.push(format!("{} n={n} ({i},{j})", kern.name()));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn rank1_sparse_matches_naive_loop() {
    for kern in all_kernels() {
        for (d, &density) in DENSITIES.iter().enumerate() {
            let (rows, cols) = (40, 33);
            let seed = 77 + d as u64;
            let mut r = rng(seed);
            let mut g = Strided::random(&mut r, rows, cols, d % 2 == 1, 1, 1);
            let g0 = g.clone();
            let rsel = index_set(seed + 1, rows, density);
            let csel = index_set(seed + 2, cols, density);
            let rv = random_vec(&mut r, rsel.len());
            let cv = random_vec(&mut r, csel.len());
            kern.rank1_sparse(g.view_mut(), &rsel, &rv, &csel, &cv, 2.0);
            assert_eq!(g.touched_outside(), 0);
            for i in 0..rows {
                for j in 0..cols {
                    let a = rsel.iter().position(|&s| s as usize == i);
                    let b = csel.iter().position(|&s| s as usize == j);
                    let add = match (a, b) {
                        (Some(a), Some(b)) => 2.0 * f64::from(rv[a]) * f64::from(cv[b]),
                        _ => 0.0,
                    };
                    let want = f64::from(g0.at(i, j)) + add;
                    assert!(
                        close(g.at(i, j), want, 2, want.abs() + 1.0),
                        "{}",
                        kern.name()
                    );
                }
            }
        }
    }
}

/// Naive ReLU with the documented NaN rule: kept (and active) unless `x <= 0`.
fn naive_relu(a: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let z: Vec<f32> = a.iter().map(|&x| if x <= 0.0 { 0.0 } else { x }).collect();
    // "Not <= 0" rather than "> 0": NaN counts as active.
    let act = (0..a.len() as u32)
        .filter(|&i| z[i as usize] != 0.0 || z[i as usize].is_nan())
        .collect();
    (z, act)
}

fn same_bits(x: &[f32], y: &[f32]) -> bool {
    x.len() == y.len() && x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits())
}

#[test]
fn relu_active_matches_naive_including_nan_zero_signs_and_tails() {
    for kern in all_kernels() {
        for n in [0, 1, 7, 8, 15, 16, 17, 33, 400, 401] {
            let mut r = rng(n as u64);
            let mut a = random_vec(&mut r, n);
            for (i, x) in a.iter_mut().enumerate() {
                match i % 11 {
                    3 => *x = f32::NAN,
                    5 => *x = -0.0,
                    7 => *x = 0.0,
                    _ => {}
                }
            }
            let (zw, aw) = naive_relu(&a);
            let mut z = vec![f32::NAN; n];
            let mut act = vec![u32::MAX; n];
            let cnt = kern.relu_active(&a, &mut z, &mut act);
            assert!(same_bits(&z, &zw), "{} n={n}: z", kern.name());
            assert_eq!(&act[..cnt], &aw[..], "{} n={n}: active", kern.name());

            // The fused variant: z = relu(u + acc).
            let acc = random_vec(&mut r, n);
            let sum: Vec<f32> = a.iter().zip(&acc).map(|(x, y)| x + y).collect();
            let (zw, aw) = naive_relu(&sum);
            let cnt = kern.bias_relu_active(&a, &acc, &mut z, &mut act);
            assert!(same_bits(&z, &zw), "{} n={n}: fused z", kern.name());
            assert_eq!(&act[..cnt], &aw[..], "{} n={n}: fused active", kern.name());
        }
    }
}

#[test]
fn nonzeros_matches_naive_at_all_densities() {
    for kern in all_kernels() {
        for n in [0, 1, 15, 16, 17, 784, 785] {
            for (d, &density) in DENSITIES.iter().enumerate() {
                let mut x = sparse_dense((n * 4 + d) as u64, 1, n, density);
                if n > 3 {
                    x[2] = f32::NAN; // NaN is "not zero": kept
                    x[1] = -0.0; // negative zero is zero: dropped
                }
                let mut idx = vec![u32::MAX; n];
                let mut val = vec![f32::NAN; n];
                let cnt = kern.nonzeros(&x, &mut idx, &mut val);
                let want: Vec<u32> = (0..n as u32).filter(|&i| x[i as usize] != 0.0).collect();
                assert_eq!(&idx[..cnt], &want[..], "{} n={n}", kern.name());
                let wv: Vec<f32> = want.iter().map(|&i| x[i as usize]).collect();
                assert!(same_bits(&val[..cnt], &wv), "{} n={n}", kern.name());
            }
        }
    }
}

#[test]
fn dot_axpy_scale_match_naive() {
    for kern in all_kernels() {
        for n in [0, 1, 7, 17, 63, 64, 65, 400] {
            let mut r = rng(n as u64 + 99);
            let x = random_vec(&mut r, n);
            let y = random_vec(&mut r, n);
            let want: f64 = x
                .iter()
                .zip(&y)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let scale: f64 = x.iter().zip(&y).map(|(a, b)| f64::from(a * b).abs()).sum();
            assert!(
                close(kern.dot(&x, &y), want, n, scale),
                "{} dot n={n}",
                kern.name()
            );
            let mut z = y.clone();
            kern.axpy(&mut z, 0.5, &x);
            for j in 0..n {
                assert!(
                    (z[j] - (y[j] + 0.5 * x[j])).abs() <= 1e-6,
                    "{} axpy",
                    kern.name()
                );
            }
            kern.scale(&mut z, 2.0);
            for j in 0..n {
                assert!(
                    (z[j] - 2.0 * (y[j] + 0.5 * x[j])).abs() <= 2e-6,
                    "{} scale",
                    kern.name()
                );
            }
        }
    }
}

#[test]
fn sparse_kernels_accept_empty_index_lists() {
    for kern in all_kernels() {
        let w = vec![1.0f32; 20];
        let wv = MatRef::row_major(&w, 4, 5).unwrap();
        let mut y = vec![3.0f32; 5];
        kern.gather_axpy(&mut y, wv, &[], &[]);
        assert_eq!(y, vec![3.0; 5]);
        let mut out: Vec<f32> = Vec::new();
        kern.gather_dots(&mut out, wv, &[], &y);
        let mut g = vec![0.0f32; 20];
        kern.rank1_rows(MatMut::row_major(&mut g, 4, 5).unwrap(), &[], &[], &y, 1.0);
        kern.rank1_sparse(
            MatMut::row_major(&mut g, 4, 5).unwrap(),
            &[],
            &[],
            &[1],
            &[1.0],
            1.0,
        );
        assert!(g.iter().all(|&x| x == 0.0));
        let empty = SparseRows::new();
        assert_eq!((empty.rows(), empty.nnz()), (0, 0));
    }
}

#[test]
fn sparse_kernels_reject_out_of_range_indices() {
    let w = vec![1.0f32; 20];
    let wv = MatRef::row_major(&w, 4, 5).unwrap();
    let mut y = vec![0.0f32; 5];
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drsae_kernels::kernels().gather_axpy(&mut y, wv, &[4], &[1.0]);
    }));
    assert!(r.is_err());
}

#[test]
fn transpose_matches_naive_and_stays_inside_dst() {
    // Below, at and above the 8 × 8 block in each direction, and the model's 400 × 400 and
    // 784 × 400; rows padded and the start unaligned, poison around the destination.
    for kern in all_kernels() {
        for (r, c) in [
            (0, 5),
            (1, 1),
            (1, 9),
            (7, 8),
            (8, 8),
            (9, 17),
            (16, 7),
            (33, 15),
            (400, 400),
            (784, 400),
        ] {
            let mut rng = rng((r * 1000 + c) as u64);
            let src = Strided::random(&mut rng, r, c, false, 3, 1);
            let mut dst = Strided::new(c, r, false, 2, 3, |_, _| POISON);
            kern.transpose(src.view(), dst.view_mut());
            assert_eq!(dst.touched_outside(), 0, "{}: {r}x{c}", kern.name());
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(
                        dst.at(j, i).to_bits(),
                        src.at(i, j).to_bits(),
                        "{}: {r}x{c} at ({i}, {j})",
                        kern.name()
                    );
                }
            }
        }
    }
}

#[test]
fn transpose_rejects_mismatched_shapes() {
    let a = vec![0.0; 6];
    let mut b = vec![0.0; 6];
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        kernels().transpose(
            MatRef::row_major(&a, 2, 3).unwrap(),
            MatMut::row_major(&mut b, 2, 3).unwrap(),
        );
    }));
    assert!(result.is_err());
}

#[test]
fn gemm_tn_rows_matches_naive_loop_and_leaves_other_rows_alone() {
    let mut failures = Vec::new();
    for kern in all_kernels() {
        for &n in &WIDTHS {
            for (case, &(k, m, density)) in [
                (0, 5, 1.0),
                (1, 9, 1.0),
                (3, 23, 0.5),
                (10, 23, 0.05),
                (10, 31, 0.5),
                (17, 13, 1.0),
            ]
            .iter()
            .enumerate()
            {
                let seed = (n * 31 + case) as u64;
                let mut r = rng(seed);
                // A both ways round (the engine's is row-major with a step stride), B and C
                // row-major with padding, all at unaligned offsets.
                let a = Strided::random(&mut r, k, m, case % 2 == 1, 3, 1);
                let b = Strided::random(&mut r, k, n, false, 2, 3);
                let sel = index_set(seed + 7, m, density);
                let mut c = Strided::random(&mut r, m, n, false, 1, 2);
                for i in (0..m).filter(|&i| !sel.contains(&(i as u32))) {
                    for j in 0..n {
                        c.buf[c.off + i * c.rs + j] = POISON;
                    }
                }
                let c0 = c.clone();
                kern.gemm_tn_rows(-0.75, a.view(), b.view(), &sel, c.view_mut());
                if c.touched_outside() > 0 {
                    failures.push(format!("{} n={n} k={k}: wrote outside C", kern.name()));
                }
                for i in 0..m {
                    let picked = sel.contains(&(i as u32));
                    for j in 0..n {
                        let got = c.at(i, j);
                        if !picked {
                            if got.to_bits() != POISON.to_bits() {
                                failures
                                    .push(format!("{} n={n} k={k}: row {i} written", kern.name()));
                            }
                            continue;
                        }
                        let (mut sum, mut scale) = (0.0f64, 0.0f64);
                        for p in 0..k {
                            let t = f64::from(a.at(p, i)) * f64::from(b.at(p, j));
                            sum += t;
                            scale += t.abs();
                        }
                        let want = f64::from(c0.at(i, j)) - 0.75 * sum;
                        if !close(got, want, k, 0.75 * scale + f64::from(c0.at(i, j)).abs()) {
                            failures.push(format!("{} n={n} k={k} ({i},{j})", kern.name()));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn gemm_tn_rows_rejects_unordered_or_out_of_range_rows() {
    let kern = drsae_kernels::kernels();
    for rows in [&[2u32, 1][..], &[1, 1], &[5]] {
        let (a, b) = (vec![1.0f32; 10], vec![1.0f32; 6]);
        let mut c = vec![0.0f32; 15];
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            kern.gemm_tn_rows(
                1.0,
                MatRef::row_major(&a, 2, 5).unwrap(),
                MatRef::row_major(&b, 2, 3).unwrap(),
                rows,
                MatMut::row_major(&mut c, 5, 3).unwrap(),
            );
        }));
        assert!(r.is_err(), "rows {rows:?} accepted");
    }
}

#[test]
fn nonzero_columns_matches_naive_including_nan_and_negative_zero() {
    let mut failures = Vec::new();
    for kern in all_kernels() {
        for &n in &WIDTHS {
            for (d, &density) in DENSITIES.iter().enumerate() {
                for k in [1, 3, 10] {
                    let seed = (n * 17 + d * 5 + k) as u64;
                    let mut a = Strided::new(k, n, false, 5, 1, |_, _| 0.0);
                    for (i, v) in sparse_dense(seed, k, n, density).into_iter().enumerate() {
                        a.buf[a.off + (i / n) * a.rs + i % n] = v;
                    }
                    if n > 2 {
                        a.buf[a.off + (k - 1) * a.rs + 1] = f32::NAN;
                        a.buf[a.off + 2] = -0.0;
                    }
                    let want: Vec<u32> = (0..n)
                        .filter(|&j| (0..k).any(|p| a.at(p, j) != 0.0 || a.at(p, j).is_nan()))
                        .map(|j| j as u32)
                        .collect();
                    let mut idx = vec![u32::MAX; n];
                    let got = kern.nonzero_columns(a.view(), &mut idx);
                    if idx[..got] != want[..] {
                        failures.push(format!("{} n={n} k={k} density={density}", kern.name()));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
