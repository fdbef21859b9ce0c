//! Matrix views: the bounds and aliasing checks the kernels' unchecked access relies on.

use drsae_kernels::{LayoutError, MatMut, MatRef};

#[test]
fn views_reject_elements_outside_the_storage() {
    let data = vec![0.0f32; 12];
    assert!(MatRef::new(&data, 3, 4, 4, 1).is_ok());
    assert!(matches!(
        MatRef::new(&data, 3, 4, 5, 1),
        Err(LayoutError::OutOfBounds { last: 13, len: 12 })
    ));
    assert!(MatRef::new(&data, 4, 3, 1, 4).is_ok());
    assert!(MatRef::new(&data, 4, 4, 1, 4).is_err());
    assert!(MatRef::row_major(&data, 2, 7).is_err());
    // Overflowing strides are an error, not a wrap-around.
    assert!(MatRef::new(&data, 2, 2, usize::MAX, 1).is_err());
    // Empty views need no storage.
    assert!(MatRef::new(&[], 0, 5, 100, 1).is_ok());
    assert!(MatRef::new(&[], 5, 0, 100, 1).is_ok());
}

#[test]
fn mutable_views_reject_aliasing_strides() {
    let mut data = vec![0.0f32; 16];
    assert!(matches!(
        MatMut::new(&mut data, 2, 2, 0, 1),
        Err(LayoutError::Aliasing { .. })
    ));
    assert!(MatMut::new(&mut data, 3, 3, 1, 2).is_err());
    assert!(MatMut::new(&mut data, 3, 3, 3, 1).is_ok());
    assert!(MatMut::new(&mut data, 3, 3, 1, 3).is_ok());
    assert!(MatMut::new(&mut data, 1, 4, 0, 1).is_ok());
    // Read-only views may broadcast.
    assert!(MatRef::new(&data, 4, 4, 0, 1).is_ok());
}

/// Views over raw storage (interleaved blocks written by different threads) get the same
/// checks as views over a slice, and address the same elements.
#[test]
fn raw_views_are_checked_like_slice_views() {
    let mut data = vec![0.0f32; 16];
    let ptr = data.as_mut_ptr();
    // SAFETY: `ptr` addresses the 16 elements of `data`, which nothing else touches while
    // each of the views below lives.
    unsafe {
        assert!(matches!(
            MatMut::from_raw_parts(ptr, 16, 2, 2, 0, 1),
            Err(LayoutError::Aliasing { .. })
        ));
        assert!(matches!(
            MatMut::from_raw_parts(ptr, 16, 4, 4, 5, 1),
            Err(LayoutError::OutOfBounds { last: 18, len: 16 })
        ));
        // Columns 1..3 of a 4 × 4 row-major matrix.
        let mut block = MatMut::from_raw_parts(ptr.add(1), 15, 4, 2, 4, 1).unwrap();
        *block.get_mut(3, 1).unwrap() = 7.0;
        assert!(MatMut::from_raw_parts(ptr.add(1), 15, 4, 4, 4, 1).is_err());
    }
    assert_eq!(data[3 * 4 + 2], 7.0);
    assert_eq!(data.iter().filter(|&&v| v != 0.0).count(), 1);
}

#[test]
fn transpose_swaps_dimensions_and_strides() {
    let data: Vec<f32> = (0..6).map(|x| x as f32).collect();
    let a = MatRef::row_major(&data, 2, 3).unwrap();
    let t = a.t();
    assert_eq!(
        (t.rows(), t.cols(), t.row_stride(), t.col_stride()),
        (3, 2, 1, 3)
    );
    for i in 0..2 {
        for j in 0..3 {
            assert_eq!(a.get(i, j), t.get(j, i));
        }
    }
    assert_eq!(a.row(1), Some(&data[3..6]));
    assert_eq!(t.row(0), None);
    let b = a.block(1, 1, 1, 2);
    assert_eq!((b.get(0, 0), b.get(0, 1)), (Some(4.0), Some(5.0)));
}

#[test]
fn split_views_cover_disjoint_blocks() {
    let mut data = vec![0.0f32; 12];
    let m = MatMut::row_major(&mut data, 3, 4).unwrap();
    let (mut left, mut right) = m.split_at_col(1);
    assert_eq!((left.cols(), right.cols()), (1, 3));
    *left.get_mut(2, 0).unwrap() = 1.0;
    *right.get_mut(0, 2).unwrap() = 2.0;
    let (top, mut bottom) = right.split_at_row(2);
    assert_eq!((top.rows(), bottom.rows()), (2, 1));
    *bottom.get_mut(0, 0).unwrap() = 3.0;
    assert_eq!(data[8], 1.0);
    assert_eq!(data[3], 2.0);
    assert_eq!(data[9], 3.0);
}
