//! `f32` storage that starts on a 64-byte cache line.
//!
//! A row whose length is a whole number of lines (the model's 400 and 784 floats are 25 and 49)
//! then starts a line too, so no full-vector load or store of the kernels straddles two lines.
//! A `Vec<f32>` starts wherever the allocator puts it: a large one, mapped afresh, 16 bytes
//! into a page, so that every AVX-512 access to it touches two lines.

use std::fmt;
use std::ops::{Deref, DerefMut};

/// One cache line of floats: a `Vec` of them is 64-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line(pub(crate) [f32; 16]);

/// An `f32` buffer whose first element starts a 64-byte line; it dereferences to
/// `[f32]`.
#[derive(Clone, Default)]
pub struct AlignedVec {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedVec {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        Self {
            lines: vec![Line([0.0; 16]); len.div_ceil(16)],
            len,
        }
    }

    /// The first `len` values, after growing to `len` (zeros, a new allocation) if shorter:
    /// scratch that is reused across calls and reallocated only when a call outgrows it.
    pub fn prefix_mut(&mut self, len: usize) -> &mut [f32] {
        if self.len < len {
            *self = Self::zeros(len);
        }
        &mut self[..len]
    }

    /// A copy of `values`.
    pub fn from_slice(values: &[f32]) -> Self {
        let mut v = Self::zeros(values.len());
        v.copy_from_slice(values);
        v
    }
}

impl Deref for AlignedVec {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `Line` is 16 `f32`s with no padding (`repr(C)`, 64 bytes), so the lines are
        // `16·lines.len() >= len` contiguous, initialised floats; an empty vector's dangling
        // pointer is non-null and aligned for `f32`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }
}

impl DerefMut for AlignedVec {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, through the unique borrow of the lines.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
}

impl<'a> IntoIterator for &'a AlignedVec {
    type Item = &'a f32;
    type IntoIter = std::slice::Iter<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut AlignedVec {
    type Item = &'a mut f32;
    type IntoIter = std::slice::IterMut<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

impl fmt::Debug for AlignedVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::AlignedVec;

    #[test]
    fn starts_a_line_and_holds_exactly_its_values() {
        for len in [0, 1, 15, 16, 17, 400, 784 * 400] {
            let values: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let mut v = AlignedVec::from_slice(&values);
            assert_eq!(v.as_ptr() as usize % 64, 0, "len {len}");
            assert_eq!(&*v, &values[..]);
            let w = v.clone();
            assert_eq!(w.as_ptr() as usize % 64, 0, "clone of len {len}");
            assert_eq!(&*w, &values[..]);
            v.fill(1.0);
            assert!(v.iter().all(|&x| x == 1.0));
            assert_eq!(v.prefix_mut(len / 2).len(), len / 2);
            assert_eq!(v.len(), len, "a shorter prefix keeps the buffer");
            assert_eq!(v.prefix_mut(len + 3).len(), len + 3);
            assert_eq!(v.as_ptr() as usize % 64, 0, "grown from len {len}");
            assert_eq!(AlignedVec::zeros(len).len(), len);
        }
    }
}
