//! Out-of-place transpose of row-major matrices, 8 × 8 blocks at a time in registers.

use crate::simd::Simd;

/// `dst[j][i] = src[i][j]` for `i < rows`, `j < cols`.
///
/// # Safety
/// `src + i*src_rs + j` readable and `dst + j*dst_rs + i` writable for every `i < rows`,
/// `j < cols`; the two regions do not overlap.
#[inline(always)]
pub(crate) unsafe fn transpose<S: Simd>(
    s: S,
    rows: usize,
    cols: usize,
    src: *const f32,
    src_rs: usize,
    dst: *mut f32,
    dst_rs: usize,
) {
    // Naive algorithm:
    //   for i in 0..rows { for j in 0..cols { dst[j][i] = src[i][j] } }
    // Optimised: whole 8 × 8 blocks through the registers (8 row loads, shuffles, 8 row
    // stores), so neither side is touched one strided element at a time; the ragged edges
    // element by element.
    let (full_i, full_j) = (rows / 8 * 8, cols / 8 * 8);
    for i0 in (0..full_i).step_by(8) {
        for j0 in (0..full_j).step_by(8) {
            // SAFETY: rows i0..i0+8 and columns j0..j0+8 are inside both matrices.
            unsafe {
                s.transpose_r8::<8>(
                    src.add(i0 * src_rs + j0),
                    src_rs,
                    dst.add(j0 * dst_rs + i0),
                    dst_rs,
                );
            }
        }
    }
    let edge = |i: usize, j: usize| {
        // SAFETY: `i < rows`, `j < cols` (the callers' ranges below).
        unsafe { *dst.add(j * dst_rs + i) = *src.add(i * src_rs + j) };
    };
    for i in 0..full_i {
        (full_j..cols).for_each(|j| edge(i, j));
    }
    for i in full_i..rows {
        (0..cols).for_each(|j| edge(i, j));
    }
}
