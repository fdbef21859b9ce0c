//! x86_64 implementations of [`Simd`]: AVX2+FMA on `__m256`, AVX-512F on `__m512`.
//!
//! The tokens have private fields and an `unsafe` constructor; `crate::Kernels::new` creates
//! them only after `is_x86_feature_detected!` confirmed the features, which is what makes the
//! intrinsic calls below sound.

use super::Simd;
use std::arch::x86_64::*;

/// Token proving the CPU supports AVX2 and FMA.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2(());

impl Avx2 {
    /// Whether this CPU can run the AVX2 path.
    pub(crate) fn detected() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    /// # Safety
    /// The CPU must support `avx2` and `fma` (see [`Avx2::detected`]).
    pub(crate) unsafe fn new_unchecked() -> Self {
        Avx2(())
    }
}

/// Token proving the CPU supports AVX-512F (and AVX2, FMA, which every AVX-512F CPU has).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512(());

impl Avx512 {
    /// Whether this CPU can run the AVX-512 path.
    pub(crate) fn detected() -> bool {
        is_x86_feature_detected!("avx512f") && Avx2::detected()
    }

    /// # Safety
    /// The CPU must support `avx512f`, `avx2` and `fma` (see [`Avx512::detected`]).
    pub(crate) unsafe fn new_unchecked() -> Self {
        Avx512(())
    }
}

/// Lane mask for the first `n` lanes of a `__m256` (all-ones lanes `< n`).
#[inline(always)]
fn avx2_prefix_mask(n: usize) -> __m256i {
    // SAFETY: `Avx2` callers only; these are AVX/AVX2 register operations, available because an
    // `Avx2` or `Avx512` token exists (both imply AVX2).
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    fn zero(self) -> __m256 {
        // SAFETY: the `Avx2` token exists only on CPUs with AVX2 (checked in `new_unchecked`'s
        // contract).
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        // SAFETY: the `Avx2` token proves AVX support.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the `Avx2` token proves FMA support.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the `Avx2` token proves AVX support.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the `Avx2` token proves AVX support.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn reduce_sum(self, v: __m256) -> f32 {
        // SAFETY: the `Avx2` token proves AVX (and thus SSE3) support.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    fn relu_mask(self, v: __m256) -> (__m256, u32) {
        // SAFETY: the `Avx2` token proves AVX support.
        unsafe {
            // NLE_UQ: "not less-or-equal", true for NaN, so NaN is kept and marked active.
            let keep = _mm256_cmp_ps::<_CMP_NLE_UQ>(v, _mm256_setzero_ps());
            (_mm256_and_ps(keep, v), _mm256_movemask_ps(keep) as u32)
        }
    }
    #[inline(always)]
    fn nonzero_mask(self, v: __m256) -> u32 {
        // SAFETY: the `Avx2` token proves AVX support.
        unsafe { _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(v, _mm256_setzero_ps())) as u32 }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable values; the token proves AVX support.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees 8 writable values; the token proves AVX support.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_part(self, p: *const f32, n: usize) -> __m256 {
        // SAFETY: masked-off lanes are not accessed (VMASKMOVPS never faults on them) and the
        // caller guarantees the first `n` are readable; the token proves AVX support.
        unsafe { _mm256_maskload_ps(p, avx2_prefix_mask(n)) }
    }
    #[inline(always)]
    unsafe fn store_part(self, p: *mut f32, v: __m256, n: usize) {
        // SAFETY: only the first `n` lanes are written, which the caller guarantees writable.
        unsafe { _mm256_maskstore_ps(p, avx2_prefix_mask(n), v) }
    }
    #[inline(always)]
    unsafe fn transpose_r8<const R: usize>(
        self,
        src: *const f32,
        src_rs: usize,
        dst: *mut f32,
        dst_rs: usize,
    ) {
        if R == 4 || R == 8 {
            // SAFETY: the token proves AVX; pointers per the caller's contract.
            unsafe { transpose_r8_avx::<R>(src, src_rs, dst, dst_rs) }
        } else {
            for r in 0..R {
                for q in 0..8 {
                    // SAFETY: `r < R`, `q < 8`: inside the caller's rows and runs.
                    unsafe { *dst.add(q * dst_rs + r) = *src.add(r * src_rs + q) };
                }
            }
        }
    }
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        // SAFETY: prefetch never faults, whatever the address; SSE is part of x86_64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[inline(always)]
    fn prefetch_write(self, p: *const f32) {
        // SAFETY: prefetch never faults, whatever the address (PREFETCHW; a NOP-like hint on
        // cores without it).
        unsafe { _mm_prefetch::<_MM_HINT_ET0>(p.cast()) }
    }
}

/// AVX `R × 8` transpose (`R` is 4 or 8) with unpack/shuffle/lane-permute steps; see
/// [`Simd::transpose_r8`].
///
/// # Safety
/// The CPU must support AVX; pointers as in [`Simd::transpose_r8`].
#[inline(always)]
unsafe fn transpose_r8_avx<const R: usize>(
    src: *const f32,
    src_rs: usize,
    dst: *mut f32,
    dst_rs: usize,
) {
    // SAFETY: the caller guarantees AVX and the R readable rows / 8 writable runs.
    unsafe {
        // Macros rather than closures: a closure would be compiled without the caller's
        // target features and could stay an out-of-line call.
        macro_rules! ld {
            ($r:expr) => {
                _mm256_loadu_ps(src.add($r * src_rs))
            };
        }
        macro_rules! st {
            ($q:expr, $v:expr) => {
                _mm256_storeu_ps(dst.add($q * dst_rs), $v)
            };
        }
        if R == 8 {
            let (r0, r1, r2, r3) = (ld!(0), ld!(1), ld!(2), ld!(3));
            let (r4, r5, r6, r7) = (ld!(4), ld!(5), ld!(6), ld!(7));
            let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
            let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
            let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
            let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
            let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            st!(0, _mm256_permute2f128_ps::<0x20>(s0, s4));
            st!(1, _mm256_permute2f128_ps::<0x20>(s1, s5));
            st!(2, _mm256_permute2f128_ps::<0x20>(s2, s6));
            st!(3, _mm256_permute2f128_ps::<0x20>(s3, s7));
            st!(4, _mm256_permute2f128_ps::<0x31>(s0, s4));
            st!(5, _mm256_permute2f128_ps::<0x31>(s1, s5));
            st!(6, _mm256_permute2f128_ps::<0x31>(s2, s6));
            st!(7, _mm256_permute2f128_ps::<0x31>(s3, s7));
        } else {
            debug_assert_eq!(R, 4);
            let (r0, r1, r2, r3) = (ld!(0), ld!(1), ld!(2), ld!(3));
            let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
            let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
            // Each s holds column q in its low lane and column q + 4 in its high lane.
            let s = [
                _mm256_shuffle_ps::<0x44>(t0, t2),
                _mm256_shuffle_ps::<0xEE>(t0, t2),
                _mm256_shuffle_ps::<0x44>(t1, t3),
                _mm256_shuffle_ps::<0xEE>(t1, t3),
            ];
            for (q, v) in s.into_iter().enumerate() {
                _mm_storeu_ps(dst.add(q * dst_rs), _mm256_castps256_ps128(v));
                _mm_storeu_ps(dst.add((q + 4) * dst_rs), _mm256_extractf128_ps::<1>(v));
            }
        }
    }
}

/// `__mmask16` with the low `n` bits set (`n <= 16`).
#[inline(always)]
fn prefix16(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    fn zero(self) -> __m512 {
        // SAFETY: the `Avx512` token proves AVX-512F support.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        // SAFETY: the `Avx512` token proves AVX-512F support.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the `Avx512` token proves AVX-512F support.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the `Avx512` token proves AVX-512F support.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the `Avx512` token proves AVX-512F support.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn reduce_sum(self, v: __m512) -> f32 {
        // SAFETY: the `Avx512` token proves AVX-512F support.
        unsafe { _mm512_reduce_add_ps(v) }
    }
    #[inline(always)]
    fn relu_mask(self, v: __m512) -> (__m512, u32) {
        // SAFETY: the `Avx512` token proves AVX-512F support.
        unsafe {
            // NLE_UQ: "not less-or-equal", true for NaN, so NaN is kept and marked active.
            let keep = _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(v, _mm512_setzero_ps());
            (_mm512_maskz_mov_ps(keep, v), u32::from(keep))
        }
    }
    #[inline(always)]
    fn nonzero_mask(self, v: __m512) -> u32 {
        // SAFETY: the `Avx512` token proves AVX-512F support.
        unsafe { u32::from(_mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(v, _mm512_setzero_ps())) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable values; the token proves AVX-512F support.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees 16 writable values; the token proves AVX-512F support.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_part(self, p: *const f32, n: usize) -> __m512 {
        // SAFETY: masked-off lanes are not accessed (fault suppression) and the caller
        // guarantees the first `n` are readable; the token proves AVX-512F support.
        unsafe { _mm512_maskz_loadu_ps(prefix16(n), p) }
    }
    #[inline(always)]
    unsafe fn store_part(self, p: *mut f32, v: __m512, n: usize) {
        // SAFETY: only the first `n` lanes are written, which the caller guarantees writable.
        unsafe { _mm512_mask_storeu_ps(p, prefix16(n), v) }
    }
    #[inline(always)]
    unsafe fn transpose_r8<const R: usize>(
        self,
        src: *const f32,
        src_rs: usize,
        dst: *mut f32,
        dst_rs: usize,
    ) {
        if R == 4 || R == 8 {
            // SAFETY: the token proves AVX; pointers per the caller's contract.
            unsafe { transpose_r8_avx::<R>(src, src_rs, dst, dst_rs) }
        } else {
            for r in 0..R {
                for q in 0..8 {
                    // SAFETY: `r < R`, `q < 8`: inside the caller's rows and runs.
                    unsafe { *dst.add(q * dst_rs + r) = *src.add(r * src_rs + q) };
                }
            }
        }
    }
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        // SAFETY: prefetch never faults, whatever the address; SSE is part of x86_64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[inline(always)]
    fn prefetch_write(self, p: *const f32) {
        // SAFETY: prefetch never faults, whatever the address (PREFETCHW; a NOP-like hint on
        // cores without it).
        unsafe { _mm_prefetch::<_MM_HINT_ET0>(p.cast()) }
    }
    #[inline(always)]
    unsafe fn compress_indices(self, mask: u32, base: u32, out: *mut u32) -> usize {
        // Compress in a register, then store the first popcount lanes with a masked store: the
        // memory form of VPCOMPRESSD is microcoded and tens of cycles slower on some cores.
        let count = (mask & 0xffff).count_ones() as usize;
        // SAFETY: the masked store writes exactly `count` contiguous values, which the caller
        // guarantees writable; the token proves AVX-512F support.
        unsafe {
            let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            let ids = _mm512_add_epi32(_mm512_set1_epi32(base as i32), iota);
            let packed = _mm512_maskz_compress_epi32(mask as __mmask16, ids);
            _mm512_mask_storeu_epi32(out.cast(), prefix16(count), packed);
        }
        count
    }
    #[inline(always)]
    unsafe fn compress_values(self, mask: u32, v: __m512, out: *mut f32) {
        let count = (mask & 0xffff).count_ones() as usize;
        // SAFETY: as in `compress_indices`: exactly `count` values are written.
        unsafe {
            let packed = _mm512_maskz_compress_ps(mask as __mmask16, v);
            _mm512_mask_storeu_ps(out, prefix16(count), packed);
        }
    }
}
