//! Packing: copies blocks of A and B into the contiguous panel layouts the microkernel streams.
//!
//! A block `mc × kc` becomes `⌈mc/MR⌉` panels, each `kc` groups of `MR` values (one column of
//! the panel per depth step). A block `kc × nc` of B becomes `⌈nc/NR⌉` panels, each `kc` rows
//! of `NR` values. Edge panels are zero-padded so the microkernel never needs a bounds check;
//! any strides (hence transposes) are handled here, once per block.

use crate::simd::Simd;

/// Packs the `mc × kc` block of A at `a` (element (i, p) at `a + i*rs + p*cs`) into `dst`.
///
/// # Safety
/// Every addressed element of A must be readable; `dst` must hold `⌈mc/MR⌉·MR·kc` values.
#[inline(always)]
pub(crate) unsafe fn pack_a<S: Simd, const MR: usize>(
    s: S,
    mc: usize,
    kc: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    dst: *mut f32,
) {
    // Naive algorithm: for p, i: dst[panel(i)][p][i % MR] = A[i][p], zero for padded rows.
    for (panel, i0) in (0..mc).step_by(MR).enumerate() {
        let r = MR.min(mc - i0);
        // SAFETY: panel `panel` starts at `panel·MR·kc < ⌈mc/MR⌉·MR·kc`.
        let d = unsafe { dst.add(panel * MR * kc) };
        if rs == 1 {
            // Column-major A (e.g. the transpose of a row-major matrix): each depth step is a
            // contiguous run of `r` values.
            for p in 0..kc {
                // SAFETY: A(i0..i0+r, p) are addressed elements (contiguous as `rs == 1`); the
                // destination group `p` of this panel has MR slots.
                unsafe {
                    if r == MR {
                        // A compile-time length: a few vector moves instead of a memcpy call.
                        let src = a.add(i0 + p * cs).cast::<[f32; MR]>();
                        d.add(p * MR)
                            .cast::<[f32; MR]>()
                            .write_unaligned(src.read_unaligned());
                    } else {
                        std::ptr::copy_nonoverlapping(a.add(i0 + p * cs), d.add(p * MR), r);
                        for i in r..MR {
                            *d.add(p * MR + i) = 0.0;
                        }
                    }
                }
            }
        } else if cs == 1 && r == MR {
            // Row-major A, full panel: transpose 8 × 8 (and 4 × 8) blocks in registers, so
            // both the reads along each row and the writes along each group stay contiguous.
            let mut p = 0;
            while p + 8 <= kc {
                let mut ib = 0;
                // SAFETY: rows i0+ib.. (< mc) have depth p..p+8 <= kc addressed; destination
                // groups p..p+8 of the panel have MR slots, of which ib..ib+R are written.
                unsafe {
                    while ib + 8 <= MR {
                        s.transpose_r8::<8>(a.add((i0 + ib) * rs + p), rs, d.add(p * MR + ib), MR);
                        ib += 8;
                    }
                    while ib + 4 <= MR {
                        s.transpose_r8::<4>(a.add((i0 + ib) * rs + p), rs, d.add(p * MR + ib), MR);
                        ib += 4;
                    }
                    for i in ib..MR {
                        for q in 0..8 {
                            *d.add((p + q) * MR + i) = *a.add((i0 + i) * rs + p + q);
                        }
                    }
                }
                p += 8;
            }
            for p in p..kc {
                for i in 0..MR {
                    // SAFETY: A(i0+i, p) is addressed; slot `p·MR + i` is in the panel.
                    unsafe { *d.add(p * MR + i) = *a.add((i0 + i) * rs + p) };
                }
            }
        } else {
            // General A: read each row along the depth, write with stride MR.
            for i in 0..r {
                // SAFETY: row `i0 + i < mc` of the block is addressed.
                let src = unsafe { a.add((i0 + i) * rs) };
                for p in 0..kc {
                    // SAFETY: `p < kc` addresses A(i0+i, p); slot `p·MR + i` is in the panel.
                    unsafe { *d.add(p * MR + i) = *src.add(p * cs) };
                }
            }
            for i in r..MR {
                for p in 0..kc {
                    // SAFETY: slot `p·MR + i` is inside the panel (`i < MR`, `p < kc`).
                    unsafe { *d.add(p * MR + i) = 0.0 };
                }
            }
        }
    }
}

/// Packs the `kc × nc` block of B at `b` (element (p, j) at `b + p*rs + j*cs`) into `dst`,
/// panels `NV·LANES` wide.
///
/// # Safety
/// Every addressed element of B must be readable; `dst` must hold `⌈nc/NR⌉·NR·kc` values.
#[inline(always)]
pub(crate) unsafe fn pack_b<S: Simd, const NV: usize>(
    s: S,
    kc: usize,
    nc: usize,
    b: *const f32,
    rs: usize,
    cs: usize,
    dst: *mut f32,
) {
    // Naive algorithm: for p, j: dst[panel(j)][p][j % NR] = B[p][j], zero for padded columns.
    let l = S::LANES;
    let nr = NV * l;
    for (panel, j0) in (0..nc).step_by(nr).enumerate() {
        let w = nr.min(nc - j0);
        // SAFETY: panel `panel` starts inside `dst` (see the contract).
        let d = unsafe { dst.add(panel * nr * kc) };
        if cs == 1 {
            // Row-major B: each depth step copies `w` contiguous values as vectors.
            for p in 0..kc {
                // SAFETY: row `p` of the block, columns j0..j0+w, are addressed elements.
                let src = unsafe { b.add(p * rs + j0) };
                // SAFETY: the destination row `p` of this panel has `nr` slots.
                let dp = unsafe { d.add(p * nr) };
                for v in 0..NV {
                    let j = v * l;
                    // SAFETY: full vectors read columns `< w`; a partial one reads `w - j` of
                    // them; all writes stay inside the `nr` slots of this row.
                    unsafe {
                        let x = if j + l <= w {
                            s.load(src.add(j))
                        } else if j < w {
                            s.load_part(src.add(j), w - j)
                        } else {
                            s.zero()
                        };
                        s.store(dp.add(j), x);
                    }
                }
            }
        } else if rs == 1 && w == nr {
            // Column-major B (the transpose of a row-major matrix), full panel: transpose
            // 8 × 8 blocks in registers so reads and writes stay contiguous.
            let mut p = 0;
            while p + 8 <= kc {
                for jb in (0..nr).step_by(8) {
                    // SAFETY: columns j0+jb..j0+jb+8 (< nc) at depths p..p+8 <= kc are
                    // addressed (contiguous along the depth as `rs == 1`); destination rows
                    // p..p+8 of the panel have nr slots.
                    unsafe {
                        s.transpose_r8::<8>(b.add((j0 + jb) * cs + p), cs, d.add(p * nr + jb), nr)
                    };
                }
                p += 8;
            }
            for p in p..kc {
                for j in 0..nr {
                    // SAFETY: B(p, j0+j) is addressed; slot `p·nr + j` is in the panel.
                    unsafe { *d.add(p * nr + j) = *b.add(p + (j0 + j) * cs) };
                }
            }
        } else {
            // General or column-major B: read each column along the depth, write with stride NR.
            for j in 0..w {
                // SAFETY: column `j0 + j < nc` of the block is addressed.
                let src = unsafe { b.add((j0 + j) * cs) };
                for p in 0..kc {
                    // SAFETY: B(p, j0+j) is addressed; slot `p·nr + j` is in the panel.
                    unsafe { *d.add(p * nr + j) = *src.add(p * rs) };
                }
            }
            for j in w..nr {
                for p in 0..kc {
                    // SAFETY: slot `p·nr + j` is inside the panel.
                    unsafe { *d.add(p * nr + j) = 0.0 };
                }
            }
        }
    }
}
