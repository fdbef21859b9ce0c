//! Seeded shuffled minibatches whose order depends only on `(seed, epoch)`, copied into reused buffers.
//!
//! The permutation for an epoch is a hand-written Fisher–Yates shuffle driven by
//! `Xoshiro256PlusPlus::seed_from_u64(mix(seed, epoch))`, with Lemire's unbiased bounded
//! integers. Everything is pinned here rather than borrowed from `rand`'s `shuffle`, whose
//! algorithm may change between versions: a resumed run must regenerate epoch k's order from
//! `(seed, epoch)` alone, bit for bit, on every machine and at every thread count.

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};

use crate::mnist::Split;

/// A reusable minibatch: up to `batch_size` rows of `dim` pixels, and their labels.
///
/// Its vectors are allocated once with room for a full batch; [`EpochBatches::next_into`]
/// refills them in place, so training allocates nothing per batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchBuf {
    /// `len × dim` pixels, row-major (capacity `batch_size × dim`).
    pub x: Vec<f32>,
    /// `len` labels.
    pub y: Vec<u8>,
    /// Number of examples in this batch; the last batch of an epoch may be partial.
    pub len: usize,
    /// Pixels per example.
    dim: usize,
}

impl BatchBuf {
    /// An empty buffer with room for `batch_size` examples of `dim` pixels.
    pub fn new(batch_size: usize, dim: usize) -> Self {
        Self {
            x: Vec::with_capacity(batch_size * dim),
            y: Vec::with_capacity(batch_size),
            len: 0,
            dim,
        }
    }

    /// Pixels per example.
    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// The minibatches of one epoch, in the order fixed by `(seed, epoch)`.
#[derive(Debug, Clone)]
pub struct EpochBatches {
    /// The permutation of `0..n` for the current epoch.
    order: Vec<usize>,
    /// Examples per full batch.
    batch_size: usize,
    /// The run's seed.
    seed: u64,
    /// The current epoch.
    epoch: u64,
    /// Position in `order` of the next batch's first example.
    pos: usize,
}

impl EpochBatches {
    /// The batches of epoch `epoch` over `n_examples` examples for a run seeded with `seed`.
    ///
    /// # Panics
    /// If `batch_size` is zero.
    pub fn new(n_examples: usize, batch_size: usize, seed: u64, epoch: u64) -> Self {
        assert!(batch_size > 0, "batch_size must be at least 1");
        let mut batches = Self {
            order: Vec::with_capacity(n_examples),
            batch_size,
            seed,
            epoch,
            pos: 0,
        };
        batches.order.extend(0..n_examples);
        batches.reset(epoch);
        batches
    }

    /// Starts epoch `epoch` over again, regenerating its order in the existing buffer.
    pub fn reset(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.pos = 0;
        for (i, slot) in self.order.iter_mut().enumerate() {
            *slot = i;
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix(self.seed, epoch));
        shuffle(&mut self.order, &mut rng);
    }

    /// Copies the next batch of `split` into `buf`; returns `false` (leaving `buf.len == 0`)
    /// once the epoch is exhausted. The last batch holds the remaining `n % batch_size`
    /// examples when that is not zero.
    ///
    /// # Panics
    /// If `split` does not have the `n_examples` this object was made for, or its `dim`
    /// differs from `buf`'s.
    pub fn next_into(&mut self, split: &Split, buf: &mut BatchBuf) -> bool {
        assert_eq!(
            split.len(),
            self.order.len(),
            "split size differs from EpochBatches size"
        );
        assert_eq!(split.dim, buf.dim, "split dim differs from BatchBuf dim");
        buf.x.clear();
        buf.y.clear();
        let end = self.order.len().min(self.pos + self.batch_size);
        let Some(indices) = self.order.get(self.pos..end).filter(|s| !s.is_empty()) else {
            buf.len = 0;
            return false;
        };
        for &i in indices {
            buf.x.extend_from_slice(split.image(i));
            buf.y.push(split.labels[i]);
        }
        buf.len = indices.len();
        self.pos = end;
        true
    }

    /// The permutation of `0..n` for the current epoch.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of batches per epoch, counting a final partial one.
    pub fn n_batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }
}

/// The SplitMix64 finaliser (Steele, Lea & Flood 2014): a bijection on `u64` whose outputs for
/// consecutive inputs look independent.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator seed for `epoch` of a run seeded with `seed`:
/// `splitmix64(seed ^ splitmix64(epoch))`.
///
/// Hashing the epoch first means neighbouring epochs (and neighbouring seeds) give unrelated
/// streams, unlike `seed + epoch`, which would make seed 1 epoch 0 equal seed 0 epoch 1.
pub fn mix(seed: u64, epoch: u64) -> u64 {
    splitmix64(seed ^ splitmix64(epoch))
}

/// A uniform integer in `0..bound` (`bound > 0`) by Lemire's multiply-and-reject method
/// ("Fast random integer generation in an interval", 2019).
///
/// Naively `next_u64() % bound`, which is biased when `bound` does not divide 2⁶⁴. Here the
/// 128-bit product `x · bound` is taken; its high word is the result, and products whose low
/// word falls below `2⁶⁴ mod bound` are rejected, which makes every result equally likely.
fn bounded(rng: &mut impl Rng, bound: u64) -> u64 {
    let mut m = u128::from(rng.next_u64()) * u128::from(bound);
    if (m as u64) < bound {
        let threshold = bound.wrapping_neg() % bound;
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(bound);
        }
    }
    (m >> 64) as u64
}

/// Fisher–Yates (Durstenfeld) shuffle: for i from n−1 down to 1, swap element i with a
/// uniform j in 0..=i.
fn shuffle(order: &mut [usize], rng: &mut impl Rng) {
    for i in (1..order.len()).rev() {
        let j = bounded(rng, i as u64 + 1) as usize;
        order.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_stays_in_range_and_covers_it() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let v = bounded(&mut rng, 7);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn bounded_of_one_is_zero() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        assert!((0..100).all(|_| bounded(&mut rng, 1) == 0));
    }

    #[test]
    fn mix_separates_seed_and_epoch() {
        assert_ne!(mix(1, 0), mix(0, 1));
        assert_ne!(mix(0, 0), mix(0, 1));
    }

    #[test]
    fn splitmix64_matches_reference_value() {
        // First output of the reference SplitMix64 generator seeded with 0 (Vigna's splitmix64.c).
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }
}
