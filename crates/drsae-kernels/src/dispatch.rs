//! Per-ISA entry points: each generic kernel instantiated inside a `#[target_feature]` function.
//!
//! The generic bodies (`crate::gemm`, `crate::sparse`) are `#[inline(always)]`, so instantiating
//! them here compiles every intrinsic with the features the token proves. Tile shapes per ISA:
//!
//! - AVX-512F, 12 × 32: 24 zmm accumulators (12 rows × 2 vectors) + 2 zmm of B + 1 broadcast =
//!   27 of the 32 zmm registers. Two FMA ports × 4-cycle latency need ≥ 8 independent
//!   accumulators; 24 leave slack, and 2 B loads + 12 broadcasts per 24 FMAs (12 cycles) stay
//!   well inside two loads per cycle. Dot tile 5 × 4 (20 accumulators + 5 + 1; a 4 × 6 tile
//!   spilled).
//! - AVX2+FMA, 6 × 16: 12 ymm accumulators + 2 B + 1 broadcast = 15 of 16 ymm; 12 ≥ 8 chains.
//!   Dot tile 2 × 4.
//! - Portable `wide::f32x8`, 4 × 16: 8 accumulators (on x86_64 without AVX each is two xmm).
//!   Dot tile 2 × 2.
//!
//! `tn = R x NB` is the tile of the row-selected `Aᵀ·B` (`crate::sparse::gemm_tn_rows`): R rows
//! × NB vectors of accumulators, NB vectors of B and one broadcast in registers (AVX-512
//! 16 + 4 + 1 zmm, AVX2 9 + 3 + 1 ymm, portable 4 + 2 + 1 vectors), each depth step NB loads
//! and R broadcasts for R·NB FMAs.

use crate::gemm::GemmArgs;
use crate::sparse;

/// Generates the entry points of one ISA. `$($attr)*` carries its `#[target_feature]`.
macro_rules! entry_points {
    (
        $(#[$attr:meta])*
        mod $name:ident: $tok:ty, mr = $mr:literal, nv = $nv:literal, dri = $dri:literal,
        drj = $drj:literal, gather = $gb:literal, tn = $tr:literal x $tv:literal
    ) => {
        /// Entry points of this ISA. Every function is `unsafe`: the caller must pass a token
        /// (which proves the CPU features) and arguments meeting the generic body's contract.
        pub(crate) mod $name {
            use super::*;

            /// # Safety
            /// See `crate::gemm::gemm`.
            $(#[$attr])*
            pub(crate) unsafe fn gemm(s: $tok, g: &GemmArgs) {
                // SAFETY: forwarded contract; the tile constants meet its requirements.
                unsafe { crate::gemm::gemm::<$tok, $mr, $nv, $dri, $drj, $gb>(s, g) }
            }

            /// # Safety
            /// See `crate::gemm::gemm_depth_subset`.
            $(#[$attr])*
            pub(crate) unsafe fn gemm_depth_subset(s: $tok, g: &GemmArgs) {
                // SAFETY: forwarded contract; the tile constants meet its requirements.
                unsafe { crate::gemm::gemm_depth_subset::<$tok, $mr, $nv, $gb>(s, g) }
            }

            /// # Safety
            /// See `crate::transpose::transpose`.
            $(#[$attr])*
            pub(crate) unsafe fn transpose(
                s: $tok,
                rows: usize,
                cols: usize,
                src: *const f32,
                src_rs: usize,
                dst: *mut f32,
                dst_rs: usize,
            ) {
                // SAFETY: forwarded contract.
                unsafe { crate::transpose::transpose(s, rows, cols, src, src_rs, dst, dst_rs) }
            }

            /// # Safety
            /// See `crate::sparse::gather_axpy`.
            $(#[$attr])*
            pub(crate) unsafe fn gather_axpy(
                s: $tok,
                y: *mut f32,
                n: usize,
                w: *const f32,
                w_rs: usize,
                idx: &[u32],
                vals: &[f32],
            ) {
                // SAFETY: forwarded contract.
                unsafe { sparse::gather_axpy::<$tok, $gb>(s, y, n, w, w_rs, idx, vals) }
            }

            /// One `gather_axpy` per row of `x` into the rows of Y.
            ///
            /// # Safety
            /// Y rows `y + r*y_rs .. + n` writable for `r < x.rows()`; W rows `< x.cols()`
            /// readable for `n` values.
            $(#[$attr])*
            pub(crate) unsafe fn sparse_gemm(
                s: $tok,
                x: &crate::SparseRows,
                w: *const f32,
                w_rs: usize,
                y: *mut f32,
                y_rs: usize,
                n: usize,
            ) {
                for r in 0..x.rows() {
                    let (idx, vals) = x.row(r);
                    // SAFETY: the SparseRows invariant keeps every index `< x.cols()`, a
                    // readable W row; row r of Y is writable (contract).
                    unsafe {
                        sparse::gather_axpy::<$tok, $gb>(s, y.add(r * y_rs), n, w, w_rs, idx, vals)
                    }
                }
            }

            /// # Safety
            /// See `crate::sparse::gather_dots`.
            $(#[$attr])*
            pub(crate) unsafe fn gather_dots(
                s: $tok,
                out: &mut [f32],
                w: *const f32,
                w_rs: usize,
                n: usize,
                rows: &[u32],
                x: &[f32],
            ) {
                // SAFETY: forwarded contract.
                unsafe { sparse::gather_dots(s, out, w, w_rs, n, rows, x) }
            }

            /// # Safety
            /// See `crate::sparse::rank1_rows`.
            $(#[$attr])*
            #[allow(clippy::too_many_arguments, reason = "mirrors the public method")]
            pub(crate) unsafe fn rank1_rows(
                s: $tok,
                g: *mut f32,
                g_rs: usize,
                n: usize,
                rows: &[u32],
                row_vals: &[f32],
                x: &[f32],
                scale: f32,
            ) {
                // SAFETY: forwarded contract.
                unsafe { sparse::rank1_rows(s, g, g_rs, n, rows, row_vals, x, scale) }
            }

            /// # Safety
            /// See `crate::sparse::gemm_tn_rows`.
            $(#[$attr])*
            pub(crate) unsafe fn gemm_tn_rows(s: $tok, g: &sparse::TnRows, rows: &[u32]) {
                // SAFETY: forwarded contract; the tile fits the dispatch's limits (4 × 4).
                unsafe { sparse::gemm_tn_rows::<$tok, $tr, $tv>(s, g, rows) }
            }

            /// # Safety
            /// See `crate::sparse::nonzero_columns`.
            $(#[$attr])*
            pub(crate) unsafe fn nonzero_columns(
                s: $tok,
                k: usize,
                n: usize,
                a: *const f32,
                a_rs: usize,
                idx: *mut u32,
            ) -> usize {
                // SAFETY: forwarded contract.
                unsafe { sparse::nonzero_columns(s, k, n, a, a_rs, idx) }
            }

            /// # Safety
            /// See `crate::sparse::relu_active`.
            $(#[$attr])*
            pub(crate) unsafe fn relu_active(
                s: $tok,
                a: &[f32],
                z: &mut [f32],
                active: &mut [u32],
            ) -> usize {
                // SAFETY: forwarded contract.
                unsafe { sparse::relu_active(s, a, z, active) }
            }

            /// # Safety
            /// See `crate::sparse::bias_relu_active`.
            $(#[$attr])*
            pub(crate) unsafe fn bias_relu_active(
                s: $tok,
                u: &[f32],
                acc: &[f32],
                z: &mut [f32],
                active: &mut [u32],
            ) -> usize {
                // SAFETY: forwarded contract.
                unsafe { sparse::bias_relu_active(s, u, acc, z, active) }
            }

            /// # Safety
            /// See `crate::sparse::nonzeros`.
            $(#[$attr])*
            pub(crate) unsafe fn nonzeros(
                s: $tok,
                x: &[f32],
                idx: &mut [u32],
                val: &mut [f32],
            ) -> usize {
                // SAFETY: forwarded contract.
                unsafe { sparse::nonzeros(s, x, idx, val) }
            }

            /// # Safety
            /// The token's features only (the body is safe).
            $(#[$attr])*
            pub(crate) unsafe fn dot(s: $tok, x: &[f32], y: &[f32]) -> f32 {
                sparse::dot(s, x, y)
            }

            /// # Safety
            /// The token's features only (the body is safe).
            $(#[$attr])*
            pub(crate) unsafe fn axpy(s: $tok, y: &mut [f32], alpha: f32, x: &[f32]) {
                sparse::axpy(s, y, alpha, x)
            }

            /// # Safety
            /// The token's features only (the body is safe).
            $(#[$attr])*
            pub(crate) unsafe fn scale(s: $tok, x: &mut [f32], alpha: f32) {
                sparse::scale(s, x, alpha)
            }
        }
    };
}

entry_points! {
    mod portable: crate::simd::portable::Portable, mr = 4, nv = 2, dri = 2, drj = 2, gather = 6,
    tn = 2 x 2
}

#[cfg(target_arch = "x86_64")]
entry_points! {
    #[target_feature(enable = "avx2,fma")]
    mod avx2: crate::simd::x86::Avx2, mr = 6, nv = 2, dri = 2, drj = 4, gather = 12,
    tn = 3 x 3
}

#[cfg(target_arch = "x86_64")]
entry_points! {
    #[target_feature(enable = "avx512f,avx2,fma")]
    mod avx512: crate::simd::x86::Avx512, mr = 12, nv = 2, dri = 5, drj = 4, gather = 28,
    tn = 4 x 4
}
