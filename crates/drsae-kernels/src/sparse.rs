//! Sparsity-aware kernels (generic over the vector ISA) and the CSR-like [`SparseRows`].
//!
//! In DrSAE the input pixels (≈ 19 % non-zero) and the ReLU states are sparse, so products with
//! them only need the rows or columns of the weights that meet a non-zero. These kernels take
//! the index lists of those non-zeros; the dense weights stay row-major.

use crate::simd::Simd;
use crate::{Kernels, MatRef};
use std::fmt;

/// A `rows × cols` sparse matrix stored by rows: for row `r`, the column indices
/// `idx[row_ptr[r]..row_ptr[r+1]]` (ascending when built from dense) and their values.
///
/// Invariant (checked by every constructor): `row_ptr` starts at 0, never decreases, and every
/// index is `< cols`; the kernels rely on it to skip bounds checks.
#[derive(Clone, Debug, Default)]
pub struct SparseRows {
    cols: usize,
    row_ptr: Vec<u32>,
    /// Indices; may be longer than `nnz` (reused capacity).
    idx: Vec<u32>,
    /// Values; may be longer than `nnz` (reused capacity).
    val: Vec<f32>,
}

/// Why [`SparseRows::from_parts`] rejected its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SparseError {
    /// `row_ptr` is empty, does not start at 0, decreases, or does not end at `idx.len()`.
    BadRowPtr,
    /// `idx` and `val` have different lengths.
    LengthMismatch,
    /// A column index is `>= cols`.
    IndexOutOfRange {
        /// The offending index.
        index: u32,
        /// The number of columns.
        cols: usize,
    },
}

impl fmt::Display for SparseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SparseError::BadRowPtr => write!(
                f,
                "row_ptr must start at 0, never decrease and end at the number of entries"
            ),
            SparseError::LengthMismatch => write!(f, "idx and val have different lengths"),
            SparseError::IndexOutOfRange { index, cols } => {
                write!(f, "column index {index} out of range for {cols} columns")
            }
        }
    }
}

impl std::error::Error for SparseError {}

impl SparseRows {
    /// An empty `0 × 0` matrix (fill it with [`SparseRows::from_dense_into`]).
    pub fn new() -> Self {
        SparseRows {
            cols: 0,
            row_ptr: vec![0],
            idx: Vec::new(),
            val: Vec::new(),
        }
    }

    /// Builds from CSR parts, validating the invariant.
    pub fn from_parts(
        cols: usize,
        row_ptr: Vec<u32>,
        idx: Vec<u32>,
        val: Vec<f32>,
    ) -> Result<Self, SparseError> {
        if idx.len() != val.len() {
            return Err(SparseError::LengthMismatch);
        }
        let ok = row_ptr.first() == Some(&0)
            && row_ptr.windows(2).all(|w| w[0] <= w[1])
            && row_ptr.last().map(|&e| e as usize) == Some(idx.len());
        if !ok {
            return Err(SparseError::BadRowPtr);
        }
        if let Some(&index) = idx.iter().find(|&&i| i as usize >= cols) {
            return Err(SparseError::IndexOutOfRange { index, cols });
        }
        Ok(SparseRows {
            cols,
            row_ptr,
            idx,
            val,
        })
    }

    /// Re-fills `self` with the non-zeros (`x != 0`, NaN included) of `dense`, reusing its
    /// buffers: once they have grown to `rows × cols` entries no call allocates.
    ///
    /// DrSAE use: the pixels of a minibatch (≈ 19 % non-zero) before `sparse_gemm` with `Eᵀ`.
    ///
    /// # Panics
    /// If `rows × cols` exceeds `u32::MAX` (indices are 32-bit).
    pub fn from_dense_into(&mut self, kernels: &Kernels, dense: MatRef<'_>) {
        let (rows, cols) = (dense.rows(), dense.cols());
        let cap = rows.checked_mul(cols).expect("rows × cols overflows usize");
        assert!(
            u32::try_from(cap).is_ok(),
            "sparse matrix with {rows} × {cols} entries exceeds 32-bit indices"
        );
        if self.idx.len() < cap {
            self.idx.resize(cap, 0);
            self.val.resize(cap, 0.0);
        }
        self.cols = cols;
        self.row_ptr.clear();
        self.row_ptr.push(0);
        let mut nnz = 0usize;
        for r in 0..rows {
            let got = match dense.row(r) {
                Some(row) => kernels.nonzeros(row, &mut self.idx[nnz..], &mut self.val[nnz..]),
                None => {
                    let mut got = 0;
                    for c in 0..cols {
                        let x = dense.get(r, c).unwrap_or(0.0);
                        if x != 0.0 || x.is_nan() {
                            self.idx[nnz + got] = c as u32;
                            self.val[nnz + got] = x;
                            got += 1;
                        }
                    }
                    got
                }
            };
            nnz += got;
            self.row_ptr.push(nnz as u32);
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.row_ptr.len() - 1
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        *self.row_ptr.last().unwrap_or(&0) as usize
    }

    /// Stored entries over `rows × cols` (0 for an empty matrix).
    pub fn density(&self) -> f64 {
        let total = self.rows() * self.cols;
        if total == 0 {
            0.0
        } else {
            self.nnz() as f64 / total as f64
        }
    }

    /// Row `r`'s column indices and values.
    ///
    /// # Panics
    /// If `r >= rows`.
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (s, e) = (self.row_ptr[r] as usize, self.row_ptr[r + 1] as usize);
        (&self.idx[s..e], &self.val[s..e])
    }

    /// The row pointer (`rows + 1` entries).
    pub fn row_ptr(&self) -> &[u32] {
        &self.row_ptr
    }
}

/// Checks that `w` has unit column stride, for kernels that stream its rows.
pub(crate) fn require_rows_contiguous(w: &MatRef<'_>, what: &str) {
    assert!(
        w.col_stride() == 1 || w.cols() <= 1,
        "{what}: the matrix must have contiguous rows (column stride 1), got {}",
        w.col_stride()
    );
}

/// `y[..n] += Σ_k vals[k] · W[idx[k], ..n]` with a block of `y` held in registers.
///
/// # Safety
/// `y..y+n` writable; for every `k`, `w + idx[k]*w_rs .. + n` readable; `idx.len() <= vals.len()`.
#[inline(always)]
pub(crate) unsafe fn gather_axpy<S: Simd, const MAXB: usize>(
    s: S,
    y: *mut f32,
    n: usize,
    w: *const f32,
    w_rs: usize,
    idx: &[u32],
    vals: &[f32],
) {
    // Naive algorithm:
    //   for k in 0..idx.len() { for j in 0..n { y[j] += vals[k] * W[idx[k]][j] } }
    // Optimised: j outermost in blocks of up to MAXB vectors; each block of y stays in registers
    // for the whole k loop, so y is loaded and stored once and W rows are read once.
    let l = S::LANES;
    let nv = n.div_ceil(l);
    if nv == 0 || idx.is_empty() {
        return;
    }
    let passes = nv.div_ceil(MAXB);
    let per = nv.div_ceil(passes);
    let mut v0 = 0;
    while v0 < nv {
        let nb = per.min(nv - v0);
        let col0 = v0 * l;
        let cols = (nb * l).min(n - col0);
        // SAFETY: columns col0..col0+cols < n of y and of every indexed W row are accessible.
        unsafe {
            gather_block_dispatch::<S, MAXB>(
                s,
                nb,
                y.add(col0),
                cols,
                w.add(col0),
                w_rs,
                idx,
                vals,
            );
        }
        v0 += nb;
    }
}

/// How many entries ahead [`gather_block`] prefetches W rows (measured: 1, 2 and 4 perform
/// alike, none is 10–20 % slower when W is not in L1).
const PREFETCH_ROWS: usize = 2;

/// Calls `gather_block::<NB>` for a runtime `nb <= MAXB <= 28` (arms above `MAXB` fold away).
///
/// # Safety
/// As [`gather_block`].
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "a plain forwarding shim")]
unsafe fn gather_block_dispatch<S: Simd, const MAXB: usize>(
    s: S,
    nb: usize,
    y: *mut f32,
    cols: usize,
    w: *const f32,
    w_rs: usize,
    idx: &[u32],
    vals: &[f32],
) {
    macro_rules! arms {
        ($($n:literal)*) => {
            match nb {
                $($n if $n <= MAXB => gather_block::<S, $n>(s, y, cols, w, w_rs, idx, vals),)*
                _ => unreachable!("gather block of {nb} vectors"),
            }
        };
    }
    // SAFETY: forwarded contract.
    unsafe { arms!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28) }
}

/// One register block of [`gather_axpy`]: `NB` vectors, the last one possibly partial.
///
/// # Safety
/// `y..y+cols` writable, `(NB-1)·LANES < cols <= NB·LANES`, every indexed W row readable for
/// `cols` values.
#[inline(always)]
#[allow(
    clippy::needless_range_loop,
    reason = "the index addresses the register array and the memory row together"
)]
unsafe fn gather_block<S: Simd, const NB: usize>(
    s: S,
    y: *mut f32,
    cols: usize,
    w: *const f32,
    w_rs: usize,
    idx: &[u32],
    vals: &[f32],
) {
    let l = S::LANES;
    let tail = cols - (NB - 1) * l;
    let mut acc = [s.zero(); NB];
    for v in 0..NB - 1 {
        // SAFETY: vector v < NB-1 lies inside y's `cols` values.
        acc[v] = unsafe { s.load(y.add(v * l)) };
    }
    // SAFETY: the last vector covers `tail` values of y.
    acc[NB - 1] = unsafe {
        if tail == l {
            s.load(y.add((NB - 1) * l))
        } else {
            s.load_part(y.add((NB - 1) * l), tail)
        }
    };
    let nk = idx.len().min(vals.len());
    if tail == l {
        for k in 0..nk {
            // SAFETY: `k < nk` bounds both slices; row idx[k] is readable for `cols` values.
            unsafe {
                // The rows are scattered, so no hardware prefetcher predicts the next one:
                // request the row PREFETCH_ROWS entries ahead while this one streams in.
                if k + PREFETCH_ROWS < nk {
                    let ahead = *idx.get_unchecked(k + PREFETCH_ROWS) as usize;
                    let next = w.wrapping_add(ahead * w_rs);
                    for v in 0..NB {
                        s.prefetch(next.wrapping_add(v * l));
                    }
                }
                let c = s.splat(*vals.get_unchecked(k));
                let row = w.add(*idx.get_unchecked(k) as usize * w_rs);
                for v in 0..NB {
                    acc[v] = s.fma(c, s.load(row.add(v * l)), acc[v]);
                }
            }
        }
    } else {
        for k in 0..nk {
            // SAFETY: as above; the last vector reads only `tail` values.
            unsafe {
                let c = s.splat(*vals.get_unchecked(k));
                let row = w.add(*idx.get_unchecked(k) as usize * w_rs);
                for v in 0..NB - 1 {
                    acc[v] = s.fma(c, s.load(row.add(v * l)), acc[v]);
                }
                let last = s.load_part(row.add((NB - 1) * l), tail);
                acc[NB - 1] = s.fma(c, last, acc[NB - 1]);
            }
        }
    }
    for v in 0..NB - 1 {
        // SAFETY: as for the loads of y above.
        unsafe { s.store(y.add(v * l), acc[v]) };
    }
    // SAFETY: as for the last load of y.
    unsafe {
        if tail == l {
            s.store(y.add((NB - 1) * l), acc[NB - 1]);
        } else {
            s.store_part(y.add((NB - 1) * l), acc[NB - 1], tail);
        }
    }
}

/// `out[a] = W[rows[a], ..n] · x[..n]`.
///
/// # Safety
/// Every `w + rows[a]*w_rs .. + n` readable, `x.len() >= n`, `out.len() >= rows.len()`.
#[inline(always)]
pub(crate) unsafe fn gather_dots<S: Simd>(
    s: S,
    out: &mut [f32],
    w: *const f32,
    w_rs: usize,
    n: usize,
    rows: &[u32],
    x: &[f32],
) {
    // Naive algorithm:
    //   for a in 0..rows.len() { out[a] = Σ_j W[rows[a]][j] * x[j] }
    // Optimised: 4 rows at a time share each load of x; 2 partial sums per row give 8
    // independent FMA chains; the sums are reduced once per row.
    let mut a = 0;
    while a + 4 <= rows.len() {
        // SAFETY: forwarded contract for rows a..a+4.
        let r = unsafe { dots_group::<S, 4, 2>(s, w, w_rs, n, &rows[a..a + 4], x) };
        out[a..a + 4].copy_from_slice(&r);
        a += 4;
    }
    while a < rows.len() {
        // SAFETY: forwarded contract for row a.
        let r = unsafe { dots_group::<S, 1, 4>(s, w, w_rs, n, &rows[a..a + 1], x) };
        out[a] = r[0];
        a += 1;
    }
}

/// `G` dot products of selected W rows with x, `U` partial sums each.
///
/// # Safety
/// As [`gather_dots`], `rows.len() == G`.
#[inline(always)]
#[allow(
    clippy::needless_range_loop,
    reason = "indices address several register arrays at once"
)]
unsafe fn dots_group<S: Simd, const G: usize, const U: usize>(
    s: S,
    w: *const f32,
    w_rs: usize,
    n: usize,
    rows: &[u32],
    x: &[f32],
) -> [f32; G] {
    let l = S::LANES;
    let mut ptrs = [w; G];
    for g in 0..G {
        // SAFETY: row rows[g] is readable (contract).
        ptrs[g] = unsafe { w.add(rows[g] as usize * w_rs) };
    }
    let xp = x.as_ptr();
    let mut acc = [[s.zero(); U]; G];
    let mut j = 0;
    while j + U * l <= n {
        for u in 0..U {
            // SAFETY: `j + (u+1)·LANES <= n` values of x and of each row are readable.
            unsafe {
                let xv = s.load(xp.add(j + u * l));
                for g in 0..G {
                    acc[g][u] = s.fma(s.load(ptrs[g].add(j + u * l)), xv, acc[g][u]);
                }
            }
        }
        j += U * l;
    }
    while j < n {
        let m = l.min(n - j);
        // SAFETY: only `j..j+m <= n` is read.
        unsafe {
            let xv = if m == l {
                s.load(xp.add(j))
            } else {
                s.load_part(xp.add(j), m)
            };
            for g in 0..G {
                let wv = if m == l {
                    s.load(ptrs[g].add(j))
                } else {
                    s.load_part(ptrs[g].add(j), m)
                };
                acc[g][0] = s.fma(wv, xv, acc[g][0]);
            }
        }
        j += m;
    }
    let mut out = [0.0; G];
    for g in 0..G {
        let mut t = acc[g][0];
        for u in 1..U {
            t = s.add(t, acc[g][u]);
        }
        out[g] = s.reduce_sum(t);
    }
    out
}

/// `y[..n] += c · x[..n]` (vector body shared by `axpy` and `rank1_rows`).
///
/// # Safety
/// `y..y+n` writable and `x..x+n` readable.
#[inline(always)]
unsafe fn axpy_raw<S: Simd>(s: S, y: *mut f32, c: f32, x: *const f32, n: usize) {
    // Naive algorithm: for j in 0..n { y[j] += c * x[j] }
    let l = S::LANES;
    let cv = s.splat(c);
    let mut j = 0;
    while j + 2 * l <= n {
        // SAFETY: `j + 2·LANES <= n`.
        unsafe {
            let y0 = s.fma(cv, s.load(x.add(j)), s.load(y.add(j)));
            let y1 = s.fma(cv, s.load(x.add(j + l)), s.load(y.add(j + l)));
            s.store(y.add(j), y0);
            s.store(y.add(j + l), y1);
        }
        j += 2 * l;
    }
    while j < n {
        let m = l.min(n - j);
        // SAFETY: only `j..j+m <= n` is accessed.
        unsafe {
            if m == l {
                s.store(y.add(j), s.fma(cv, s.load(x.add(j)), s.load(y.add(j))));
            } else {
                let v = s.fma(cv, s.load_part(x.add(j), m), s.load_part(y.add(j), m));
                s.store_part(y.add(j), v, m);
            }
        }
        j += m;
    }
}

/// `G[rows[a], ..n] += scale · row_vals[a] · x[..n]`.
///
/// # Safety
/// Every `g + rows[a]*g_rs .. + n` writable; `x.len() >= n`; `row_vals.len() >= rows.len()`.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "mirrors the public method")]
pub(crate) unsafe fn rank1_rows<S: Simd>(
    s: S,
    g: *mut f32,
    g_rs: usize,
    n: usize,
    rows: &[u32],
    row_vals: &[f32],
    x: &[f32],
    scale: f32,
) {
    // Naive algorithm:
    //   for a in 0..rows.len() { for j in 0..n { G[rows[a]][j] += scale*row_vals[a]*x[j] } }
    // Optimised: one vector axpy per selected row; x stays in L1 across rows.
    for (&r, &v) in rows.iter().zip(row_vals) {
        // SAFETY: row r is writable for n values, x readable for n (contract).
        unsafe { axpy_raw(s, g.add(r as usize * g_rs), scale * v, x.as_ptr(), n) };
    }
}

/// `G[rows[a], cols[b]] += scale · row_vals[a] · col_vals[b]`.
///
/// Scalar for every ISA: scattered columns give each store its own cache line, and AVX-512
/// scatters neither beat scalar stores on current Intel cores nor accumulate duplicate indices.
///
/// # Safety
/// Every `g + rows[a]*g_rs + cols[b]*g_cs` writable.
#[allow(clippy::too_many_arguments, reason = "mirrors the public method")]
pub(crate) unsafe fn rank1_sparse(
    g: *mut f32,
    g_rs: usize,
    g_cs: usize,
    rows: &[u32],
    row_vals: &[f32],
    cols: &[u32],
    col_vals: &[f32],
    scale: f32,
) {
    // Naive algorithm (also the optimised one, see above):
    //   for a, b: G[rows[a]][cols[b]] += scale * row_vals[a] * col_vals[b]
    for (&r, &rv) in rows.iter().zip(row_vals) {
        let c = scale * rv;
        // SAFETY: row r is addressed by the contract.
        let row = unsafe { g.add(r as usize * g_rs) };
        for (&j, &cv) in cols.iter().zip(col_vals) {
            // SAFETY: element (r, j) is addressed by the contract.
            unsafe { *row.add(j as usize * g_cs) += c * cv };
        }
    }
}

/// `z = relu(u (+ acc))` over `n` values, writing the active indices; `FUSED` adds `acc`.
///
/// # Safety
/// `u..u+n` readable (and `acc..acc+n` when `FUSED`); `z` and `active` hold `n` values;
/// `n <= u32::MAX`.
#[inline(always)]
unsafe fn relu_core<S: Simd, const FUSED: bool>(
    s: S,
    n: usize,
    u: *const f32,
    acc: *const f32,
    z: &mut [f32],
    active: &mut [u32],
) -> usize {
    let l = S::LANES;
    let zp = z.as_mut_ptr();
    let ap = active.as_mut_ptr();
    let mut cnt = 0;
    let mut i = 0;
    while i < n {
        let m = l.min(n - i);
        // SAFETY: `i + m <= n`: reads stay inside u (and acc); z gets `m` values; `cnt` plus
        // the popcount stays `<= i + m <= n <= active.len()` because each lane contributes at
        // most one index. Partial vectors load zeros, which are never active.
        unsafe {
            let mut v = if m == l {
                s.load(u.add(i))
            } else {
                s.load_part(u.add(i), m)
            };
            if FUSED {
                let a = if m == l {
                    s.load(acc.add(i))
                } else {
                    s.load_part(acc.add(i), m)
                };
                v = s.add(v, a);
            }
            let (zv, mask) = s.relu_mask(v);
            if m == l {
                s.store(zp.add(i), zv);
            } else {
                s.store_part(zp.add(i), zv, m);
            }
            cnt += s.compress_indices(mask, i as u32, ap.add(cnt));
        }
        i += m;
    }
    cnt
}

/// `z = relu(a)`; active indices (`!(a <= 0)`) to `active`; returns their number.
///
/// # Safety
/// `z.len() >= a.len()`, `active.len() >= a.len()`, `a.len() <= u32::MAX`.
#[inline(always)]
pub(crate) unsafe fn relu_active<S: Simd>(
    s: S,
    a: &[f32],
    z: &mut [f32],
    active: &mut [u32],
) -> usize {
    // Naive algorithm:
    //   n = 0; for i { z[i] = if a[i] > 0 { active[n] = i; n += 1; a[i] } else { 0 } }
    // SAFETY: sizes per the contract.
    unsafe { relu_core::<S, false>(s, a.len(), a.as_ptr(), a.as_ptr(), z, active) }
}

/// `z = relu(u + acc)`; active indices to `active`; returns their number.
///
/// # Safety
/// `acc.len() >= u.len()`, `z.len() >= u.len()`, `active.len() >= u.len()`,
/// `u.len() <= u32::MAX`.
#[inline(always)]
pub(crate) unsafe fn bias_relu_active<S: Simd>(
    s: S,
    u: &[f32],
    acc: &[f32],
    z: &mut [f32],
    active: &mut [u32],
) -> usize {
    // Naive algorithm:
    //   n = 0; for i { t = u[i] + acc[i]; z[i] = if t > 0 { active[n] = i; n += 1; t } else { 0 } }
    // SAFETY: sizes per the contract.
    unsafe { relu_core::<S, true>(s, u.len(), u.as_ptr(), acc.as_ptr(), z, active) }
}

/// Compresses the non-zeros of `x` into `idx`/`val`; returns their number.
///
/// # Safety
/// `idx.len() >= x.len()`, `val.len() >= x.len()`, `x.len() <= u32::MAX`.
#[inline(always)]
pub(crate) unsafe fn nonzeros<S: Simd>(s: S, x: &[f32], idx: &mut [u32], val: &mut [f32]) -> usize {
    // Naive algorithm:
    //   n = 0; for i { if x[i] != 0 { idx[n] = i; val[n] = x[i]; n += 1 } }
    // Optimised: one compare per vector; AVX-512 compress-stores the selected lanes.
    let l = S::LANES;
    let xp = x.as_ptr();
    let ip = idx.as_mut_ptr();
    let vp = val.as_mut_ptr();
    let mut cnt = 0;
    let mut i = 0;
    while i < x.len() {
        let m = l.min(x.len() - i);
        // SAFETY: reads `i..i+m <= x.len()`; writes `cnt..cnt+popcount <= i+m <= len` of idx
        // and val (each lane adds at most one entry; padding lanes are zero, never selected).
        unsafe {
            let v = if m == l {
                s.load(xp.add(i))
            } else {
                s.load_part(xp.add(i), m)
            };
            let mask = s.nonzero_mask(v);
            s.compress_values(mask, v, vp.add(cnt));
            cnt += s.compress_indices(mask, i as u32, ip.add(cnt));
        }
        i += m;
    }
    cnt
}

/// `Σ x[j]·y[j]` over `n = min(len)`.
#[inline(always)]
pub(crate) fn dot<S: Simd>(s: S, x: &[f32], y: &[f32]) -> f32 {
    // Naive algorithm: Σ_j x[j] * y[j]; optimised with 4 independent vector accumulators.
    let n = x.len().min(y.len());
    let l = S::LANES;
    let (xp, yp) = (x.as_ptr(), y.as_ptr());
    let mut acc = [s.zero(); 4];
    let mut j = 0;
    while j + 4 * l <= n {
        for (u, a) in acc.iter_mut().enumerate() {
            // SAFETY: `j + 4·LANES <= n` values of both slices.
            *a = unsafe { s.fma(s.load(xp.add(j + u * l)), s.load(yp.add(j + u * l)), *a) };
        }
        j += 4 * l;
    }
    while j < n {
        let m = l.min(n - j);
        // SAFETY: reads `j..j+m <= n`.
        acc[0] = unsafe {
            if m == l {
                s.fma(s.load(xp.add(j)), s.load(yp.add(j)), acc[0])
            } else {
                s.fma(s.load_part(xp.add(j), m), s.load_part(yp.add(j), m), acc[0])
            }
        };
        j += m;
    }
    let t = s.add(s.add(acc[0], acc[1]), s.add(acc[2], acc[3]));
    s.reduce_sum(t)
}

/// `y += alpha·x` over `n = min(len)`.
#[inline(always)]
pub(crate) fn axpy<S: Simd>(s: S, y: &mut [f32], alpha: f32, x: &[f32]) {
    let n = x.len().min(y.len());
    // SAFETY: both slices hold at least `n` values.
    unsafe { axpy_raw(s, y.as_mut_ptr(), alpha, x.as_ptr(), n) }
}

/// `x *= alpha`.
#[inline(always)]
pub(crate) fn scale<S: Simd>(s: S, x: &mut [f32], alpha: f32) {
    // Naive algorithm: for j { x[j] *= alpha }
    let l = S::LANES;
    let n = x.len();
    let p = x.as_mut_ptr();
    let av = s.splat(alpha);
    let mut j = 0;
    while j < n {
        let m = l.min(n - j);
        // SAFETY: accesses `j..j+m <= n`.
        unsafe {
            if m == l {
                s.store(p.add(j), s.mul(av, s.load(p.add(j))));
            } else {
                s.store_part(p.add(j), s.mul(av, s.load_part(p.add(j), m)), m);
            }
        }
        j += m;
    }
}

/// Indices of the columns of the `k × n` matrix at `a` (row stride `a_rs`, columns contiguous)
/// that hold a non-zero (NaN included) in some row, ascending, into `idx`; returns their number.
///
/// # Safety
/// `a + p*a_rs .. + n` readable for every `p < k`; `idx..idx+n` writable; `n <= u32::MAX`.
#[inline(always)]
pub(crate) unsafe fn nonzero_columns<S: Simd>(
    s: S,
    k: usize,
    n: usize,
    a: *const f32,
    a_rs: usize,
    idx: *mut u32,
) -> usize {
    // Naive algorithm:
    //   c = 0; for j in 0..n { if (0..k).any(|p| A[p][j] != 0) { idx[c] = j; c += 1 } }
    // Optimised: one compare per vector of every row, the masks OR-ed, the survivors
    // compressed once per vector of columns.
    let l = S::LANES;
    let mut cnt = 0;
    let mut j = 0;
    while j < n {
        let m = l.min(n - j);
        let mut mask = 0u32;
        for p in 0..k {
            // SAFETY: row p's columns `j..j+m <= n` are readable (contract); a partial vector
            // loads zeros beyond them, which never set a bit.
            unsafe {
                let at = a.add(p * a_rs + j);
                let v = if m == l {
                    s.load(at)
                } else {
                    s.load_part(at, m)
                };
                mask |= s.nonzero_mask(v);
            }
        }
        // SAFETY: at most `m` indices, at `cnt <= j`, so they stay inside `idx..idx+n`.
        cnt += unsafe { s.compress_indices(mask, j as u32, idx.add(cnt)) };
        j += m;
    }
    cnt
}

/// Where [`gemm_tn_rows`] reads and writes: A(p, j) at `a + p*a_rs + j*a_cs`, B(p, ·) at
/// `b + p*b_rs`, C(j, ·) at `c + j*c_rs`, both rows contiguous and `n` wide, depth `k`.
#[derive(Clone, Copy)]
pub(crate) struct TnRows {
    pub alpha: f32,
    pub k: usize,
    pub n: usize,
    pub a: *const f32,
    pub a_rs: usize,
    pub a_cs: usize,
    pub b: *const f32,
    pub b_rs: usize,
    pub c: *mut f32,
    pub c_rs: usize,
}

/// `C(j, :) += α · Σ_p A(p, j) · B(p, :)` for every `j` in `rows`: the product `Aᵀ·B` on the
/// named rows of C alone, in register tiles of `R` rows × `NB` vectors.
///
/// # Safety
/// Every A(p, j), B(p, ·) and C(j, ·) addressed for `p < k`, `j` in `rows` is accessible
/// (C writable), C's rows do not overlap A or B, and `rows` holds no index twice.
#[inline(always)]
pub(crate) unsafe fn gemm_tn_rows<S: Simd, const R: usize, const NB: usize>(
    s: S,
    g: &TnRows,
    rows: &[u32],
) {
    // Naive algorithm:
    //   for j in rows { for q in 0..n { C[j][q] += α · Σ_p A[p][j] · B[p][q] } }
    // Optimised: R rows × NB vectors of C accumulate in registers over the depth; each depth
    // step loads NB vectors of B (L1-resident: k rows) and broadcasts one A value per row.
    let l = S::LANES;
    let nv = g.n.div_ceil(l);
    for group in rows.chunks(R) {
        let mut v0 = 0;
        while v0 < nv {
            let nb = NB.min(nv - v0);
            let cols = (nb * l).min(g.n - v0 * l);
            // SAFETY: the group's rows and columns `v0·LANES .. + cols <= n` are addressed.
            unsafe { rows_tile_dispatch::<S, R, NB>(s, g, group, v0 * l, nb, cols) };
            v0 += nb;
        }
    }
}

/// Calls `rows_tile::<RR, B>` for the runtime group size `rr <= R` and strip width `nb <= NB`.
///
/// # Safety
/// As [`rows_tile`].
#[inline(always)]
unsafe fn rows_tile_dispatch<S: Simd, const R: usize, const NB: usize>(
    s: S,
    g: &TnRows,
    group: &[u32],
    col0: usize,
    nb: usize,
    cols: usize,
) {
    macro_rules! strips {
        ($rr:literal) => {
            match nb {
                1 => rows_tile::<S, $rr, 1>(s, g, group, col0, cols),
                2 if NB >= 2 => rows_tile::<S, $rr, 2>(s, g, group, col0, cols),
                3 if NB >= 3 => rows_tile::<S, $rr, 3>(s, g, group, col0, cols),
                4 if NB >= 4 => rows_tile::<S, $rr, 4>(s, g, group, col0, cols),
                _ => unreachable!("strip of {nb} vectors exceeds {NB}"),
            }
        };
    }
    // SAFETY: forwarded contract, `group.len()` rows and `nb` vectors in every arm.
    unsafe {
        match group.len() {
            1 => strips!(1),
            2 if R >= 2 => strips!(2),
            3 if R >= 3 => strips!(3),
            4 if R >= 4 => strips!(4),
            rr => unreachable!("row group of {rr} exceeds {R}"),
        }
    }
}

/// One tile of [`gemm_tn_rows`]: the `RR` rows `group` × columns `col0 .. col0 + cols`
/// (`(NB-1)·LANES < cols <= NB·LANES`; the last vector partial when `cols` says so).
///
/// # Safety
/// As [`gemm_tn_rows`] for these rows and columns; `group.len() == RR`.
#[inline(always)]
#[allow(
    clippy::needless_range_loop,
    reason = "indices address the register tile, the row pointers and memory together"
)]
unsafe fn rows_tile<S: Simd, const RR: usize, const NB: usize>(
    s: S,
    g: &TnRows,
    group: &[u32],
    col0: usize,
    cols: usize,
) {
    let l = S::LANES;
    let tail = cols - (NB - 1) * l;
    let a_col: [*const f32; RR] =
        std::array::from_fn(|i| g.a.wrapping_add(group[i] as usize * g.a_cs));
    let c_row: [*mut f32; RR] =
        std::array::from_fn(|i| g.c.wrapping_add(group[i] as usize * g.c_rs + col0));
    let mut acc = [[s.zero(); NB]; RR];
    for p in 0..g.k {
        let b_row = g.b.wrapping_add(p * g.b_rs + col0);
        let mut bv = [s.zero(); NB];
        for v in 0..NB {
            // SAFETY: B's row p is readable for `cols` values from col0 (contract); the last
            // vector reads only `tail` of them.
            bv[v] = unsafe {
                if v + 1 < NB || tail == l {
                    s.load(b_row.add(v * l))
                } else {
                    s.load_part(b_row.add(v * l), tail)
                }
            };
        }
        for i in 0..RR {
            // SAFETY: A(p, group[i]) is readable (contract).
            let av = unsafe { s.broadcast(a_col[i].add(p * g.a_rs)) };
            for v in 0..NB {
                acc[i][v] = s.fma(av, bv[v], acc[i][v]);
            }
        }
    }
    let va = s.splat(g.alpha);
    for i in 0..RR {
        for v in 0..NB {
            // SAFETY: C's row group[i] is writable for `cols` values from col0 (contract);
            // the last vector touches only `tail` of them.
            unsafe {
                let at = c_row[i].add(v * l);
                if v + 1 < NB || tail == l {
                    s.store(at, s.fma(va, acc[i][v], s.load(at)));
                } else {
                    s.store_part(at, s.fma(va, acc[i][v], s.load_part(at, tail)), tail);
                }
            }
        }
    }
}
