//! The model's parameters (E, S, b, D, C, c) as row-major vectors, and their gradients.
//!
//! `Params<f32>` is what training updates and checkpoints store; `Params<f64>` feeds the
//! reference. `Grads` is the same struct read as a gradient, so that every helper works on both.

use std::fmt::Debug;

/// A floating-point element type of [`Params`]: `f32` or `f64`.
pub trait Scalar: Copy + Default + PartialEq + PartialOrd + Debug + Send + Sync + 'static {
    /// Converts from f64, rounding to nearest when `Self` is narrower.
    fn from_f64(v: f64) -> Self;
    /// Converts to f64 (exact for both implementations).
    fn to_f64(self) -> f64;
}

impl Scalar for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Scalar for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
}

/// The tensor names, in the order [`Params::tensors`] yields them and checkpoints list them.
pub const TENSOR_NAMES: [&str; 6] = ["e", "s", "b", "d", "c", "c_bias"];

/// All parameters of a DrSAE with m inputs, n hidden units and l classes (spec §1).
#[derive(Debug, Clone, PartialEq)]
pub struct Params<F = f32> {
    /// Input dimension m.
    pub n_input: usize,
    /// Number of hidden units n.
    pub n_hidden: usize,
    /// Number of classes l.
    pub n_classes: usize,
    /// E, the encoder: n×m row-major; row i is the encoder of unit i.
    pub e: Vec<F>,
    /// S, the recurrent explaining-away matrix: n×n; `s[i*n + j]` is the weight from unit j to unit i.
    pub s: Vec<F>,
    /// b, the threshold (n), subtracted from E·x.
    pub b: Vec<F>,
    /// D, the reconstruction decoder: m×n row-major; column i is the decoder of unit i.
    pub d: Vec<F>,
    /// C, the classification decoder: l×n row-major; row k scores class k.
    pub c: Vec<F>,
    /// c, the classifier bias (l); stays zero when `classifier_bias` is off.
    pub c_bias: Vec<F>,
}

/// A gradient: the same fields as [`Params`], accumulated in f64 by default.
pub type Grads<F = f64> = Params<F>;

impl<F: Scalar> Params<F> {
    /// All-zero parameters of the given dimensions (also the starting value of a [`Grads`]).
    pub fn zeros(n_input: usize, n_hidden: usize, n_classes: usize) -> Self {
        let z = F::default();
        Params {
            n_input,
            n_hidden,
            n_classes,
            e: vec![z; n_hidden * n_input],
            s: vec![z; n_hidden * n_hidden],
            b: vec![z; n_hidden],
            d: vec![z; n_input * n_hidden],
            c: vec![z; n_classes * n_hidden],
            c_bias: vec![z; n_classes],
        }
    }

    /// The shape a tensor must have for these dimensions: `[n,m] [n,n] [n] [m,n] [l,n] [l]`.
    pub fn expected_shape(
        name: &str,
        n_input: usize,
        n_hidden: usize,
        n_classes: usize,
    ) -> Option<Vec<usize>> {
        let (m, n, l) = (n_input, n_hidden, n_classes);
        match name {
            "e" => Some(vec![n, m]),
            "s" => Some(vec![n, n]),
            "b" => Some(vec![n]),
            "d" => Some(vec![m, n]),
            "c" => Some(vec![l, n]),
            "c_bias" => Some(vec![l]),
            _ => None,
        }
    }

    /// Each tensor as (name, shape, data), in the order e s b d c c_bias.
    pub fn tensors(&self) -> impl Iterator<Item = (&'static str, Vec<usize>, &[F])> + '_ {
        let data: [&[F]; 6] = [&self.e, &self.s, &self.b, &self.d, &self.c, &self.c_bias];
        TENSOR_NAMES.into_iter().zip(data).map(|(name, slice)| {
            let shape = Self::expected_shape(name, self.n_input, self.n_hidden, self.n_classes)
                .expect("every TENSOR_NAMES entry has a shape");
            (name, shape, slice)
        })
    }

    /// Each tensor as (name, mutable data), in the order e s b d c c_bias.
    pub fn tensors_mut(&mut self) -> impl Iterator<Item = (&'static str, &mut [F])> + '_ {
        let data: [&mut [F]; 6] = [
            &mut self.e,
            &mut self.s,
            &mut self.b,
            &mut self.d,
            &mut self.c,
            &mut self.c_bias,
        ];
        TENSOR_NAMES.into_iter().zip(data)
    }

    /// Checks that every vector has the length its dimensions imply; names the first that doesn't.
    pub fn check_lengths(&self) -> Result<(), String> {
        for (name, shape, data) in self.tensors() {
            let want: usize = shape.iter().product();
            if data.len() != want {
                return Err(format!(
                    "tensor `{name}` has {} elements, expected {want} for shape {shape:?}",
                    data.len()
                ));
            }
        }
        Ok(())
    }

    /// Total number of scalars across all six tensors.
    pub fn num_scalars(&self) -> usize {
        self.tensors().map(|(_, _, d)| d.len()).sum()
    }

    /// Converts every entry to another scalar type (rounding to nearest when narrowing).
    pub fn cast<G: Scalar>(&self) -> Params<G> {
        let conv = |v: &[F]| {
            v.iter()
                .map(|&x| G::from_f64(x.to_f64()))
                .collect::<Vec<G>>()
        };
        Params {
            n_input: self.n_input,
            n_hidden: self.n_hidden,
            n_classes: self.n_classes,
            e: conv(&self.e),
            s: conv(&self.s),
            b: conv(&self.b),
            d: conv(&self.d),
            c: conv(&self.c),
            c_bias: conv(&self.c_bias),
        }
    }

    /// A copy in f64 (exact).
    pub fn to_f64(&self) -> Params<f64> {
        self.cast()
    }

    /// A copy in f32 (rounded to nearest).
    pub fn to_f32(&self) -> Params<f32> {
        self.cast()
    }

    /// Sets every entry to zero, keeping the allocations (to reuse a gradient buffer).
    pub fn fill_zero(&mut self) {
        for (_, t) in self.tensors_mut() {
            t.fill(F::default());
        }
    }

    /// `self += scale · other`, entry by entry, computed in f64 and rounded once.
    ///
    /// # Panics
    /// If the dimensions differ.
    pub fn add_scaled(&mut self, other: &Params<F>, scale: f64) {
        self.assert_same_dims(other);
        let others: Vec<&[F]> = other.tensors().map(|(_, _, d)| d).collect();
        for ((_, dst), src) in self.tensors_mut().zip(others) {
            for (a, &g) in dst.iter_mut().zip(src) {
                *a = F::from_f64(a.to_f64() + scale * g.to_f64());
            }
        }
    }

    /// The largest |self − other| over all entries, with the tensor it occurs in.
    ///
    /// # Panics
    /// If the dimensions differ.
    pub fn max_abs_diff(&self, other: &Params<F>) -> (f64, &'static str) {
        self.assert_same_dims(other);
        let mut worst = (0.0, "e");
        for ((name, _, a), (_, _, b)) in self.tensors().zip(other.tensors()) {
            for (&x, &y) in a.iter().zip(b) {
                let diff = (x.to_f64() - y.to_f64()).abs();
                // NaN is reported as the worst difference, never hidden behind a smaller one.
                if diff > worst.0 || (diff.is_nan() && !worst.0.is_nan()) {
                    worst = (diff, name);
                }
            }
        }
        worst
    }

    fn assert_same_dims(&self, other: &Params<F>) {
        assert_eq!(
            (self.n_input, self.n_hidden, self.n_classes),
            (other.n_input, other.n_hidden, other.n_classes),
            "parameter dimensions (m, n, l) differ"
        );
    }
}
