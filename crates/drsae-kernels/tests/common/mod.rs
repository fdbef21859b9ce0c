//! Shared test helpers: seeded random strided matrices, NaN poison, and f64 references.
#![allow(
    dead_code,
    reason = "each test file uses a different subset of the helpers"
)]

use drsae_kernels::{Kernels, MatMut, MatRef};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A NaN with a recognisable payload, written wherever a kernel must neither read nor write.
pub const POISON: f32 = f32::from_bits(0x7fc0_1234);

/// Seeded generator.
pub fn rng(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

/// Uniform values in [-1, 1).
pub fn random_vec(rng: &mut Xoshiro256PlusPlus, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Every ISA this machine can run.
pub fn all_kernels() -> Vec<Kernels> {
    Kernels::available()
}

/// A matrix stored inside a larger buffer: offset `off`, padding between rows/columns, and
/// poison everywhere the view does not address.
#[derive(Clone, Debug)]
pub struct Strided {
    pub buf: Vec<f32>,
    pub off: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Strided {
    /// `rows × cols` values from `fill`, row-major (`col_major = false`, row stride
    /// `cols + pad`) or column-major (column stride `rows + pad`), starting at `off`.
    pub fn new(
        rows: usize,
        cols: usize,
        col_major: bool,
        pad: usize,
        off: usize,
        mut fill: impl FnMut(usize, usize) -> f32,
    ) -> Strided {
        let (rs, cs) = if col_major {
            (1, rows + pad)
        } else {
            (cols + pad, 1)
        };
        let extent = if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        };
        let mut buf = vec![POISON; off + extent];
        for i in 0..rows {
            for j in 0..cols {
                buf[off + i * rs + j * cs] = fill(i, j);
            }
        }
        Strided {
            buf,
            off,
            rows,
            cols,
            rs,
            cs,
        }
    }

    pub fn random(
        rng: &mut Xoshiro256PlusPlus,
        rows: usize,
        cols: usize,
        col_major: bool,
        pad: usize,
        off: usize,
    ) -> Strided {
        Strided::new(rows, cols, col_major, pad, off, |_, _| {
            rng.random_range(-1.0f32..1.0)
        })
    }

    pub fn view(&self) -> MatRef<'_> {
        MatRef::new(
            &self.buf[self.off..],
            self.rows,
            self.cols,
            self.rs,
            self.cs,
        )
        .unwrap()
    }

    pub fn view_mut(&mut self) -> MatMut<'_> {
        MatMut::new(
            &mut self.buf[self.off..],
            self.rows,
            self.cols,
            self.rs,
            self.cs,
        )
        .unwrap()
    }

    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.buf[self.off + i * self.rs + j * self.cs]
    }

    /// Positions outside the view whose bits are no longer the poison's.
    pub fn touched_outside(&self) -> usize {
        let mut addressed = vec![false; self.buf.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                addressed[self.off + i * self.rs + j * self.cs] = true;
            }
        }
        self.buf
            .iter()
            .zip(&addressed)
            .filter(|&(x, &inside)| !inside && x.to_bits() != POISON.to_bits())
            .count()
    }
}

/// f64 reference of `α·A·B + β·C0` and the error scale `|α|·|A|·|B| + |β|·|C0|` per element.
pub fn reference_gemm(
    alpha: f32,
    a: &MatRef<'_>,
    b: &MatRef<'_>,
    beta: f32,
    c0: Option<&Strided>,
) -> (Vec<f64>, Vec<f64>) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let mut r = vec![0.0f64; m * n];
    let mut s = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut acc, mut mag) = (0.0f64, 0.0f64);
            for p in 0..k {
                let x = f64::from(a.get(i, p).unwrap()) * f64::from(b.get(p, j).unwrap());
                acc += x;
                mag += x.abs();
            }
            let mut v = f64::from(alpha) * acc;
            let mut e = f64::from(alpha).abs() * mag;
            if beta != 0.0 {
                let c = f64::from(c0.unwrap().at(i, j));
                v += f64::from(beta) * c;
                e += (f64::from(beta) * c).abs();
            }
            r[i * n + j] = v;
            s[i * n + j] = e;
        }
    }
    (r, s)
}

/// Tolerance for a depth-`k` f32 product: `c0·(k+2)·ε·scale` plus a tiny absolute floor.
pub fn tolerance(k: usize, scale: f64) -> f64 {
    2.0 * (k as f64 + 2.0) * f64::from(f32::EPSILON) * scale + 1e-30
}
