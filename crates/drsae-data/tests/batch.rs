//! Seeded minibatches: reproducible from (seed, epoch), a permutation each epoch, allocation-free.

mod common;

use drsae_data::{BatchBuf, EpochBatches, Split};
use proptest::prelude::*;

/// A split whose image i is filled with the value i and whose label is i % 10.
fn numbered_split(n: usize, dim: usize) -> Split {
    Split {
        images: (0..n)
            .flat_map(|i| std::iter::repeat_n(i as f32, dim))
            .collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        dim,
    }
}

#[test]
fn same_seed_and_epoch_give_same_order() {
    let a = EpochBatches::new(1000, 32, 7, 3);
    let b = EpochBatches::new(1000, 32, 7, 3);
    assert_eq!(a.order(), b.order());
}

#[test]
fn different_epochs_or_seeds_give_different_orders() {
    let base = EpochBatches::new(1000, 32, 7, 3);
    assert_ne!(base.order(), EpochBatches::new(1000, 32, 7, 4).order());
    assert_ne!(base.order(), EpochBatches::new(1000, 32, 8, 3).order());
    // Seed and epoch are not interchangeable.
    assert_ne!(
        EpochBatches::new(1000, 32, 1, 0).order(),
        EpochBatches::new(1000, 32, 0, 1).order()
    );
}

#[test]
fn reset_regenerates_the_order_of_any_epoch() {
    let mut running = EpochBatches::new(500, 10, 11, 0);
    for epoch in [1, 2, 5, 0] {
        running.reset(epoch);
        assert_eq!(
            running.order(),
            EpochBatches::new(500, 10, 11, epoch).order()
        );
        assert_eq!(running.epoch(), epoch);
    }
}

#[test]
fn order_is_pinned_for_seed_zero_epoch_zero() {
    // Golden values: any change to the mixing, the generator, the bounded-integer method or
    // the shuffle changes them, and with them every published run's example order.
    let batches = EpochBatches::new(50_000, 100, 0, 0);
    assert_eq!(batches.order()[..10], GOLDEN_FIRST_10);
}

/// Cross-checked against an independent Python implementation of the documented algorithm
/// (SplitMix64 mixing and seeding, xoshiro256++, Lemire's method, Durstenfeld's loop).
const GOLDEN_FIRST_10: [usize; 10] = [
    17768, 20842, 25281, 41724, 5807, 36162, 8357, 12128, 37072, 21654,
];

#[test]
fn partial_last_batch_has_the_remainder() {
    let split = numbered_split(10, 3);
    let mut batches = EpochBatches::new(10, 4, 1, 0);
    let mut buf = BatchBuf::new(4, 3);
    let mut sizes = Vec::new();
    while batches.next_into(&split, &mut buf) {
        assert_eq!(buf.x.len(), buf.len * 3);
        assert_eq!(buf.y.len(), buf.len);
        sizes.push(buf.len);
    }
    assert_eq!(sizes, [4, 4, 2]);
    assert_eq!(batches.n_batches(), 3);
    assert_eq!(buf.len, 0);
    assert!(!batches.next_into(&split, &mut buf), "stays exhausted");
}

#[test]
fn batches_do_not_reallocate_their_buffers() {
    let split = numbered_split(103, 784);
    let mut batches = EpochBatches::new(103, 25, 3, 0);
    let mut buf = BatchBuf::new(25, 784);
    let (x_ptr, y_ptr) = (buf.x.as_ptr(), buf.y.as_ptr());
    let order_ptr = batches.order().as_ptr();
    for epoch in 0..3 {
        batches.reset(epoch);
        while batches.next_into(&split, &mut buf) {
            assert_eq!((buf.x.as_ptr(), buf.y.as_ptr()), (x_ptr, y_ptr));
        }
    }
    assert_eq!(batches.order().as_ptr(), order_ptr);
}

#[test]
fn batches_copy_the_right_images_and_labels() {
    let split = numbered_split(50, 5);
    let mut batches = EpochBatches::new(50, 8, 9, 2);
    let order = batches.order().to_vec();
    let mut buf = BatchBuf::new(8, 5);
    let mut seen = Vec::new();
    while batches.next_into(&split, &mut buf) {
        for r in 0..buf.len {
            let row = &buf.x[r * 5..(r + 1) * 5];
            let i = row[0] as usize;
            assert!(row.iter().all(|&v| v == i as f32));
            assert_eq!(buf.y[r], (i % 10) as u8);
            seen.push(i);
        }
    }
    assert_eq!(seen, order);
}

#[test]
fn empty_split_gives_no_batches() {
    let split = numbered_split(0, 4);
    let mut batches = EpochBatches::new(0, 4, 0, 0);
    let mut buf = BatchBuf::new(4, 4);
    assert!(!batches.next_into(&split, &mut buf));
    assert_eq!(batches.n_batches(), 0);
}

proptest! {
    #[test]
    fn every_example_appears_exactly_once_per_epoch(
        n in 0usize..2000,
        batch in 1usize..300,
        seed: u64,
        epoch: u64,
    ) {
        let split = numbered_split(n, 1);
        let mut batches = EpochBatches::new(n, batch, seed, epoch);
        let mut buf = BatchBuf::new(batch, 1);
        let mut count = vec![0u32; n];
        let mut n_batches = 0;
        while batches.next_into(&split, &mut buf) {
            prop_assert!(buf.len >= 1 && buf.len <= batch);
            for &v in &buf.x {
                count[v as usize] += 1;
            }
            n_batches += 1;
        }
        prop_assert!(count.iter().all(|&c| c == 1));
        prop_assert_eq!(n_batches, n.div_ceil(batch));
    }
}
