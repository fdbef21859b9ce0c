//! Portable implementation of [`Simd`] on `wide::f32x8` (width fixed at compile time).

use super::Simd;
use wide::f32x8;

/// Token for the portable path; available on every CPU.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

impl Simd for Portable {
    type V = f32x8;
    const LANES: usize = 8;

    #[inline(always)]
    fn zero(self) -> f32x8 {
        f32x8::ZERO
    }
    #[inline(always)]
    fn splat(self, x: f32) -> f32x8 {
        f32x8::splat(x)
    }
    #[inline(always)]
    fn fma(self, a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn add(self, a: f32x8, b: f32x8) -> f32x8 {
        a + b
    }
    #[inline(always)]
    fn mul(self, a: f32x8, b: f32x8) -> f32x8 {
        a * b
    }
    #[inline(always)]
    fn reduce_sum(self, v: f32x8) -> f32 {
        v.reduce_add()
    }
    #[inline(always)]
    fn relu_mask(self, v: f32x8) -> (f32x8, u32) {
        // `!(v <= 0)` keeps NaN: the comparison is false for NaN lanes.
        let keep = !v.simd_le(f32x8::ZERO);
        (keep.select(v, f32x8::ZERO), keep.to_bitmask())
    }
    #[inline(always)]
    fn nonzero_mask(self, v: f32x8) -> u32 {
        v.simd_ne(f32x8::ZERO).to_bitmask()
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> f32x8 {
        // SAFETY: the caller guarantees 8 readable values; `read_unaligned` has no alignment need.
        f32x8::new(unsafe { p.cast::<[f32; 8]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: f32x8) {
        // SAFETY: the caller guarantees 8 writable values; `write_unaligned` has no alignment need.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v.to_array()) }
    }
    #[inline(always)]
    unsafe fn load_part(self, p: *const f32, n: usize) -> f32x8 {
        let mut lanes = [0.0f32; 8];
        // SAFETY: the caller guarantees `n < 8` readable values; `lanes` holds 8.
        unsafe { std::ptr::copy_nonoverlapping(p, lanes.as_mut_ptr(), n) };
        f32x8::new(lanes)
    }
    #[inline(always)]
    unsafe fn store_part(self, p: *mut f32, v: f32x8, n: usize) {
        let lanes = v.to_array();
        // SAFETY: the caller guarantees `n < 8` writable values; `lanes` holds 8.
        unsafe { std::ptr::copy_nonoverlapping(lanes.as_ptr(), p, n) };
    }
}
