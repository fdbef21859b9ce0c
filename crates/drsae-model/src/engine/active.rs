//! The units active in at least one example of a group, step by step: the depth of the
//! products that follow (`Z_t·Sᵀ`, `DA_t·S`, `Z_T·Dᵀ`), whose other rows of the weights meet
//! only zeros and are skipped.

/// Per step, the ascending list of units active in at least one example of a group.
#[derive(Clone, Debug)]
pub(super) struct ActiveUnion {
    n: usize,
    /// Step s's list at `s·n`, its length in `len[s]`.
    units: Vec<u32>,
    len: Vec<usize>,
    /// Scratch: which units the step being built has seen.
    seen: Vec<bool>,
}

impl ActiveUnion {
    /// Room for `steps` steps of `n` units (no allocation afterwards).
    pub(super) fn new(steps: usize, n: usize) -> Self {
        Self {
            n,
            units: vec![0; steps * n],
            len: vec![0; steps],
            seen: vec![false; n],
        }
    }

    /// The units active at step `s` in some example of the last pass, ascending.
    pub(super) fn step(&self, s: usize) -> &[u32] {
        &self.units[s * self.n..s * self.n + self.len[s]]
    }

    /// Starts step `s`'s union; add each example's active list, then finish it.
    pub(super) fn start(&mut self, s: usize) -> UnionBuilder<'_> {
        self.seen.fill(false);
        UnionBuilder { union: self, s }
    }
}

/// One step's union being gathered (see [`ActiveUnion::start`]).
pub(super) struct UnionBuilder<'a> {
    union: &'a mut ActiveUnion,
    s: usize,
}

impl UnionBuilder<'_> {
    /// Adds one example's active units (indices below n).
    pub(super) fn add(&mut self, active: &[u32]) {
        for &i in active {
            self.union.seen[i as usize] = true;
        }
    }

    /// Stores the union, ascending, as the step's list.
    pub(super) fn finish(self) {
        let ActiveUnion {
            n,
            units,
            len,
            seen,
            ..
        } = self.union;
        let out = &mut units[self.s * *n..(self.s + 1) * *n];
        let mut count = 0;
        for (i, _) in seen.iter().enumerate().filter(|&(_, &on)| on) {
            out[count] = i as u32;
            count += 1;
        }
        len[self.s] = count;
    }
}

#[cfg(test)]
mod tests {
    use super::ActiveUnion;

    #[test]
    fn union_is_ascending_without_repeats_and_per_step() {
        let mut u = ActiveUnion::new(2, 10);
        let mut b = u.start(0);
        b.add(&[7, 2, 9]);
        b.add(&[2, 3]);
        b.add(&[]);
        b.finish();
        let mut b = u.start(1);
        b.add(&[0]);
        b.finish();
        assert_eq!(u.step(0), &[2, 3, 7, 9]);
        assert_eq!(u.step(1), &[0]);
        // A new pass replaces a step's list rather than adding to it.
        let mut b = u.start(0);
        b.add(&[5]);
        b.finish();
        assert_eq!(u.step(0), &[5]);
    }
}
