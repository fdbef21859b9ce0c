//! Checked strided matrix views: the only way matrices enter the kernels.
//!
//! A view addresses element `(i, j)` at `i * rs + j * cs` of its storage. The constructors
//! verify once that every addressed element lies inside the storage, so the kernels can use
//! unchecked pointer arithmetic on any element `(i, j)` with `i < rows` and `j < cols`.
//! Strides are non-negative; a transpose is free (`.t()` swaps dimensions and strides).

use std::fmt;
use std::marker::PhantomData;

/// Why a view could not be built over the given storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The last addressed element `(rows-1)*rs + (cols-1)*cs` lies outside the storage.
    OutOfBounds {
        /// Index of the last addressed element (saturated on overflow).
        last: usize,
        /// Length of the storage.
        len: usize,
    },
    /// Two different elements of a mutable view would share one storage location.
    Aliasing {
        /// Row stride.
        rs: usize,
        /// Column stride.
        cs: usize,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::OutOfBounds { last, len } => write!(
                f,
                "matrix view addresses element {last} but the storage holds only {len}"
            ),
            LayoutError::Aliasing { rs, cs } => write!(
                f,
                "mutable matrix view with row stride {rs} and column stride {cs} would alias elements"
            ),
        }
    }
}

impl std::error::Error for LayoutError {}

/// Index one past the last addressed element, or an error; `Ok(0)` for an empty view.
fn extent(
    len: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
) -> Result<usize, LayoutError> {
    if rows == 0 || cols == 0 {
        return Ok(0);
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)));
    match last {
        Some(last) if last < len => Ok(last + 1),
        Some(last) => Err(LayoutError::OutOfBounds { last, len }),
        None => Err(LayoutError::OutOfBounds {
            last: usize::MAX,
            len,
        }),
    }
}

/// Whether `(i, j) -> i*rs + j*cs` is injective on `rows × cols`.
///
/// Sorting the two dimensions by stride, the map is injective when the smaller stride is at
/// least 1 (if its dimension has more than one element) and the larger stride steps over the
/// whole span of the smaller dimension.
fn injective(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 || (rows == 1 && cols == 1) {
        return true;
    }
    if rows <= 1 {
        return cs >= 1;
    }
    if cols <= 1 {
        return rs >= 1;
    }
    let ((n_small, s_small), (_, s_large)) = if rs <= cs {
        ((rows, rs), (cols, cs))
    } else {
        ((cols, cs), (rows, rs))
    };
    s_small >= 1
        && s_small
            .checked_mul(n_small)
            .is_some_and(|span| s_large >= span)
}

/// A read-only strided view of an `f32` matrix.
///
/// It holds a raw pointer (like `&'a [f32]`) so that a read-only view of a [`MatMut`] never
/// claims the storage between its elements, which may belong to a sibling mutable view.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    ptr: *const f32,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    _marker: PhantomData<&'a [f32]>,
}

// SAFETY: a `MatRef` is a shared borrow of the elements it addresses, like `&[f32]`, which is
// `Send` and `Sync`; it offers no way to write.
unsafe impl Send for MatRef<'_> {}
// SAFETY: as above: only reads are possible through a shared borrow, like `&[f32]`.
unsafe impl Sync for MatRef<'_> {}

impl fmt::Debug for MatRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MatRef")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("rs", &self.rs)
            .field("cs", &self.cs)
            .finish_non_exhaustive()
    }
}

impl<'a> MatRef<'a> {
    /// A `rows × cols` view with element `(i, j)` at `data[i*rs + j*cs]`.
    ///
    /// Fails if any addressed element lies outside `data`. Strides may be zero (broadcast).
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    ) -> Result<Self, LayoutError> {
        extent(data.len(), rows, cols, rs, cs)?;
        Ok(MatRef {
            ptr: data.as_ptr(),
            rows,
            cols,
            rs,
            cs,
            _marker: PhantomData,
        })
    }

    /// A dense row-major `rows × cols` view of the first `rows*cols` elements of `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, LayoutError> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose: rows and columns (and their strides) swapped; no data moves.
    #[must_use]
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row stride (elements between `(i, j)` and `(i+1, j)`).
    pub fn row_stride(&self) -> usize {
        self.rs
    }

    /// Column stride (elements between `(i, j)` and `(i, j+1)`).
    pub fn col_stride(&self) -> usize {
        self.cs
    }

    /// Element `(i, j)`, or `None` outside the view.
    pub fn get(&self, i: usize, j: usize) -> Option<f32> {
        if i < self.rows && j < self.cols {
            // SAFETY: `i < rows` and `j < cols`, and `new` checked that every such element lies
            // inside the borrowed storage.
            Some(unsafe { *self.ptr.add(i * self.rs + j * self.cs) })
        } else {
            None
        }
    }

    /// Row `i` as a slice when the view's columns are contiguous (`cs == 1`).
    pub fn row(&self, i: usize) -> Option<&'a [f32]> {
        if i >= self.rows || (self.cs != 1 && self.cols > 1) {
            return None;
        }
        if self.cols == 0 {
            return Some(&[]);
        }
        // SAFETY: `i < rows` and the row's `cols` elements are contiguous (`cs == 1` or a single
        // column), all addressed by the view, hence inside the storage `new` checked.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(i * self.rs), self.cols) })
    }

    /// The sub-view of rows `r0..r0+rows` and columns `c0..c0+cols`.
    ///
    /// # Panics
    /// If the block does not lie inside the view.
    #[must_use]
    pub fn block(self, r0: usize, c0: usize, rows: usize, cols: usize) -> Self {
        assert!(
            r0.checked_add(rows).is_some_and(|e| e <= self.rows)
                && c0.checked_add(cols).is_some_and(|e| e <= self.cols),
            "block {rows}x{cols} at ({r0}, {c0}) outside a {}x{} view",
            self.rows,
            self.cols
        );
        let ptr = if rows == 0 || cols == 0 {
            self.ptr
        } else {
            // SAFETY: the block is non-empty and inside the view, so (r0, c0) is an addressed
            // element, inside the storage.
            unsafe { self.ptr.add(r0 * self.rs + c0 * self.cs) }
        };
        MatRef {
            ptr,
            rows,
            cols,
            ..self
        }
    }

    /// Pointer to element `(0, 0)`; every `(i, j)` inside the view is in bounds of it.
    pub(crate) fn as_ptr(&self) -> *const f32 {
        self.ptr
    }
}

/// A mutable strided view of an `f32` matrix whose elements never alias each other.
///
/// It holds a raw pointer (like `&'a mut [f32]`, but splittable into column or row blocks
/// whose storage ranges interleave).
pub struct MatMut<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    _marker: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `MatMut` is an exclusive borrow of the elements it addresses (checked in `new`,
// preserved by the splitting methods), exactly like `&mut [f32]`, which is `Send`.
unsafe impl Send for MatMut<'_> {}
// SAFETY: shared access to a `MatMut` only allows reads (`get`, `rb`), like `&&mut [f32]`.
unsafe impl Sync for MatMut<'_> {}

impl fmt::Debug for MatMut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MatMut")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("rs", &self.rs)
            .field("cs", &self.cs)
            .finish_non_exhaustive()
    }
}

impl<'a> MatMut<'a> {
    /// A mutable `rows × cols` view with element `(i, j)` at `data[i*rs + j*cs]`.
    ///
    /// Fails if an addressed element lies outside `data` or if two elements would share a
    /// storage location (e.g. a zero stride with more than one row).
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    ) -> Result<Self, LayoutError> {
        extent(data.len(), rows, cols, rs, cs)?;
        if !injective(rows, cols, rs, cs) {
            return Err(LayoutError::Aliasing { rs, cs });
        }
        Ok(MatMut {
            ptr: data.as_mut_ptr(),
            rows,
            cols,
            rs,
            cs,
            _marker: PhantomData,
        })
    }

    /// A dense row-major `rows × cols` view of the first `rows*cols` elements of `data`.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self, LayoutError> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// A mutable view of the `len` elements at `ptr`, for threads that write disjoint blocks
    /// of one matrix (interleaved column blocks, say) between synchronisation points, where
    /// no `&mut [f32]` of the whole storage can be handed to each.
    ///
    /// Fails as [`MatMut::new`] does.
    ///
    /// # Safety
    /// `ptr..ptr + len` must be valid for reads and writes for `'a`, and no other reference
    /// or view may access the elements this view addresses during `'a`.
    pub unsafe fn from_raw_parts(
        ptr: *mut f32,
        len: usize,
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    ) -> Result<Self, LayoutError> {
        extent(len, rows, cols, rs, cs)?;
        if !injective(rows, cols, rs, cs) {
            return Err(LayoutError::Aliasing { rs, cs });
        }
        Ok(MatMut {
            ptr,
            rows,
            cols,
            rs,
            cs,
            _marker: PhantomData,
        })
    }

    /// The transpose, as a mutable view.
    #[must_use]
    pub fn t(self) -> Self {
        MatMut {
            ptr: self.ptr,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            _marker: PhantomData,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row stride.
    pub fn row_stride(&self) -> usize {
        self.rs
    }

    /// Column stride.
    pub fn col_stride(&self) -> usize {
        self.cs
    }

    /// A read-only view of the same elements, borrowing `self`.
    pub fn rb(&self) -> MatRef<'_> {
        MatRef {
            ptr: self.ptr,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
            _marker: PhantomData,
        }
    }

    /// A shorter-lived mutable view of the same elements (to pass to a kernel and keep `self`).
    pub fn rb_mut(&mut self) -> MatMut<'_> {
        MatMut {
            ptr: self.ptr,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
            _marker: PhantomData,
        }
    }

    /// Element `(i, j)`, or `None` outside the view.
    pub fn get(&self, i: usize, j: usize) -> Option<f32> {
        if i < self.rows && j < self.cols {
            // SAFETY: `i < rows` and `j < cols`, and `new` checked that every such element lies
            // inside the borrowed storage.
            Some(unsafe { *self.ptr.add(i * self.rs + j * self.cs) })
        } else {
            None
        }
    }

    /// Mutable reference to element `(i, j)`, or `None` outside the view.
    pub fn get_mut(&mut self, i: usize, j: usize) -> Option<&mut f32> {
        if i < self.rows && j < self.cols {
            // SAFETY: `i < rows` and `j < cols` put the element inside the storage checked by
            // `new`; `&mut self` makes the reference exclusive.
            Some(unsafe { &mut *self.ptr.add(i * self.rs + j * self.cs) })
        } else {
            None
        }
    }

    /// Splits into columns `0..j` and `j..cols`.
    ///
    /// # Panics
    /// If `j > cols`.
    pub fn split_at_col(self, j: usize) -> (MatMut<'a>, MatMut<'a>) {
        assert!(j <= self.cols, "split column {j} > {} columns", self.cols);
        let right_ptr = if j < self.cols && self.rows > 0 {
            // SAFETY: `j < cols` and `rows > 0`, so element (0, j) lies inside the storage.
            unsafe { self.ptr.add(j * self.cs) }
        } else {
            self.ptr
        };
        let left = MatMut {
            cols: j,
            ..self.rb_raw()
        };
        let right = MatMut {
            ptr: right_ptr,
            cols: self.cols - j,
            ..self.rb_raw()
        };
        (left, right)
    }

    /// Splits into rows `0..i` and `i..rows`.
    ///
    /// # Panics
    /// If `i > rows`.
    pub fn split_at_row(self, i: usize) -> (MatMut<'a>, MatMut<'a>) {
        let (a, b) = self.t().split_at_col(i);
        (a.t(), b.t())
    }

    /// A copy of the raw parts with the full lifetime (internal: the caller keeps the
    /// resulting views disjoint).
    fn rb_raw(&self) -> MatMut<'a> {
        MatMut {
            ptr: self.ptr,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
            _marker: PhantomData,
        }
    }

    /// Pointer to element `(0, 0)`; every `(i, j)` inside the view is in bounds of it.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut f32 {
        self.ptr
    }
}
