//! Dense GEMM `C ← α·A·B + β·C` on strided views, BLIS-style, generic over the vector ISA.
//!
//! Four paths, chosen per call from the shape and the strides (first match wins):
//! - **rows** (`B.cs == 1`, `C.cs == 1`, and `m == 1` or `k <= ROW_K`): one row of C at a
//!   time, up to 28 vectors of it in registers while B's rows stream past in memory order.
//!   For `m = 1` this reads B once, sequentially; for the rank-1-like weight gradients
//!   (`k` = B = 1) it writes C as one sequential stream, which the hardware prefetchers
//!   follow (prefetching each row's lines for ownership two rows ahead made these products
//!   0.73–1.00× `matrixmultiply` on a Zen 4 core, against 1.00–1.07× without).
//! - **unpacked B** (`B.cs == 1`, and `m <= SMALL_M` or a deep-enough, narrow-enough B that
//!   stays in L2): no packing; the register tile broadcasts A straight from the caller's
//!   storage and loads B's rows in place. For B = 1 and B = 10 packing B would cost as much as
//!   the product; at B = 128 with 400 columns not packing measured ~10 % faster.
//! - **dots** (`m <= SMALL_M`, `A.cs == 1`, `B.rs == 1`, i.e. `A·Eᵀ` with row-major E): dot
//!   product tiles over the contiguous depth of both operands, avoiding a transposing pack.
//! - **packed** (everything else: `A·Eᵀ` at B = 128, shallow or wide weight gradients): the
//!   five BLIS loops below, packing A into `MR`-row panels and B into `NR`-column panels
//!   (transposing 8 × 8 blocks in registers where an operand lies across) so the microkernel
//!   streams contiguous, zero-padded memory.

pub(crate) mod pack;
pub(crate) mod tile;

use crate::aligned::Line;
use crate::simd::Simd;
use std::cell::RefCell;
use tile::{TileArgs, tile_rows};

/// Depth of a packed block (loop 4, over `pc`). One B micro-panel (`KC × NR` = 256 × 32 × 4 B =
/// 32 KiB for AVX-512) stays in the 48 KiB L1d while the `ir` loop sweeps A micro-panels past
/// it. The depth is split into equal chunks no longer than `KC` (784 → 4 × 196).
pub(crate) const KC: usize = 256;
/// Rows of A packed at once (loop 3, over `ic`): `MC × KC × 4 B` = 144 KiB, resident in the
/// 2 MiB L2 while every B micro-panel of the block passes. A multiple of every MR (12, 6, 4).
pub(crate) const MC: usize = 144;
/// Columns of B packed at once (loop 5, over `jc`): `KC × NC × 4 B` = 1 MiB, half the L2 (the
/// rest of the hierarchy, L3, backs it). A multiple of every NR (32, 16).
pub(crate) const NC: usize = 1024;
/// Largest `m` for which the dot-product path and the unpacked path (whatever B's size) are
/// used instead of packing.
pub(crate) const SMALL_M: usize = 24;
/// Largest B (in bytes) the unpacked path streams in place for any `m`: 3/4 of a 2 MiB L2, so
/// B stays L2-resident while every row block of A passes over it.
pub(crate) const UNPACKED_B_MAX_BYTES: usize = 3 << 19;
/// Widest C for the unpacked path at large `m`: every NR-column strip re-reads A from L2, and
/// packing measured faster beyond ~16 strips (e.g. 784 columns) on the model's shapes.
pub(crate) const UNPACKED_MAX_N: usize = 512;
/// Largest depth for the unpacked path at large `m`: an `MR × k` block of A (broadcast from the
/// caller's rows) should stay in the 48 KiB L1d (12 × 1024 × 4 B = 48 KiB).
pub(crate) const UNPACKED_MAX_K: usize = 1024;
/// Depth up to which products with many rows go one row of C at a time ([`single_row`]).
pub(crate) const ROW_K: usize = 4;
/// Depth up to which the unpacked path walks C row block by row block (C written in memory
/// order, B tiny and L1-resident) instead of column strip by column strip (B strip reused).
pub(crate) const SHALLOW_K: usize = 32;

/// A GEMM call with validated views, as raw parts.
#[derive(Clone, Copy)]
pub(crate) struct GemmArgs {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub a: *const f32,
    pub a_rs: usize,
    pub a_cs: usize,
    pub b: *const f32,
    pub b_rs: usize,
    pub b_cs: usize,
    pub beta: f32,
    pub c: *mut f32,
    pub c_rs: usize,
    pub c_cs: usize,
    /// For [`gemm_depth_subset`]: B's row of each depth step (`k` of them); null otherwise.
    pub kidx: *const u32,
}

/// Per-thread packing buffers, grown on demand and reused: no allocation once warm.
#[derive(Default)]
struct PackBufs {
    a: Vec<Line>,
    b: Vec<Line>,
}

thread_local! {
    static BUFS: RefCell<PackBufs> = RefCell::new(PackBufs::default());
}

/// This thread's packing buffers, taken out of the thread-local for the duration of one call
/// and put back on drop (no closure: the packed loops must stay inside the caller's
/// `#[target_feature]` function to be compiled with its features).
struct Buffers(PackBufs);

impl Buffers {
    /// Buffers of at least `a_len` and `b_len` floats, 64-byte aligned.
    fn take(a_len: usize, b_len: usize) -> Buffers {
        let mut bufs = BUFS
            .try_with(|cell| {
                cell.try_borrow_mut()
                    .map(|mut b| std::mem::take(&mut *b))
                    .ok()
            })
            .ok()
            .flatten()
            .unwrap_or_default();
        grow(&mut bufs.a, a_len);
        grow(&mut bufs.b, b_len);
        Buffers(bufs)
    }

    fn a(&mut self) -> *mut f32 {
        self.0.a.as_mut_ptr().cast()
    }

    fn b(&mut self) -> *mut f32 {
        self.0.b.as_mut_ptr().cast()
    }

    /// The B buffer grown to at least `len` floats (A's buffer, and pointers into it, stay
    /// valid).
    fn b_with(&mut self, len: usize) -> *mut f32 {
        grow(&mut self.0.b, len);
        self.b()
    }
}

/// Grows a buffer to at least `len` floats.
fn grow(v: &mut Vec<Line>, len: usize) {
    let lines = len.div_ceil(16).max(1);
    if v.len() < lines {
        v.resize(lines, Line([0.0; 16]));
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        let bufs = std::mem::take(&mut self.0);
        // If the thread-local is gone (thread teardown) the buffers are simply freed.
        let _ = BUFS.try_with(|cell| {
            if let Ok(mut slot) = cell.try_borrow_mut() {
                *slot = bufs;
            }
        });
    }
}

/// `C ← α·A·B + β·C`.
///
/// `MR × NV·LANES` is the register tile of the packed path; `DRI × DRJ` (`DRI <= 5`) the dot
/// tile; `ROWV <= 28` the vectors of one row of C held in registers by [`single_row`].
///
/// # Safety
/// The views in `g` must be valid (every addressed element inside its storage, C's elements
/// distinct and not overlapping A or B) with consistent dimensions; `MR <= 14`, `MC % MR == 0`,
/// `NC % (NV·LANES) == 0`, `NV·LANES <= 64`.
#[inline(always)]
pub(crate) unsafe fn gemm<
    S: Simd,
    const MR: usize,
    const NV: usize,
    const DRI: usize,
    const DRJ: usize,
    const ROWV: usize,
>(
    s: S,
    g: &GemmArgs,
) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    // SAFETY: every branch forwards this function's contract (checked by the caller) to a
    // path whose extra conditions (strides, m, k) the branch condition establishes.
    unsafe {
        if g.k == 0 || g.alpha == 0.0 {
            scale_c(g);
        } else if g.b_cs == 1 && g.c_cs == 1 && (g.m == 1 || g.k <= ROW_K) {
            // One row of C at a time (with B tiny and L1-resident when m > 1): C is written
            // in memory order, one sequential stream.
            let mut bufs = None;
            for i in 0..g.m {
                let row = GemmArgs {
                    m: 1,
                    a: g.a.wrapping_add(i * g.a_rs),
                    c: g.c.wrapping_add(i * g.c_rs),
                    ..*g
                };
                single_row::<S, MR, NV, ROWV, false>(s, &row, &mut bufs);
            }
        } else if g.b_cs == 1
            && (g.m <= SMALL_M
                || (g.k > SHALLOW_K
                    && g.k <= UNPACKED_MAX_K
                    && g.n <= UNPACKED_MAX_N
                    && g.k.saturating_mul(g.n).saturating_mul(4) <= UNPACKED_B_MAX_BYTES))
        {
            unpacked_b::<S, MR, NV, false>(s, g, &mut None);
        } else if g.m <= SMALL_M && g.a_cs == 1 && g.b_rs == 1 {
            small_m_dots::<S, DRI, DRJ>(s, g);
        } else {
            packed::<S, MR, NV>(s, g);
        }
    }
}

/// `C ← α·A(:, kidx)·B(kidx, :) + β·C`: the product over the depth steps `kidx` names (`g.k`
/// of them, `g.kidx` pointing at them), for a sparse A whose other columns are zero.
///
/// The selected columns of A are copied into a compact `m × k` block (`m·k` values against the
/// `m·k·n` FMAs of the product); the tiles then read B's selected rows in place, so no row of
/// B that the subset leaves out is touched.
///
/// # Safety
/// As [`gemm`] with `b_cs == 1` and `k` the length of the subset; `g.kidx[..k]` readable and
/// every index a row of A's columns and B's rows (`< ` their common depth).
#[inline(always)]
pub(crate) unsafe fn gemm_depth_subset<
    S: Simd,
    const MR: usize,
    const NV: usize,
    const ROWV: usize,
>(
    s: S,
    g: &GemmArgs,
) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    if g.k == 0 || g.alpha == 0.0 {
        // SAFETY: forwarded contract.
        unsafe { scale_c(g) };
        return;
    }
    let mut held = Buffers::take(g.m * g.k, 0);
    let a = held.a();
    for i in 0..g.m {
        for q in 0..g.k {
            // SAFETY: kidx[q] is a column of A (contract); the buffer holds m·k values.
            unsafe {
                let col = *g.kidx.add(q) as usize;
                *a.add(i * g.k + q) = *g.a.add(i * g.a_rs + col * g.a_cs);
            }
        }
    }
    let h = GemmArgs {
        a,
        a_rs: g.k,
        a_cs: 1,
        ..*g
    };
    // The ragged-strip copy, if any, goes to the same buffers' B side.
    let mut bufs = Some(held);
    // SAFETY: the compact A holds the m × k selected values; B's rows are read through kidx.
    unsafe {
        if g.m == 1 && g.c_cs == 1 {
            single_row::<S, MR, NV, ROWV, true>(s, &h, &mut bufs);
        } else {
            unpacked_b::<S, MR, NV, true>(s, &h, &mut bufs);
        }
    }
}

/// `C ← β·C` (writing zeros without reading when β = 0), for `k = 0` or `α = 0`.
///
/// # Safety
/// C valid as in [`gemm`].
unsafe fn scale_c(g: &GemmArgs) {
    for i in 0..g.m {
        for j in 0..g.n {
            // SAFETY: `i < m`, `j < n` address an element of C.
            unsafe {
                let p = g.c.add(i * g.c_rs + j * g.c_cs);
                *p = if g.beta == 0.0 { 0.0 } else { g.beta * *p };
            }
        }
    }
}

/// One row of C, B with unit column stride: C's row (≤ ROWV vectors at a time) in registers, B
/// streamed once in order (with `IDX`, the rows `kidx` names, in that order). `bufs` as in
/// [`unpacked_b`].
///
/// # Safety
/// As [`gemm`], with `m == 1`, `b_cs == 1`, `c_cs == 1`; with `IDX`, as [`gemm_depth_subset`].
#[inline(always)]
unsafe fn single_row<
    S: Simd,
    const MR: usize,
    const NV: usize,
    const ROWV: usize,
    const IDX: bool,
>(
    s: S,
    g: &GemmArgs,
    bufs: &mut Option<Buffers>,
) {
    // Naive algorithm:
    //   for j in 0..n { C[0][j] = α·Σ_p A[0][p]·B[p][j] + β·C[0][j] }
    // Optimised: up to 28 vectors of C's row accumulate in registers while p walks B's rows in
    // memory order (a sequential stream the prefetchers follow); one broadcast of A per row.
    let l = S::LANES;
    let nv = g.n / l;
    if nv > 0 {
        let passes = nv.div_ceil(ROWV);
        let per = nv.div_ceil(passes);
        let mut v0 = 0;
        while v0 < nv {
            let nb = per.min(nv - v0);
            let t = TileArgs {
                k: g.k,
                a: g.a,
                a_rs: 0,
                a_ks: g.a_cs,
                b: g.b.wrapping_add(v0 * l),
                b_ks: g.b_rs,
                kidx: g.kidx,
                c: g.c.wrapping_add(v0 * l),
                c_rs: g.c_rs,
                c_cs: 1,
                n_valid: nb * l,
                alpha: g.alpha,
                beta: g.beta,
            };
            macro_rules! arms {
                ($($n:literal)*) => {
                    match nb {
                        $($n if $n <= ROWV => tile::tile::<S, 1, $n, 1, IDX>(s, &t),)*
                        _ => unreachable!("row block of {nb} vectors"),
                    }
                };
            }
            // SAFETY: vectors v0..v0+nb (< n / LANES) of every B row and of C's row are
            // addressed; A's row is addressed for every p < k.
            unsafe {
                arms!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28)
            }
            v0 += nb;
        }
    }
    let done = nv * l;
    if done < g.n {
        // The last `n % LANES` columns: a narrow sub-problem for the unpacked path.
        let rest = GemmArgs {
            n: g.n - done,
            b: g.b.wrapping_add(done),
            c: g.c.wrapping_add(done),
            ..*g
        };
        // SAFETY: columns done..n of B and C are addressed.
        unsafe { unpacked_b::<S, MR, NV, IDX>(s, &rest, bufs) };
    }
}

/// B with unit column stride: no packing (except a zero-padded copy of a ragged last column
/// strip, made in the B side of `bufs`: the caller's buffers if it holds them, else taken
/// here and kept there for the caller's next call). With `IDX`, depth step p reads B's row
/// `kidx[p]`.
///
/// # Safety
/// As [`gemm`], with `b_cs == 1`; with `IDX`, as [`gemm_depth_subset`].
#[inline(always)]
unsafe fn unpacked_b<S: Simd, const MR: usize, const NV: usize, const IDX: bool>(
    s: S,
    g: &GemmArgs,
    bufs: &mut Option<Buffers>,
) {
    // Naive algorithm:
    //   for i in 0..m { for j in 0..n { C[i][j] = α·Σ_p A[i][p]·B[p][j] + β·C[i][j] } }
    // Optimised: register tiles of ≤ MR rows × NR columns read A and B in place. Deep products
    // sweep column strips outermost (each strip of B, from L2, serves every row block);
    // shallow ones (k <= SHALLOW_K, B tiny) sweep row blocks outermost so C is written in
    // memory order.
    let l = S::LANES;
    let nr = NV * l;
    let full = g.n / nr;
    let rem = g.n - full * nr;
    // The ragged last strip, if any, is copied zero-padded (k × NR) so the kernel loads whole
    // vectors; exactly one vector (400 and 784 columns end this way) is read in place.
    let mut ragged_b = g.b;
    if rem != 0 && rem != l {
        let buf = bufs
            .get_or_insert_with(|| Buffers::take(0, 0))
            .b_with(g.k * nr);
        if IDX {
            // The copy holds the selected rows in depth order, so its tile reads it in order.
            for q in 0..g.k {
                // SAFETY: row kidx[q] of B (columns full·NR..n) is addressed; row q of the
                // buffer holds NR values.
                unsafe {
                    let row = g.b.add(*g.kidx.add(q) as usize * g.b_rs + full * nr);
                    pack::pack_b::<S, NV>(s, 1, rem, row, g.b_rs, 1, buf.add(q * nr));
                }
            }
        } else {
            // SAFETY: the strip (all k rows, columns full·NR..n) is addressed; the buffer
            // holds k·NR values.
            unsafe { pack::pack_b::<S, NV>(s, g.k, rem, g.b.add(full * nr), g.b_rs, 1, buf) };
        }
        ragged_b = buf;
    }
    let strips = full + usize::from(rem != 0);
    if g.k <= SHALLOW_K {
        // Shallow products (with m <= SMALL_M here) are bound by writing C: row block by row
        // block, fetching the next tile's lines of C for ownership while this tile computes.
        for i0 in (0..g.m).step_by(MR) {
            for js in 0..strips {
                if g.c_cs == 1 && js + 1 < strips {
                    let next = g.c.wrapping_add(i0 * g.c_rs + (js + 1) * nr);
                    prefetch_tile::<S, NV>(s, next, MR.min(g.m - i0), g.c_rs);
                }
                // SAFETY: forwarded contract; `ragged_b` as described above.
                unsafe { unpacked_tile::<S, MR, NV, IDX>(s, g, i0, js, full, rem, ragged_b) };
            }
        }
    } else {
        for js in 0..strips {
            for i0 in (0..g.m).step_by(MR) {
                // SAFETY: as above.
                unsafe { unpacked_tile::<S, MR, NV, IDX>(s, g, i0, js, full, rem, ragged_b) };
            }
        }
    }
}

/// The tile of [`unpacked_b`] at row `i0` and column strip `js` (of `full` whole strips and a
/// last one of `rem` columns, read from `ragged_b` unless it is exactly one vector).
///
/// # Safety
/// As [`unpacked_b`]; `ragged_b` holds the zero-padded ragged strip when `rem` is neither 0
/// nor `LANES` (with `IDX`, its rows already in depth order).
#[inline(always)]
unsafe fn unpacked_tile<S: Simd, const MR: usize, const NV: usize, const IDX: bool>(
    s: S,
    g: &GemmArgs,
    i0: usize,
    js: usize,
    full: usize,
    rem: usize,
    ragged_b: *const f32,
) {
    let l = S::LANES;
    let nr = NV * l;
    let j0 = js * nr;
    let (b, b_ks, w, narrow, packed) = if js < full {
        (g.b.wrapping_add(j0), g.b_rs, nr, false, false)
    } else if rem == l {
        (g.b.wrapping_add(j0), g.b_rs, rem, NV > 1, false)
    } else {
        (ragged_b, nr, rem, false, true)
    };
    let r = MR.min(g.m - i0);
    let t = TileArgs {
        k: g.k,
        a: g.a.wrapping_add(i0 * g.a_rs),
        a_rs: g.a_rs,
        a_ks: g.a_cs,
        b,
        b_ks,
        kidx: g.kidx,
        c: g.c.wrapping_add(i0 * g.c_rs + j0 * g.c_cs),
        c_rs: g.c_rs,
        c_cs: g.c_cs,
        n_valid: w,
        alpha: g.alpha,
        beta: g.beta,
    };
    // SAFETY: rows i0..i0+r of A and C and columns j0..j0+w of B and C are addressed; full
    // strips read NV vectors of B in place, a one-vector strip one vector, and the ragged strip
    // NV vectors of the zero-padded copy.
    unsafe {
        if IDX && packed {
            tile_rows::<S, NV, MR, false>(s, r, &t);
        } else if narrow {
            tile_rows::<S, 1, MR, IDX>(s, r, &t);
        } else if g.a_rs == 1 {
            // Column-major A (`d_uᵀ` in the weight gradients): a literal row step lets the
            // broadcasts use constant offsets instead of a chain of address additions.
            tile_rows::<S, NV, MR, IDX>(s, r, &TileArgs { a_rs: 1, ..t });
        } else {
            tile_rows::<S, NV, MR, IDX>(s, r, &t);
        }
    }
}

/// Small `m`, `A·Bᵀ` with both operands contiguous along the depth: dot-product tiles.
///
/// # Safety
/// As [`gemm`], with `a_cs == 1` and `b_rs == 1`.
#[inline(always)]
unsafe fn small_m_dots<S: Simd, const DRI: usize, const DRJ: usize>(s: S, g: &GemmArgs) {
    // Naive algorithm:
    //   for i, j: C[i][j] = α·dot(A[i][..], Bᵀ[j][..]) + β·C[i][j]
    // Optimised: DRI rows of A (kept in L1) against DRJ columns of B at a time; each pair is a
    // vector accumulator over the depth, reduced once at the end.
    macro_rules! rows_block {
        ($ri:literal, $rj:tt, $i0:expr) => {{
            let i0 = $i0;
            let a = g.a.wrapping_add(i0 * g.a_rs);
            let mut j0 = 0;
            while j0 + $rj <= g.n {
                // SAFETY: rows i0..i0+$ri of A and columns j0..j0+RJ of B are addressed, each
                // contiguous over the k depth steps (`a_cs == b_rs == 1`).
                let v = unsafe {
                    tile::dot_tile::<S, $ri, $rj>(s, g.k, a, g.a_rs, g.b.add(j0 * g.b_cs), g.b_cs)
                };
                store_dots(g, i0, j0, v.as_flattened(), $ri, $rj);
                j0 += $rj;
            }
            while j0 < g.n {
                // SAFETY: as above for the single column j0 < n.
                let v = unsafe {
                    tile::dot_tile::<S, $ri, 1>(s, g.k, a, g.a_rs, g.b.add(j0 * g.b_cs), g.b_cs)
                };
                store_dots(g, i0, j0, v.as_flattened(), $ri, 1);
                j0 += 1;
            }
        }};
    }
    let mut i0 = 0;
    while i0 < g.m {
        let ri = DRI.min(g.m - i0).min(5);
        // A single row has only RJ accumulators: give it 8 columns so that 8 independent FMA
        // chains are in flight.
        match ri {
            5 => rows_block!(5, DRJ, i0),
            4 => rows_block!(4, DRJ, i0),
            3 => rows_block!(3, DRJ, i0),
            2 => rows_block!(2, DRJ, i0),
            _ => rows_block!(1, 8, i0),
        }
        i0 += ri;
    }
}

/// Writes an `ri × rj` block of dot products to C at `(i0, j0)`: `C ← α·v + β·C`.
#[inline(always)]
fn store_dots(g: &GemmArgs, i0: usize, j0: usize, vals: &[f32], ri: usize, rj: usize) {
    for i in 0..ri {
        for j in 0..rj {
            let x = vals[i * rj + j];
            // SAFETY: callers pass blocks inside C (`i0 + i < m`, `j0 + j < n`), whose elements
            // `GemmArgs` guarantees addressable.
            unsafe {
                let p = g.c.add((i0 + i) * g.c_rs + (j0 + j) * g.c_cs);
                *p = if g.beta == 0.0 {
                    g.alpha * x
                } else {
                    g.alpha * x + g.beta * *p
                };
            }
        }
    }
}

/// The general path: pack, then sweep register tiles over the packed panels.
///
/// # Safety
/// As [`gemm`].
#[inline(always)]
unsafe fn packed<S: Simd, const MR: usize, const NV: usize>(s: S, g: &GemmArgs) {
    // Naive algorithm:
    //   for i in 0..m { for j in 0..n { C[i][j] = α·Σ_p A[i][p]·B[p][j] + β·C[i][j] } }
    // Optimised (BLIS): five loops around the register tile, with A and B packed per block.
    let l = S::LANES;
    let nr = NV * l;
    let n_chunks = g.k.div_ceil(KC);
    let kc_max = g.k.div_ceil(n_chunks);
    let nc_max = NC.min(g.n.div_ceil(nr) * nr);
    let mc_max = MC.min(g.m.div_ceil(MR) * MR);
    let mut bufs = Buffers::take(mc_max * kc_max, nc_max * kc_max);
    let (abuf, bbuf) = (bufs.a(), bufs.b());
    {
        // Loop 5: column blocks of B and C (NC wide, L3/L2).
        for jc in (0..g.n).step_by(NC) {
            let nc = NC.min(g.n - jc);
            // Loop 4: depth blocks (KC deep).
            for pc in (0..g.k).step_by(kc_max) {
                let kc = kc_max.min(g.k - pc);
                // SAFETY: the `kc × nc` block of B at (pc, jc) is addressed; `bbuf` holds
                // ⌈nc/NR⌉·NR·kc values.
                unsafe {
                    pack::pack_b::<S, NV>(
                        s,
                        kc,
                        nc,
                        g.b.add(pc * g.b_rs + jc * g.b_cs),
                        g.b_rs,
                        g.b_cs,
                        bbuf,
                    );
                }
                // Later depth blocks accumulate onto what the first one wrote.
                let beta = if pc == 0 { g.beta } else { 1.0 };
                // Loop 3: row blocks of A and C (MC tall, L2).
                for ic in (0..g.m).step_by(MC) {
                    let mc = MC.min(g.m - ic);
                    // SAFETY: the `mc × kc` block of A at (ic, pc) is addressed; `abuf` holds
                    // ⌈mc/MR⌉·MR·kc values.
                    unsafe {
                        pack::pack_a::<S, MR>(
                            s,
                            mc,
                            kc,
                            g.a.add(ic * g.a_rs + pc * g.a_cs),
                            g.a_rs,
                            g.a_cs,
                            abuf,
                        );
                    }
                    // Loops 2 and 1: B micro-panels (NR wide, kept in L1 across loop 1) and A
                    // micro-panels (MR tall, streamed from L2). Shallow blocks, bound by
                    // writing C, swap them so that C is written row block by row block.
                    let (n_jp, n_ip) = (nc.div_ceil(nr), mc.div_ceil(MR));
                    let shallow = kc <= SHALLOW_K;
                    for outer in 0..if shallow { n_ip } else { n_jp } {
                        for inner in 0..if shallow { n_jp } else { n_ip } {
                            let (jp, ip) = if shallow {
                                (inner, outer)
                            } else {
                                (outer, inner)
                            };
                            let (jr, ir) = (jp * nr, ip * MR);
                            let w = nr.min(nc - jr);
                            let r = MR.min(mc - ir);
                            let t = TileArgs {
                                k: kc,
                                a: abuf.wrapping_add(ip * MR * kc),
                                a_rs: 1,
                                a_ks: MR,
                                b: bbuf.wrapping_add(jp * nr * kc),
                                b_ks: nr,
                                kidx: std::ptr::null(),
                                c: g.c.wrapping_add((ic + ir) * g.c_rs + (jc + jr) * g.c_cs),
                                c_rs: g.c_rs,
                                c_cs: g.c_cs,
                                n_valid: w,
                                alpha: g.alpha,
                                beta,
                            };
                            // SAFETY: the panels were packed above (zero-padded to MR × NR);
                            // the C tile (r rows, w columns) is inside C. A narrow edge reads
                            // only the first vector of each packed row.
                            unsafe {
                                if w <= l && NV > 1 {
                                    tile_rows::<S, 1, MR, false>(s, r, &t);
                                } else {
                                    tile_rows::<S, NV, MR, false>(s, r, &t);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Prefetches for writing the `NV` vectors of each of the `rows` rows of a C tile at `c`
/// (row-major, row stride `c_rs`): shallow products are bound by writing C, and fetching the
/// next tile's lines for ownership overlaps that with the current tile's arithmetic.
#[inline(always)]
fn prefetch_tile<S: Simd, const NV: usize>(s: S, c: *const f32, rows: usize, c_rs: usize) {
    for i in 0..rows {
        for v in 0..NV {
            s.prefetch_write(c.wrapping_add(i * c_rs + v * S::LANES));
        }
    }
}
