//! Register-tiled microkernels (generic over the vector ISA) and the tile store.
//!
//! `bcast_tile` is the BLIS microkernel: an `R × NV·LANES` block of C lives in `R·NV` vector
//! registers while the depth loop broadcasts one element of A per row and loads `NV` vectors of
//! one row of B. It reads A and B through strides, so the same code runs on packed panels
//! (compile-time strides after inlining) and, for small `m`, directly on the caller's matrices.
//! `dot_tile` is the alternative for `A·Bᵀ` with both operands contiguous along the depth: it
//! keeps `RI × RJ` vector partial dot products and reduces them at the end, so neither operand
//! needs a transposing pack.

use crate::simd::Simd;

/// Where a microkernel reads its operands and writes its tile.
#[derive(Clone, Copy)]
pub(crate) struct TileArgs {
    /// Depth of the product.
    pub k: usize,
    /// A(i, p) at `a + i*a_rs + p*a_ks`.
    pub a: *const f32,
    pub a_rs: usize,
    pub a_ks: usize,
    /// Vector `v` of B's row `p` at `b + p*b_ks + v*LANES` (all `NV` vectors readable); in an
    /// indexed tile (`IDX`), at `b + kidx[p]*b_ks + v*LANES`.
    pub b: *const f32,
    pub b_ks: usize,
    /// The B rows of an indexed tile's depth steps (`k` of them); unused otherwise.
    pub kidx: *const u32,
    /// C(i, j) at `c + i*c_rs + j*c_cs`, for `i < R` and `j < n_valid`.
    pub c: *mut f32,
    pub c_rs: usize,
    pub c_cs: usize,
    pub n_valid: usize,
    pub alpha: f32,
    /// Exactly `0.0` means C is written without being read.
    pub beta: f32,
}

/// Depth steps ahead an indexed tile of two or more rows prefetches B's row. The selected rows
/// are scattered, so no hardware prefetcher predicts the next one; a wide B that does not stay
/// in L2 (the decoder rows of the residual `Z_T·Dᵀ`, 3 KB apart) otherwise stalls on every
/// row. Measured in the engine at minibatch 10: that stage 0.6–0.7× as long, the recurrent
/// ones (B in L2) unchanged; 8 and 16 steps alike. A one-row tile (minibatch 1) is bound by
/// its B loads already, and the prefetches, which take load slots too, made it 0.75–0.9× as
/// fast.
const IDX_PREFETCH: usize = 8;

/// Computes `acc[i][v] = Σ_p A(i, p) · B(p, v·LANES..(v+1)·LANES)` in registers.
///
/// `U` independent partial sums per accumulator split the depth loop when `R·NV` alone is too
/// few independent FMA chains: the FMA latency (4 cycles) times the FMA ports (2) means at
/// least 8 chains must be in flight to keep the units busy.
///
/// With `IDX`, B's depth step `p` is row `kidx[p]`: a product over a subset of the depth,
/// A holding only the selected columns.
///
/// # Safety
/// Every A(i, p), `i < R`, `p < k`, and every B vector `p < k`, `v < NV` must be readable
/// (with `IDX`: `kidx[..k]` readable and the B rows it names).
#[inline(always)]
#[allow(
    clippy::needless_range_loop,
    reason = "indices address several register arrays at once; iterators obscure the tile"
)]
pub(crate) unsafe fn bcast_tile<
    S: Simd,
    const R: usize,
    const NV: usize,
    const U: usize,
    const IDX: bool,
>(
    s: S,
    t: &TileArgs,
) -> [[S::V; NV]; R] {
    // Naive algorithm:
    //   for i in 0..R { for j in 0..NV*LANES { for p in 0..k { acc[i][j] += A[i][p] * B[p][j] } } }
    // Optimised: p outermost; per p, NV vector loads of B and R broadcasts of A feed R·NV FMAs.
    let l = S::LANES;
    let mut acc = [[[s.zero(); NV]; R]; U];
    let mut ap = t.a;
    let mut bp = t.b;
    // B's row for depth step q, of which `bp` is step p.
    let b_row = |bp: *const f32, q: usize, u: usize| {
        if IDX {
            // SAFETY: `q < k` and `kidx[..k]` is readable (contract).
            t.b.wrapping_add(unsafe { *t.kidx.add(q) } as usize * t.b_ks)
        } else {
            bp.wrapping_add(u * t.b_ks)
        }
    };
    let mut p = 0;
    while p + U <= t.k {
        for u in 0..U {
            if IDX && R > 1 && p + u + IDX_PREFETCH < t.k {
                let ahead = b_row(bp, p + u + IDX_PREFETCH, 0);
                for v in 0..NV {
                    s.prefetch(ahead.wrapping_add(v * l));
                }
            }
            let row = b_row(bp, p + u, u);
            let mut bv = [s.zero(); NV];
            for v in 0..NV {
                // SAFETY: `p + u < k`, so this B vector is readable by the contract.
                bv[v] = unsafe { s.load(row.add(v * l)) };
            }
            for i in 0..R {
                // SAFETY: `i < R` and `p + u < k`: A(i, p+u) is readable by the contract.
                let av = unsafe { s.broadcast(ap.add(i * t.a_rs + u * t.a_ks)) };
                for v in 0..NV {
                    acc[u][i][v] = s.fma(av, bv[v], acc[u][i][v]);
                }
            }
        }
        // The pointers stay inside (or one step past) the operands: `p + U <= k`.
        ap = ap.wrapping_add(U * t.a_ks);
        bp = bp.wrapping_add(U * t.b_ks);
        p += U;
    }
    while p < t.k {
        let row = b_row(bp, p, 0);
        let mut bv = [s.zero(); NV];
        for v in 0..NV {
            // SAFETY: `p < k`, so this B vector is readable.
            bv[v] = unsafe { s.load(row.add(v * l)) };
        }
        for i in 0..R {
            // SAFETY: `i < R`, `p < k`.
            let av = unsafe { s.broadcast(ap.add(i * t.a_rs)) };
            for v in 0..NV {
                acc[0][i][v] = s.fma(av, bv[v], acc[0][i][v]);
            }
        }
        ap = ap.wrapping_add(t.a_ks);
        bp = bp.wrapping_add(t.b_ks);
        p += 1;
    }
    let mut out = acc[0];
    for u in 1..U {
        for i in 0..R {
            for v in 0..NV {
                out[i][v] = s.add(out[i][v], acc[u][i][v]);
            }
        }
    }
    out
}

/// Writes `C ← α·acc + β·C` for an `R × n_valid` tile (β = 0: C is not read).
///
/// # Safety
/// C(i, j) for `i < R`, `j < n_valid <= NV·LANES` must be writable (and readable if β ≠ 0).
#[inline(always)]
#[allow(
    clippy::needless_range_loop,
    reason = "row index addresses both the register tile and C"
)]
pub(crate) unsafe fn store_tile<S: Simd, const R: usize, const NV: usize>(
    s: S,
    acc: &[[S::V; NV]; R],
    t: &TileArgs,
) {
    let l = S::LANES;
    let va = s.splat(t.alpha);
    let vb = s.splat(t.beta);
    let beta_zero = t.beta == 0.0;
    if t.c_cs == 1 && t.n_valid == NV * l {
        // Whole tile, contiguous rows: straight-line code (no early exits), so the accumulators
        // stay in registers; β = 0 never reads C, and α = 1 with β = 0 (the common case) is a
        // plain store.
        macro_rules! rows {
            (|$x:ident, $p:ident| $e:expr) => {
                for i in 0..R {
                    let row = t.c.wrapping_add(i * t.c_rs);
                    for v in 0..NV {
                        let $p = row.wrapping_add(v * l);
                        let $x = acc[i][v];
                        // SAFETY: `i < R`, columns `v·LANES..(v+1)·LANES <= n_valid`: writable
                        // (and readable when β ≠ 0) by the contract.
                        unsafe { s.store($p, $e) };
                    }
                }
            };
        }
        if beta_zero && t.alpha == 1.0 {
            rows!(|x, p| x);
        } else if beta_zero {
            rows!(|x, p| s.mul(va, x));
        } else {
            rows!(|x, p| s.fma(vb, s.load(p), s.mul(va, x)));
        }
    } else if t.c_cs == 1 {
        // The edge paths work on an opaque copy of the tile. Their loops stop at run time, so
        // they index it at run time, which would otherwise keep the accumulators themselves
        // in memory: every whole tile above then spilled its R·NV vectors to the stack before
        // storing them (the B = 10 weight gradients ran at 0.83–0.85× `matrixmultiply`,
        // 0.99–1.02× without the spill). A plain copy is merged back into the original by the
        // compiler.
        let acc = core::hint::black_box(*acc);
        for i in 0..R {
            let row = t.c.wrapping_add(i * t.c_rs);
            for v in 0..NV {
                let j = v * l;
                if j >= t.n_valid {
                    break;
                }
                let x = s.mul(va, acc[i][v]);
                let p = row.wrapping_add(j);
                if j + l <= t.n_valid {
                    // SAFETY: `i < R` and columns `j..j+LANES` are `< n_valid`: writable (and
                    // readable when β ≠ 0) by the contract.
                    unsafe {
                        let y = if beta_zero {
                            x
                        } else {
                            s.fma(vb, s.load(p), x)
                        };
                        s.store(p, y);
                    }
                } else {
                    let n = t.n_valid - j;
                    // SAFETY: only columns `j..n_valid` are accessed (partial load/store).
                    unsafe {
                        let y = if beta_zero {
                            x
                        } else {
                            s.fma(vb, s.load_part(p, n), x)
                        };
                        s.store_part(p, y, n);
                    }
                }
            }
        }
    } else {
        // General column stride: spill each vector of the tile and scatter its lanes (from an
        // opaque copy, as above).
        let acc = core::hint::black_box(*acc);
        let mut buf = [0.0f32; 16];
        for i in 0..R {
            for v in 0..NV {
                let j0 = v * l;
                if j0 >= t.n_valid {
                    break;
                }
                // SAFETY: `LANES <= 16`, so one vector fits `buf`.
                unsafe { s.store(buf.as_mut_ptr(), acc[i][v]) };
                for (jj, &x) in buf.iter().enumerate().take(l.min(t.n_valid - j0)) {
                    // SAFETY: `i < R`, `j0 + jj < n_valid`: C(i, j0+jj) is accessible by the
                    // contract.
                    unsafe {
                        let p = t.c.add(i * t.c_rs + (j0 + jj) * t.c_cs);
                        *p = if beta_zero {
                            t.alpha * x
                        } else {
                            t.alpha * x + t.beta * *p
                        };
                    }
                }
            }
        }
    }
}

/// `bcast_tile` followed by `store_tile`.
///
/// # Safety
/// The contracts of both.
#[inline(always)]
pub(crate) unsafe fn tile<
    S: Simd,
    const R: usize,
    const NV: usize,
    const U: usize,
    const IDX: bool,
>(
    s: S,
    t: &TileArgs,
) {
    // SAFETY: forwarded contract.
    unsafe {
        let acc = bcast_tile::<S, R, NV, U, IDX>(s, t);
        store_tile::<S, R, NV>(s, &acc, t);
    }
}

/// Runs the `r`-row tile (`1 <= r <= MR <= 12`), choosing the depth split `U` so that the tile
/// has at least 8 independent accumulator chains when `NV = 2`. Arms above `MR` are folded
/// away at compile time.
///
/// # Safety
/// As [`tile`] with `R = r`.
#[inline(always)]
pub(crate) unsafe fn tile_rows<S: Simd, const NV: usize, const MR: usize, const IDX: bool>(
    s: S,
    r: usize,
    t: &TileArgs,
) {
    // SAFETY: forwarded contract, `R = r` in every arm.
    unsafe {
        match r {
            1 => tile::<S, 1, NV, 4, IDX>(s, t),
            2 => tile::<S, 2, NV, 2, IDX>(s, t),
            3 => tile::<S, 3, NV, 2, IDX>(s, t),
            4 if MR >= 4 => tile::<S, 4, NV, 1, IDX>(s, t),
            5 if MR >= 5 => tile::<S, 5, NV, 1, IDX>(s, t),
            6 if MR >= 6 => tile::<S, 6, NV, 1, IDX>(s, t),
            7 if MR >= 7 => tile::<S, 7, NV, 1, IDX>(s, t),
            8 if MR >= 8 => tile::<S, 8, NV, 1, IDX>(s, t),
            9 if MR >= 9 => tile::<S, 9, NV, 1, IDX>(s, t),
            10 if MR >= 10 => tile::<S, 10, NV, 1, IDX>(s, t),
            11 if MR >= 11 => tile::<S, 11, NV, 1, IDX>(s, t),
            12 if MR >= 12 => tile::<S, 12, NV, 1, IDX>(s, t),
            _ => unreachable!("tile rows {r} exceed MR = {MR}"),
        }
    }
}

/// `out[i][j] = Σ_p A(i, p)·Bt(j, p)` for an `RI × RJ` block, both operands contiguous in `p`.
///
/// # Safety
/// A(i, p) at `a + i*a_rs + p` and Bt(j, p) at `b + j*b_rs + p` readable for `i < RI`,
/// `j < RJ`, `p < k`.
#[inline(always)]
#[allow(
    clippy::needless_range_loop,
    reason = "indices address several register arrays at once"
)]
pub(crate) unsafe fn dot_tile<S: Simd, const RI: usize, const RJ: usize>(
    s: S,
    k: usize,
    a: *const f32,
    a_rs: usize,
    b: *const f32,
    b_rs: usize,
) -> [[f32; RJ]; RI] {
    // Naive algorithm:
    //   for i, j: out[i][j] = Σ_p A[i][p] * Bt[j][p]
    // Optimised: p in steps of LANES; RI + RJ vector loads feed RI·RJ FMAs; a masked tail.
    let l = S::LANES;
    let mut acc = [[s.zero(); RJ]; RI];
    let mut p = 0;
    while p + l <= k {
        let mut av = [s.zero(); RI];
        for i in 0..RI {
            // SAFETY: `i < RI`, `p + LANES <= k`.
            av[i] = unsafe { s.load(a.add(i * a_rs + p)) };
        }
        for j in 0..RJ {
            // SAFETY: `j < RJ`, `p + LANES <= k`.
            let bv = unsafe { s.load(b.add(j * b_rs + p)) };
            for i in 0..RI {
                acc[i][j] = s.fma(av[i], bv, acc[i][j]);
            }
        }
        p += l;
    }
    if p < k {
        let n = k - p;
        let mut av = [s.zero(); RI];
        for i in 0..RI {
            // SAFETY: only `p..k` is read.
            av[i] = unsafe { s.load_part(a.add(i * a_rs + p), n) };
        }
        for j in 0..RJ {
            // SAFETY: only `p..k` is read.
            let bv = unsafe { s.load_part(b.add(j * b_rs + p), n) };
            for i in 0..RI {
                acc[i][j] = s.fma(av[i], bv, acc[i][j]);
            }
        }
    }
    let mut out = [[0.0f32; RJ]; RI];
    for i in 0..RI {
        for j in 0..RJ {
            out[i][j] = s.reduce_sum(acc[i][j]);
        }
    }
    out
}
