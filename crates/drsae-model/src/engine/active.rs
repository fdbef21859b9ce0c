//! The units active in at least one example of a group, step by step: the depth of the
//! products that follow (`Z_t·Sᵀ`, `DA_t·S`, `Z_T·Dᵀ`), whose other rows of the weights meet
//! only zeros and are skipped.

/// One union being gathered (see [`ActiveUnion::build`]).
pub(super) struct UnionBuilder<'a> {
    seen: &'a mut [bool],
}

impl UnionBuilder<'_> {
    /// Adds a list of indices below n.
    pub(super) fn add(&mut self, list: &[u32]) {
        for &i in list {
            self.seen[i as usize] = true;
        }
    }

    /// Writes the union, ascending and without repeats, to the front of `out` (n long);
    /// returns its length.
    pub(super) fn finish(self, out: &mut [u32]) -> usize {
        let mut count = 0;
        for (i, _) in self.seen.iter().enumerate().filter(|&(_, &on)| on) {
            out[count] = i as u32;
            count += 1;
        }
        count
    }
}

/// Per step, the ascending list of units active in at least one example of a group.
#[derive(Clone, Debug)]
pub(super) struct ActiveUnion {
    n: usize,
    /// Step s's list at `s·n`, its length in `len[s]`.
    units: Vec<u32>,
    len: Vec<usize>,
    /// Scratch: which units the union being built holds.
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

    /// Builds step `s`'s list: `fill` adds each example's active units to the builder.
    pub(super) fn build(&mut self, s: usize, fill: impl FnOnce(&mut UnionBuilder<'_>)) {
        self.seen.fill(false);
        let mut b = UnionBuilder {
            seen: &mut self.seen,
        };
        fill(&mut b);
        self.len[s] = b.finish(&mut self.units[s * self.n..(s + 1) * self.n]);
    }
}

#[cfg(test)]
mod tests {
    use super::ActiveUnion;

    #[test]
    fn union_is_ascending_without_repeats_and_per_step() {
        let mut u = ActiveUnion::new(3, 10);
        u.build(0, |b| {
            b.add(&[7, 2, 9]);
            b.add(&[2, 3]);
            b.add(&[]);
        });
        u.build(1, |b| b.add(&[0]));
        u.build(2, |b| b.add(&[9, 4]));
        assert_eq!(u.step(0), &[2, 3, 7, 9]);
        assert_eq!(u.step(1), &[0]);
        let mut v = ActiveUnion::new(1, 10);
        v.build(0, |b| {
            b.add(u.step(1));
            b.add(u.step(2));
        });
        assert_eq!(v.step(0), &[0, 4, 9]);
        // A new pass replaces a step's list rather than adding to it.
        u.build(0, |b| b.add(&[5]));
        assert_eq!(u.step(0), &[5]);
    }
}
