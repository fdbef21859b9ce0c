//! The vector abstraction the generic kernels are written against, one implementation per ISA.
//!
//! Each implementation is a zero-sized token that can only be created once the CPU is known to
//! support its instructions (`Portable` always). The generic kernels are `#[inline(always)]`
//! and are instantiated inside `#[target_feature]` entry points (see `crate::dispatch`), so the
//! intrinsics behind these methods are compiled with the right features and inlined.

pub(crate) mod portable;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

/// Vector operations on `LANES` packed `f32`.
///
/// Arithmetic is safe (the token proves the instructions exist); memory access goes through raw
/// pointers and is `unsafe`.
pub(crate) trait Simd: Copy + Send + Sync + 'static {
    /// The register type.
    type V: Copy;
    /// Number of `f32` lanes in `V`.
    const LANES: usize;

    /// All lanes zero.
    fn zero(self) -> Self::V;
    /// All lanes `x`.
    fn splat(self, x: f32) -> Self::V;
    /// `a * b + c`, fused where the ISA has FMA.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b`.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b`.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// Sum of all lanes.
    fn reduce_sum(self, v: Self::V) -> f32;
    /// ReLU with an active mask: lanes `x` with `!(x <= 0)` (positive or NaN, so NaN
    /// propagates) are kept, others become `+0.0`; bit `l` of the mask is set for kept lanes.
    fn relu_mask(self, v: Self::V) -> (Self::V, u32);
    /// Bit `l` set where lane `l` is not `== 0.0` (NaN counts as non-zero).
    fn nonzero_mask(self, v: Self::V) -> u32;

    /// Loads `LANES` values.
    ///
    /// # Safety
    /// `p..p+LANES` must be readable.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// Stores `LANES` values.
    ///
    /// # Safety
    /// `p..p+LANES` must be writable.
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// Loads `n < LANES` values, the other lanes zero; reads nothing beyond `p+n`.
    ///
    /// # Safety
    /// `p..p+n` must be readable.
    unsafe fn load_part(self, p: *const f32, n: usize) -> Self::V;
    /// Stores the first `n < LANES` lanes; writes nothing beyond `p+n`.
    ///
    /// # Safety
    /// `p..p+n` must be writable.
    unsafe fn store_part(self, p: *mut f32, v: Self::V, n: usize);
    /// All lanes `*p` (on x86 folded into the FMA as an embedded broadcast).
    ///
    /// # Safety
    /// `p` must be readable.
    #[inline(always)]
    unsafe fn broadcast(self, p: *const f32) -> Self::V {
        // SAFETY: the caller guarantees `p` is readable.
        self.splat(unsafe { *p })
    }
    /// Transposes an `R × 8` block (`R` is 4 or 8): row `r` is 8 contiguous values at
    /// `src + r*src_rs`; for each `q < 8`, the `R` values `src[0][q], …, src[R-1][q]` are
    /// written contiguously at `dst + q*dst_rs`. Packing uses it for the operands stored
    /// across the direction the microkernel wants.
    ///
    /// # Safety
    /// The `R` source rows of 8 values must be readable, the 8 destination runs of `R` values
    /// writable.
    #[inline(always)]
    unsafe fn transpose_r8<const R: usize>(
        self,
        src: *const f32,
        src_rs: usize,
        dst: *mut f32,
        dst_rs: usize,
    ) {
        // Naive algorithm (also the portable implementation):
        for r in 0..R {
            for q in 0..8 {
                // SAFETY: `r < R`, `q < 8`: inside the source rows and destination runs.
                unsafe { *dst.add(q * dst_rs + r) = *src.add(r * src_rs + q) };
            }
        }
    }
    /// Hint that `p` will be read soon. Never faults.
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        let _ = p;
    }
    /// Hint that the cache line at `p` will be written soon (fetch it for ownership). Never
    /// faults.
    #[inline(always)]
    fn prefetch_write(self, p: *const f32) {
        let _ = p;
    }

    /// Writes `base + l` for each set bit `l` of `mask` (ascending) to `out`; returns the count.
    ///
    /// # Safety
    /// `out..out+popcount(mask)` must be writable.
    #[inline(always)]
    unsafe fn compress_indices(self, mask: u32, base: u32, out: *mut u32) -> usize {
        // Naive: for l in 0..LANES { if mask bit l { out[n] = base + l; n += 1 } }
        let mut m = mask;
        let mut n = 0;
        while m != 0 {
            // SAFETY: `n < popcount(mask)` because each iteration clears one set bit.
            unsafe { *out.add(n) = base + m.trailing_zeros() };
            n += 1;
            m &= m - 1;
        }
        n
    }
    /// Writes lane `l` of `v` for each set bit `l` of `mask` (ascending) to `out`.
    ///
    /// # Safety
    /// `out..out+popcount(mask)` must be writable.
    #[inline(always)]
    unsafe fn compress_values(self, mask: u32, v: Self::V, out: *mut f32) {
        let mut lanes = [0.0f32; 16];
        // SAFETY: `LANES <= 16` for every implementation, so the buffer holds one vector.
        unsafe { self.store(lanes.as_mut_ptr(), v) };
        let mut m = mask;
        let mut n = 0;
        while m != 0 {
            // SAFETY: `n < popcount(mask)` (one set bit cleared per iteration) and the lane index
            // `trailing_zeros < LANES <= 16`.
            unsafe { *out.add(n) = *lanes.get_unchecked(m.trailing_zeros() as usize) };
            n += 1;
            m &= m - 1;
        }
    }
}
