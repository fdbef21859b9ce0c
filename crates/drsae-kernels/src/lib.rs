//! SIMD linear algebra for drsae: dense GEMM with runtime ISA dispatch and sparsity-aware
//! products.
//!
//! Everything goes through a [`Kernels`] value, which exists only for an instruction set the
//! CPU supports ([`Kernels::new`] checks). [`kernels`] picks the best one once per process, or
//! the one named by `DRSAE_ISA=scalar|avx2|avx512` so a single machine can test every path.
//! Matrices are passed as checked strided views ([`MatRef`], [`MatMut`]); a transpose is a
//! view with swapped strides, so `A·Bᵀ` and `Aᵀ·B` need no copies.
//!
//! This crate knows nothing about neural networks and never starts threads unless asked to
//! through [`Parallelism`].
//!
//! ```
//! use drsae_kernels::{kernels, MatMut, MatRef};
//! let a = [1.0, 2.0, 3.0, 4.0]; // 2×2
//! let b = [1.0, 0.0, 0.0, 1.0];
//! let mut c = [f32::NAN; 4];
//! let k = kernels();
//! k.gemm(
//!     1.0,
//!     MatRef::row_major(&a, 2, 2).unwrap(),
//!     MatRef::row_major(&b, 2, 2).unwrap().t(),
//!     0.0, // β = 0: the NaNs in C are never read
//!     MatMut::row_major(&mut c, 2, 2).unwrap(),
//! );
//! assert_eq!(c, a);
//! ```

mod aligned;
mod dispatch;
mod gemm;
mod mat;
mod simd;
mod sparse;
mod transpose;

pub use aligned::AlignedVec;
pub use mat::{LayoutError, MatMut, MatRef};
pub use sparse::{SparseError, SparseRows};

use simd::portable::Portable;
#[cfg(target_arch = "x86_64")]
use simd::x86::{Avx2, Avx512};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// An instruction set the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable `wide::f32x8` code (named `scalar` in `DRSAE_ISA`); runs everywhere.
    Portable,
    /// x86_64 AVX2 + FMA, 256-bit vectors.
    Avx2,
    /// x86_64 AVX-512F, 512-bit vectors and mask registers.
    Avx512,
}

impl Isa {
    /// Every ISA, slowest first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The spelling used by `DRSAE_ISA` and in result files.
    pub fn as_str(self) -> &'static str {
        match self {
            Isa::Portable => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Isa {
    type Err = IsaError;
    fn from_str(s: &str) -> Result<Self, IsaError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "portable" => Ok(Isa::Portable),
            "avx2" => Ok(Isa::Avx2),
            "avx512" | "avx512f" => Ok(Isa::Avx512),
            _ => Err(IsaError::Unknown(s.to_string())),
        }
    }
}

/// Why the requested ISA cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IsaError {
    /// The name is not one of `scalar`, `avx2`, `avx512`.
    Unknown(String),
    /// This CPU (or target) lacks the instructions.
    Unavailable(Isa),
    /// `DRSAE_REQUIRE_ISA` asked for one ISA but the kernels in use are another.
    NotRequired {
        /// What `DRSAE_REQUIRE_ISA` asked for.
        required: Isa,
        /// What [`kernels`] chose.
        actual: Isa,
    },
}

impl fmt::Display for IsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsaError::Unknown(s) => write!(
                f,
                "unknown ISA {s:?}: expected one of scalar, avx2, avx512 (DRSAE_ISA)"
            ),
            IsaError::Unavailable(isa) => write!(
                f,
                "ISA {isa} was requested but this CPU does not support it; unset DRSAE_ISA or \
                 choose one of: {}",
                Kernels::available()
                    .iter()
                    .map(|k| k.isa().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            IsaError::NotRequired { required, actual } => write!(
                f,
                "DRSAE_REQUIRE_ISA={required} but the kernels in use are {actual}"
            ),
        }
    }
}

impl std::error::Error for IsaError {}

/// How many threads a kernel may use. Kernels never start threads on their own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parallelism {
    /// Run on the calling thread.
    #[default]
    None,
    /// Split the work into up to this many independent blocks run on the current rayon pool.
    Rayon(usize),
}

/// The token of the chosen ISA; its existence proves the CPU supports it.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Portable(Portable),
    #[cfg(target_arch = "x86_64")]
    Avx2(Avx2),
    #[cfg(target_arch = "x86_64")]
    Avx512(Avx512),
}

/// The kernels for one ISA. Constructible only through a capability check.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    backend: Backend,
}

/// Calls `dispatch::<isa>::$f(token, args…)` for the backend of `$self`.
macro_rules! dispatch {
    ($self:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $self.backend {
            Backend::Portable(t) => {
                // SAFETY: the portable path needs no CPU feature; the caller validated the
                // arguments against the entry point's contract just above.
                unsafe { dispatch::portable::$f(t, $($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(t) => {
                // SAFETY: an `Avx2` token exists only after `Avx2::detected()` returned true
                // (`Kernels::new`); the arguments were validated just above.
                unsafe { dispatch::avx2::$f(t, $($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512(t) => {
                // SAFETY: an `Avx512` token exists only after `Avx512::detected()` returned
                // true (`Kernels::new`); the arguments were validated just above.
                unsafe { dispatch::avx512::$f(t, $($arg),*) }
            }
        }
    };
}

const PORTABLE_NAME: &str = if cfg!(target_arch = "x86_64") {
    "x86_64-f32-portable-4x16"
} else if cfg!(target_arch = "aarch64") {
    "aarch64-f32-portable-4x16"
} else {
    "f32-portable-4x16"
};

impl Kernels {
    /// The kernels for `isa`, or `None` if this CPU cannot run them.
    pub fn new(isa: Isa) -> Option<Kernels> {
        let backend = match isa {
            Isa::Portable => Backend::Portable(Portable),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                if !Avx2::detected() {
                    return None;
                }
                // SAFETY: `Avx2::detected()` just confirmed avx2 and fma.
                Backend::Avx2(unsafe { Avx2::new_unchecked() })
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                if !Avx512::detected() {
                    return None;
                }
                // SAFETY: `Avx512::detected()` just confirmed avx512f, avx2 and fma.
                Backend::Avx512(unsafe { Avx512::new_unchecked() })
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => return None,
        };
        Some(Kernels { backend })
    }

    /// The fastest ISA this CPU supports.
    pub fn best() -> Kernels {
        Isa::ALL
            .iter()
            .rev()
            .find_map(|&isa| Kernels::new(isa))
            .expect("the portable kernels are always available")
    }

    /// Every ISA this CPU supports, slowest first (tests iterate over these).
    pub fn available() -> Vec<Kernels> {
        Isa::ALL
            .iter()
            .filter_map(|&isa| Kernels::new(isa))
            .collect()
    }

    /// The kernels named by `DRSAE_ISA` (unset or empty: [`Kernels::best`]).
    ///
    /// An unknown name or an ISA this CPU lacks is an error, never a silent fallback: a forced
    /// ISA is how tests reach each path, so quietly running another would hide a gap.
    pub fn from_env() -> Result<Kernels, IsaError> {
        match std::env::var("DRSAE_ISA") {
            Ok(v) if !v.trim().is_empty() && v.trim() != "auto" => {
                let isa: Isa = v.parse()?;
                Kernels::new(isa).ok_or(IsaError::Unavailable(isa))
            }
            _ => Ok(Kernels::best()),
        }
    }

    /// Which ISA these kernels use.
    pub fn isa(&self) -> Isa {
        match self.backend {
            Backend::Portable(_) => Isa::Portable,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(_) => Isa::Avx2,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512(_) => Isa::Avx512,
        }
    }

    /// A readable name recording the ISA and the GEMM register tile (`MR x NR`), e.g.
    /// `x86_64-f32-avx512-12x32`, for benches and result files.
    pub fn name(&self) -> &'static str {
        match self.backend {
            Backend::Portable(_) => PORTABLE_NAME,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2(_) => "x86_64-f32-avx2-6x16",
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512(_) => "x86_64-f32-avx512-12x32",
        }
    }

    /// `C ← α·A·B + β·C` for views with any strides (use `.t()` for transposes).
    ///
    /// With `β = 0`, C is written without being read (NaN or garbage in C does not leak);
    /// with `α = 0` or an empty depth, A and B are not read.
    ///
    /// # Panics
    /// If the dimensions disagree: `A` is `m × k`, `B` is `k × n`, `C` is `m × n`.
    pub fn gemm(&self, alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, mut c: MatMut<'_>) {
        let g = gemm_args("gemm", alpha, a, b, beta, &mut c);
        dispatch!(self, gemm(&g));
    }

    /// `C ← α·A(:, depth)·B(depth, :) + β·C`: the product over the depth steps `depth` lists
    /// (in that order; a repeated index counts twice), reading only those columns of A and
    /// rows of B. Equal to [`Kernels::gemm`] when A is zero outside those columns.
    ///
    /// DrSAE use: the recurrence `Z_t·Sᵀ`, its adjoint `DA_t·S` and the decoder `Z_T·Dᵀ` of a
    /// group of examples, over the units active in at least one of them: rows of the weights
    /// that no example needs are never read. With `β = 0` C is not read, as in `gemm`.
    ///
    /// # Panics
    /// If the dimensions disagree (`A` is `m × k`, `B` is `k × n`, `C` is `m × n`), B's rows
    /// are not contiguous, or an index is `>= k`.
    pub fn gemm_depth_subset(
        &self,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        depth: &[u32],
        beta: f32,
        mut c: MatMut<'_>,
    ) {
        let g = gemm_args("gemm_depth_subset", alpha, a, b, beta, &mut c);
        sparse::require_rows_contiguous(&b, "gemm_depth_subset");
        check_indices(depth, b.rows(), "gemm_depth_subset");
        // Rows of B are contiguous (checked; a single column may report any stride).
        let g = gemm::GemmArgs {
            k: depth.len(),
            b_cs: 1,
            kidx: depth.as_ptr(),
            ..g
        };
        dispatch!(self, gemm_depth_subset(&g));
    }

    /// [`Kernels::gemm`], split into up to `threads` independent blocks of C (column blocks
    /// when C is wider than tall, row blocks otherwise) run on the current rayon pool.
    ///
    /// # Panics
    /// As [`Kernels::gemm`].
    pub fn gemm_par(
        &self,
        par: Parallelism,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        beta: f32,
        c: MatMut<'_>,
    ) {
        let threads = match par {
            Parallelism::None => 1,
            Parallelism::Rayon(t) => t.max(1),
        };
        let (m, n) = (c.rows(), c.cols());
        // Blocks narrower than a couple of register tiles would waste the tile; 64 covers
        // every ISA's NR (and two AVX-512 tiles), 24 two AVX-512 MR.
        let by_cols = n >= m;
        let (extent, quantum) = if by_cols { (n, 64) } else { (m, 24) };
        let blocks = threads.min(extent.div_ceil(quantum));
        if blocks <= 1 || a.cols() != b.rows() || a.rows() != m || b.cols() != n {
            // (Mismatched dimensions fall through to `gemm`, which panics with the message.)
            return self.gemm(alpha, a, b, beta, c);
        }
        let per = extent.div_ceil(blocks).div_ceil(quantum) * quantum;
        rayon::scope(|scope| {
            let mut rest = c;
            let mut start = 0;
            while start < extent {
                let len = per.min(extent - start);
                let (head, tail) = if by_cols {
                    rest.split_at_col(len)
                } else {
                    rest.split_at_row(len)
                };
                rest = tail;
                let (ab, bb) = if by_cols {
                    (a, b.block(0, start, b.rows(), len))
                } else {
                    (a.block(start, 0, len, a.cols()), b)
                };
                let k = *self;
                scope.spawn(move |_| k.gemm(alpha, ab, bb, beta, head));
                start += len;
            }
        });
    }

    /// `dst ← srcᵀ` (`src` is `r × c`, `dst` is `c × r`), both with contiguous rows.
    ///
    /// DrSAE use: the engine keeps the recurrent weights in both layouts (`Sᵀ` for the forward
    /// product, `S` for the adjoint) and refreshes one from the other after every update.
    ///
    /// # Panics
    /// If the shapes do not match or either matrix's rows are not contiguous.
    pub fn transpose(&self, src: MatRef<'_>, mut dst: MatMut<'_>) {
        assert!(
            src.rows() == dst.cols() && src.cols() == dst.rows(),
            "transpose: src is {}x{}, dst is {}x{}",
            src.rows(),
            src.cols(),
            dst.rows(),
            dst.cols()
        );
        sparse::require_rows_contiguous(&src, "transpose");
        sparse::require_rows_contiguous(&dst.rb(), "transpose");
        if src.rows() == 0 || src.cols() == 0 {
            return;
        }
        let (rows, cols) = (src.rows(), src.cols());
        let (sp, srs) = (src.as_ptr(), src.row_stride());
        let (dp, drs) = (dst.as_mut_ptr(), dst.row_stride());
        dispatch!(self, transpose(rows, cols, sp, srs, dp, drs));
    }

    /// `y += Σ_k vals[k] · W[idx[k], :]`: a sparse vector times a dense matrix.
    ///
    /// DrSAE use: the encoder drive of one example, `u += Σ_{j ∈ nnz(x)} x_j · Eᵀ[j, :]`, and
    /// the recurrence `Σ_{j active} z_j · Sᵀ[j, :]` (n = 400 columns: the whole of y stays in
    /// 25 zmm registers while the selected rows stream past).
    ///
    /// # Panics
    /// If `W` rows are not contiguous (`cs != 1`), `y.len() != W.cols()`,
    /// `idx.len() != vals.len()`, or an index is `>= W.rows()`.
    pub fn gather_axpy(&self, y: &mut [f32], w: MatRef<'_>, idx: &[u32], vals: &[f32]) {
        sparse::require_rows_contiguous(&w, "gather_axpy");
        assert_eq!(y.len(), w.cols(), "gather_axpy: y.len() != W.cols()");
        assert_eq!(idx.len(), vals.len(), "gather_axpy: idx and vals lengths");
        check_indices(idx, w.rows(), "gather_axpy");
        if w.cols() == 0 {
            return;
        }
        dispatch!(
            self,
            gather_axpy(
                y.as_mut_ptr(),
                w.cols(),
                w.as_ptr(),
                w.row_stride(),
                idx,
                vals
            )
        );
    }

    /// `Y += X·W` with `X` sparse by rows (`B × K`), `W` dense `K × N`, `Y` dense `B × N`: one
    /// [`Kernels::gather_axpy`] per row of X.
    ///
    /// DrSAE use: the sparse kernel that replaces the dense product `(B×K)(K×N)` when X is a
    /// minibatch of pixels (≈ 19 % non-zero, with `W = Eᵀ`) or of ReLU states (with `W = Sᵀ`).
    ///
    /// # Panics
    /// If the dimensions disagree.
    pub fn sparse_gemm(&self, x: &SparseRows, w: MatRef<'_>, mut y: MatMut<'_>) {
        check_product(
            "sparse_gemm",
            ["X", "W", "Y"],
            (x.rows(), x.cols()),
            (w.rows(), w.cols()),
            (y.rows(), y.cols()),
        );
        let n = w.cols();
        if n == 0 || x.rows() == 0 {
            return;
        }
        let contiguous = n == 1 || (w.col_stride() == 1 && y.col_stride() == 1);
        if !contiguous {
            // General strides: plain loops (not a path the model takes).
            for r in 0..x.rows() {
                let (idx, vals) = x.row(r);
                for (&j, &v) in idx.iter().zip(vals) {
                    for c in 0..n {
                        let wv = w.get(j as usize, c).unwrap_or(0.0);
                        if let Some(yv) = y.get_mut(r, c) {
                            *yv += v * wv;
                        }
                    }
                }
            }
            return;
        }
        dispatch!(
            self,
            sparse_gemm(
                x,
                w.as_ptr(),
                w.row_stride(),
                y.as_mut_ptr(),
                y.row_stride(),
                n
            )
        );
    }

    /// `out[k] = W[rows[k], :] · x`: selected rows of `W·x`.
    ///
    /// DrSAE use: the backward pass restricted to active units, e.g. `(Sᵀ·d)[i]` only for the
    /// units `i` whose ReLU is on.
    ///
    /// # Panics
    /// If `W` rows are not contiguous, `x.len() != W.cols()`, `out.len() != rows.len()`, or a
    /// row index is `>= W.rows()`.
    pub fn gather_dots(&self, out: &mut [f32], w: MatRef<'_>, rows: &[u32], x: &[f32]) {
        sparse::require_rows_contiguous(&w, "gather_dots");
        assert_eq!(x.len(), w.cols(), "gather_dots: x.len() != W.cols()");
        assert_eq!(out.len(), rows.len(), "gather_dots: out and rows lengths");
        check_indices(rows, w.rows(), "gather_dots");
        if w.cols() == 0 {
            out.fill(0.0);
            return;
        }
        dispatch!(
            self,
            gather_dots(out, w.as_ptr(), w.row_stride(), w.cols(), rows, x)
        );
    }

    /// `G[rows[a], :] += scale · row_vals[a] · x`: an outer product restricted to active rows.
    ///
    /// DrSAE use: weight gradients such as `dE += d_u xᵀ` where only the active units' rows of
    /// `d_u` are non-zero.
    ///
    /// # Panics
    /// If G's rows are not contiguous, `x.len() != G.cols()`, `rows.len() != row_vals.len()`,
    /// or a row index is `>= G.rows()`.
    pub fn rank1_rows(
        &self,
        mut g: MatMut<'_>,
        rows: &[u32],
        row_vals: &[f32],
        x: &[f32],
        scale: f32,
    ) {
        sparse::require_rows_contiguous(&g.rb(), "rank1_rows");
        assert_eq!(x.len(), g.cols(), "rank1_rows: x.len() != G.cols()");
        assert_eq!(
            rows.len(),
            row_vals.len(),
            "rank1_rows: rows and row_vals lengths"
        );
        check_indices(rows, g.rows(), "rank1_rows");
        if g.cols() == 0 {
            return;
        }
        let (p, rs, n) = (g.as_mut_ptr(), g.row_stride(), g.cols());
        dispatch!(self, rank1_rows(p, rs, n, rows, row_vals, x, scale));
    }

    /// `G[rows[a], cols[b]] += scale · row_vals[a] · col_vals[b]`: an outer product restricted
    /// to active rows and active columns.
    ///
    /// DrSAE use: the gradient of the recurrent weights, `dS += d_u zᵀ`, where both the
    /// adjoint and the state are non-zero only on active units.
    ///
    /// # Panics
    /// If the value and index lists differ in length or an index is outside G.
    pub fn rank1_sparse(
        &self,
        mut g: MatMut<'_>,
        rows: &[u32],
        row_vals: &[f32],
        cols: &[u32],
        col_vals: &[f32],
        scale: f32,
    ) {
        assert_eq!(
            rows.len(),
            row_vals.len(),
            "rank1_sparse: rows and row_vals lengths"
        );
        assert_eq!(
            cols.len(),
            col_vals.len(),
            "rank1_sparse: cols and col_vals lengths"
        );
        check_indices(rows, g.rows(), "rank1_sparse");
        check_indices(cols, g.cols(), "rank1_sparse");
        let (p, rs, cs) = (g.as_mut_ptr(), g.row_stride(), g.col_stride());
        // SAFETY: every row index is `< G.rows()` and every column index `< G.cols()` (checked
        // above), so each (row, col) is an element of G.
        unsafe { sparse::rank1_sparse(p, rs, cs, rows, row_vals, cols, col_vals, scale) }
    }

    /// `z = max(a, 0)` and the indices of the active units (`z > 0`) in `active[..count]`;
    /// returns `count`. NaN inputs stay NaN and count as active, so divergence is not hidden.
    ///
    /// DrSAE use: the ReLU of each step, producing the active set the sparse products use.
    ///
    /// # Panics
    /// If `z.len() != a.len()` or `active.len() < a.len()`.
    pub fn relu_active(&self, a: &[f32], z: &mut [f32], active: &mut [u32]) -> usize {
        assert_eq!(z.len(), a.len(), "relu_active: z.len() != a.len()");
        assert!(
            active.len() >= a.len(),
            "relu_active: active shorter than a"
        );
        check_u32_len(a.len());
        dispatch!(self, relu_active(a, z, active))
    }

    /// `z = max(u + acc, 0)` fused, with the active indices as in [`Kernels::relu_active`].
    ///
    /// DrSAE use: `z[t] = relu(E·x − b + S·z[t−1])` with `u = E·x − b` precomputed and `acc`
    /// the recurrent sum.
    ///
    /// # Panics
    /// If the lengths of `u`, `acc` and `z` differ or `active.len() < u.len()`.
    pub fn bias_relu_active(
        &self,
        u: &[f32],
        acc: &[f32],
        z: &mut [f32],
        active: &mut [u32],
    ) -> usize {
        assert_eq!(acc.len(), u.len(), "bias_relu_active: acc.len() != u.len()");
        assert_eq!(z.len(), u.len(), "bias_relu_active: z.len() != u.len()");
        assert!(
            active.len() >= u.len(),
            "bias_relu_active: active shorter than u"
        );
        check_u32_len(u.len());
        dispatch!(self, bias_relu_active(u, acc, z, active))
    }

    /// Compresses the non-zeros of `x` (`x != 0`, NaN included) into `idx[..n]`, `val[..n]`
    /// in ascending order; returns `n`.
    ///
    /// DrSAE use: turning a row of pixels (≈ 19 % non-zero on MNIST) into the index list the
    /// sparse products take.
    ///
    /// # Panics
    /// If `idx` or `val` is shorter than `x`.
    pub fn nonzeros(&self, x: &[f32], idx: &mut [u32], val: &mut [f32]) -> usize {
        assert!(idx.len() >= x.len(), "nonzeros: idx shorter than x");
        assert!(val.len() >= x.len(), "nonzeros: val shorter than x");
        check_u32_len(x.len());
        dispatch!(self, nonzeros(x, idx, val))
    }

    /// The columns of A that hold a non-zero (`!= 0`, NaN included) in some row, ascending, in
    /// `idx[..n]`; returns `n`.
    ///
    /// DrSAE use: the units an example activates at some step (A: its states, one row per
    /// step), the rows its share of the recurrent-weight gradient touches.
    ///
    /// # Panics
    /// If A's columns are not contiguous or `idx` is shorter than A is wide.
    pub fn nonzero_columns(&self, a: MatRef<'_>, idx: &mut [u32]) -> usize {
        sparse::require_rows_contiguous(&a, "nonzero_columns");
        assert!(
            idx.len() >= a.cols(),
            "nonzero_columns: idx shorter than A is wide"
        );
        check_u32_len(a.cols());
        if a.rows() == 0 || a.cols() == 0 {
            return 0;
        }
        let (p, rs, k, n) = (a.as_ptr(), a.row_stride(), a.rows(), a.cols());
        dispatch!(self, nonzero_columns(k, n, p, rs, idx.as_mut_ptr()))
    }

    /// `C[j, :] += α·(Aᵀ·B)[j, :]` for the rows `j` in `rows` (strictly ascending), every other
    /// row of C untouched: A is `k × m`, B `k × n`, C `m × n`.
    ///
    /// DrSAE use: the recurrent-weight gradient one example at a time, `Sᵀ += α·Z_bᵀ·DA_b`
    /// over the units the example activates at some step (its other columns of `Z_b` are
    /// zero), so each example costs its own activity rather than the minibatch's union.
    ///
    /// # Panics
    /// If the dimensions disagree, B's or C's rows are not contiguous, or `rows` is not
    /// strictly ascending below `m`.
    pub fn gemm_tn_rows(
        &self,
        alpha: f32,
        a: MatRef<'_>,
        b: MatRef<'_>,
        rows: &[u32],
        mut c: MatMut<'_>,
    ) {
        check_product(
            "gemm_tn_rows",
            ["Aᵀ", "B", "C"],
            (a.cols(), a.rows()),
            (b.rows(), b.cols()),
            (c.rows(), c.cols()),
        );
        sparse::require_rows_contiguous(&b, "gemm_tn_rows");
        sparse::require_rows_contiguous(&c.rb(), "gemm_tn_rows");
        check_indices(rows, c.rows(), "gemm_tn_rows");
        assert!(
            rows.windows(2).all(|w| w[0] < w[1]),
            "gemm_tn_rows: rows must be strictly ascending"
        );
        if rows.is_empty() || c.cols() == 0 || a.rows() == 0 {
            return;
        }
        let g = sparse::TnRows {
            alpha,
            k: a.rows(),
            n: c.cols(),
            a: a.as_ptr(),
            a_rs: a.row_stride(),
            a_cs: a.col_stride(),
            b: b.as_ptr(),
            b_rs: b.row_stride(),
            c: c.as_mut_ptr(),
            c_rs: c.row_stride(),
        };
        dispatch!(self, gemm_tn_rows(&g, rows))
    }

    /// `Σ x[i]·y[i]`.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn dot(&self, x: &[f32], y: &[f32]) -> f32 {
        assert_eq!(x.len(), y.len(), "dot: lengths differ");
        dispatch!(self, dot(x, y))
    }

    /// `y += alpha·x`.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn axpy(&self, y: &mut [f32], alpha: f32, x: &[f32]) {
        assert_eq!(x.len(), y.len(), "axpy: lengths differ");
        dispatch!(self, axpy(y, alpha, x))
    }

    /// `x *= alpha`.
    pub fn scale(&self, x: &mut [f32], alpha: f32) {
        dispatch!(self, scale(x, alpha))
    }
}

/// The raw parts of `C ← α·A·B + β·C` over the whole depth.
///
/// # Panics
/// If the dimensions disagree: `A` is `m × k`, `B` is `k × n`, `C` is `m × n`.
fn gemm_args(
    what: &str,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: &mut MatMut<'_>,
) -> gemm::GemmArgs {
    check_product(
        what,
        ["A", "B", "C"],
        (a.rows(), a.cols()),
        (b.rows(), b.cols()),
        (c.rows(), c.cols()),
    );
    gemm::GemmArgs {
        m: c.rows(),
        n: c.cols(),
        k: a.cols(),
        alpha,
        a: a.as_ptr(),
        a_rs: a.row_stride(),
        a_cs: a.col_stride(),
        b: b.as_ptr(),
        b_rs: b.row_stride(),
        b_cs: b.col_stride(),
        beta,
        c: c.as_mut_ptr(),
        c_rs: c.row_stride(),
        c_cs: c.col_stride(),
        kidx: std::ptr::null(),
    }
}

/// Panics unless the `(rows, cols)` shapes fit the product `names[0]·names[1] = names[2]`,
/// naming the operands and their shapes.
fn check_product(
    what: &str,
    names: [&str; 3],
    a: (usize, usize),
    b: (usize, usize),
    c: (usize, usize),
) {
    let [na, nb, nc] = names;
    assert!(
        a.1 == b.0 && a.0 == c.0 && b.1 == c.1,
        "{what}: {na} is {}x{}, {nb} is {}x{}, {nc} is {}x{}",
        a.0,
        a.1,
        b.0,
        b.1,
        c.0,
        c.1
    );
}

/// Panics unless every index is `< bound`.
fn check_indices(idx: &[u32], bound: usize, what: &str) {
    if let Some(&bad) = idx.iter().find(|&&i| i as usize >= bound) {
        panic!("{what}: index {bad} out of range for {bound}");
    }
}

/// Panics if `len` does not fit the 32-bit indices the active-set kernels write.
fn check_u32_len(len: usize) {
    assert!(
        u32::try_from(len).is_ok(),
        "vector of {len} elements exceeds 32-bit indices"
    );
}

/// The process-wide kernels: chosen once, from `DRSAE_ISA` if set, else the best available.
///
/// # Panics
/// If `DRSAE_ISA` names an unknown ISA or one this CPU lacks (see [`Kernels::from_env`]): the
/// message names the ISAs that are available.
pub fn kernels() -> &'static Kernels {
    static KERNELS: OnceLock<Kernels> = OnceLock::new();
    KERNELS.get_or_init(|| Kernels::from_env().unwrap_or_else(|e| panic!("{e}")))
}

/// Checks `DRSAE_REQUIRE_ISA`: when set (e.g. `avx512` in CI on an AVX-512 runner), the
/// process-wide [`kernels`] must use that ISA. Unset: always `Ok`.
pub fn check_required_isa() -> Result<(), IsaError> {
    match std::env::var("DRSAE_REQUIRE_ISA") {
        Ok(v) if !v.trim().is_empty() => {
            let required: Isa = v.parse()?;
            let actual = kernels().isa();
            if actual == required {
                Ok(())
            } else {
                Err(IsaError::NotRequired { required, actual })
            }
        }
        _ => Ok(()),
    }
}
