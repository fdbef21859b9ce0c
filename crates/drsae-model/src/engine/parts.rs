//! The engine's split of the model over threads: every step of a minibatch is run as a
//! sequence of stages, and each stage is cut into [`PARTS`] parts that own fixed ranges of the
//! hidden units (their rows of E and Dᵀ, their columns of Sᵀ and S, their columns of every
//! state). A part only ever writes what its units own, so the weights it updates stay in its
//! core's cache from step to step, and only the small activations cross between cores.
//!
//! With one thread the parts of a stage run one after the other; with two or more, one
//! thread per part runs all of its stages, waiting at a [`SpinBarrier`] between them. Which
//! thread runs a part never changes its arithmetic, so results are bit-identical for every
//! thread count.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use drsae_kernels::{MatMut, MatRef};

/// Parts a step is cut into: one per core of the machines this engine is tuned for, fixed
/// so that the arithmetic does not depend on the thread count.
pub(super) const PARTS: usize = 2;

/// Bytes per cache line. Two cores writing one line pass it back and forth at every write
/// (cutting 400 units at 200 instead of 192 made steps 0.82–0.88× as fast), so the parts'
/// ranges and scratch never share one.
const LINE_BYTES: usize = 64;

/// `len` rounded up to whole lines of `T`, plus one line: parts whose scratch starts this
/// many elements apart never write the same line, whatever the allocation's alignment.
pub(super) fn padded<T>(len: usize) -> usize {
    let per_line = LINE_BYTES / std::mem::size_of::<T>();
    len.next_multiple_of(per_line) + per_line
}

/// `0..len` cut into [`PARTS`] ranges at half the length rounded down to whole lines (exact
/// halves below two lines). Part 0, which also runs the classifier, gets the shorter one.
pub(super) fn split(len: usize) -> [Range<usize>; PARTS] {
    let line = LINE_BYTES / std::mem::size_of::<f32>();
    let half = len / PARTS;
    let mid = if half >= line {
        half / line * line
    } else {
        half
    };
    [0..mid, mid..len]
}

/// A barrier for threads that arrive within microseconds of each other: it spins (and
/// yields, so an oversubscribed machine still makes progress) instead of sleeping, whose
/// wake-up costs more than a stage of a minibatch-10 step.
struct SpinBarrier {
    parties: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    /// Set when a party panicked: the others would otherwise wait for it forever.
    poisoned: AtomicBool,
}

/// Poisons its barrier if dropped while its thread unwinds.
struct PoisonOnPanic<'a>(&'a SpinBarrier);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(true, Ordering::Release);
        }
    }
}

impl SpinBarrier {
    fn new(parties: usize) -> Self {
        Self {
            parties,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Returns true once all parties have called `wait`; everything written before any
    /// party's call is visible to all of them after it. Returns false if another party
    /// panicked instead: the caller then stops quietly, so that the panic rayon passes on is
    /// that party's own.
    fn wait(&self) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return true;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if self.poisoned.load(Ordering::Acquire) {
                return false;
            }
            if spins < 4096 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        true
    }
}

/// Runs `stages` stages of [`PARTS`] parts each, `stage(i, p)` being part p of stage i: in
/// order on this thread when `parallel` is false, else one part per thread of the current
/// rayon pool (which must have at least [`PARTS`] threads), with a barrier between stages.
pub(super) fn run(parallel: bool, stages: usize, stage: &(dyn Fn(usize, usize) + Sync)) {
    if !parallel {
        for i in 0..stages {
            for p in 0..PARTS {
                stage(i, p);
            }
        }
        return;
    }
    let barrier = SpinBarrier::new(PARTS);
    rayon::broadcast(|ctx| {
        let p = ctx.index();
        if p >= PARTS {
            return;
        }
        let _poison = PoisonOnPanic(&barrier);
        for i in 0..stages {
            if i > 0 && !barrier.wait() {
                return;
            }
            stage(i, p);
        }
    });
}

/// A buffer that the parts of a stage share: each writes its own disjoint regions and reads
/// only regions that no part writes during the same stage (the barrier between stages
/// orders the rest). A raw pointer, because the regions interleave (column blocks of
/// row-major matrices) and no borrow can be split that way.
#[derive(Clone, Copy)]
pub(super) struct Raw<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: a `Raw` is used only under the access rules above, which exclude data races; the
// element types are plain numbers.
unsafe impl<T: Send> Send for Raw<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Raw<T> {}

impl<T> Raw<T> {
    pub(super) fn new(data: &mut [T]) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
        }
    }

    /// The elements `range`, read.
    ///
    /// # Safety
    /// The storage outlives the use, and no part writes `range` during the current stage.
    pub(super) unsafe fn get(&self, range: Range<usize>) -> &[T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "Raw::get out of bounds"
        );
        // SAFETY: in bounds (checked); no concurrent writer by the caller's promise.
        unsafe { std::slice::from_raw_parts(self.ptr.add(range.start), range.len()) }
    }

    /// The elements `range`, written.
    ///
    /// # Safety
    /// The storage outlives the use, and no other part reads or writes `range` during the
    /// current stage; the caller holds no other reference into `range`.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn get_mut(&self, range: Range<usize>) -> &mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "Raw::get_mut out of bounds"
        );
        // SAFETY: in bounds (checked); exclusive by the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

impl Raw<f32> {
    /// The `rows × cols` block at `at` with row stride `rs`, read.
    ///
    /// # Safety
    /// As [`Raw::get`], for every element from `at` to the block's last.
    pub(super) unsafe fn mat(&self, at: usize, rows: usize, cols: usize, rs: usize) -> MatRef<'_> {
        // The slice ends at the block's last element: what follows may be another part's.
        let data = if rows == 0 || cols == 0 {
            &[]
        } else {
            // SAFETY: forwarded to the caller (`get` checks the bounds).
            unsafe { self.get(at..at + (rows - 1) * rs + cols) }
        };
        MatRef::new(data, rows, cols, rs, 1).expect(super::SHAPED)
    }

    /// The `rows × cols` block at `at` with row stride `rs`, written.
    ///
    /// # Safety
    /// As [`Raw::get_mut`], for the elements of the block (those between its rows may belong
    /// to other parts).
    pub(super) unsafe fn mat_mut(
        &self,
        at: usize,
        rows: usize,
        cols: usize,
        rs: usize,
    ) -> MatMut<'_> {
        let at = at.min(self.len);
        // SAFETY: `at` is in bounds; the view checks its extent against the rest, and the
        // caller promises exclusive access to its elements.
        unsafe {
            MatMut::from_raw_parts(self.ptr.add(at), self.len - at, rows, cols, rs, 1)
                .expect(super::SHAPED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{PARTS, run, split};
    use std::sync::Mutex;

    #[test]
    fn split_covers_the_range_on_line_boundaries() {
        for len in [0, 1, 7, 16, 17, 33, 400, 784] {
            let [a, b] = split(len);
            assert_eq!((a.start, a.end, b.end), (0, b.start, len), "len {len}");
            assert!(a.end % 16 == 0 || len < 32, "len {len}: {a:?}");
            assert!(b.len() >= a.len() && b.len() - a.len() < 32, "len {len}");
        }
        assert_eq!(split(400), [0..192, 192..400]);
        assert_eq!(split(7), [0..3, 3..7]);
    }

    /// Every stage's parts all finish before any part of the next begins, on one thread and
    /// on several.
    #[test]
    fn stages_are_ordered_and_every_part_runs_once() {
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let log = Mutex::new(Vec::new());
            pool.install(|| {
                run(threads > 1, 50, &|i, p| log.lock().unwrap().push((i, p)));
            });
            let log = log.into_inner().unwrap();
            assert_eq!(log.len(), 50 * PARTS, "{threads} threads");
            // A part that panics ends the step with its own panic, whichever part it is,
            // instead of leaving the other part waiting at the next barrier.
            for failing in 0..PARTS {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    pool.install(|| {
                        run(threads > 1, 3, &|i, p| {
                            assert!(i != 1 || p != failing, "stage 1 part {failing} failed")
                        })
                    })
                }));
                let payload = outcome.expect_err("the panic was lost");
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(
                    message,
                    format!("stage 1 part {failing} failed"),
                    "{threads} threads"
                );
            }
            for pair in log.windows(2) {
                assert!(pair[0].0 <= pair[1].0, "{threads} threads: {pair:?}");
            }
            for i in 0..50 {
                let mut parts: Vec<_> = log.iter().filter(|e| e.0 == i).map(|e| e.1).collect();
                parts.sort();
                assert_eq!(parts, (0..PARTS).collect::<Vec<_>>());
            }
        }
    }
}
