//! `summary.md`: counts of each kind, test error, activity per step, per-kind averages, and
//! each of the paper's statements (spec §8) next to what this network shows, with a plain
//! verdict and the criterion it was judged by.

use std::fmt::Write as _;

use super::units::{Kind, UnitGeometry};
use super::{Analysis, Provenance, STRONG_FRACTION, figures};

/// Units of each kind, in the order of [`Kind::ALL`].
pub fn kind_counts(geometry: &[UnitGeometry]) -> [usize; 4] {
    let mut counts = [0; 4];
    for g in geometry {
        let k = Kind::ALL.iter().position(|&k| k == g.kind).unwrap_or(3);
        counts[k] += 1;
    }
    counts
}

/// Averages over the units of one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct KindStats {
    /// Units of the kind.
    pub units: usize,
    /// Mean ‖E_i‖.
    pub e_norm: f64,
    /// Mean ‖D_i‖.
    pub d_norm: f64,
    /// Mean ‖C_i‖.
    pub c_norm: f64,
    /// Mean S_ii.
    pub s_self: f64,
    /// Mean Σ_{j≠i}|S_ij|.
    pub recurrent_input: f64,
    /// Median over units of the fraction of examples with z^T_i > 0.
    pub median_active_frac: f64,
    /// First-step counts pooled over the kind's units (`[t − 1]`, then never).
    pub first_on: Vec<u64>,
}

impl KindStats {
    /// P(first turns on at step t | turns on), pooled over units and examples.
    pub fn p_first_on(&self, t: usize) -> f64 {
        let ever: u64 = self.first_on[..self.first_on.len() - 1].iter().sum();
        if ever == 0 {
            f64::NAN
        } else {
            self.first_on[t - 1] as f64 / ever as f64
        }
    }

    /// The step at which units of this kind most often first turn on (None if they never do).
    pub fn modal_first_step(&self) -> Option<usize> {
        let steps = &self.first_on[..self.first_on.len() - 1];
        let best = steps.iter().copied().max().filter(|&c| c > 0)?;
        steps.iter().position(|&c| c == best).map(|t| t + 1)
    }
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = v.fold((0.0, 0usize), |(s, c), x| (s + x, c + 1));
    if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let k = v.len();
    if k % 2 == 1 {
        v[k / 2]
    } else {
        0.5 * (v[k / 2 - 1] + v[k / 2])
    }
}

/// The averages of [`KindStats`] over the units of `kind`.
pub fn kind_stats(a: &Analysis, kind: Kind) -> KindStats {
    let idx: Vec<usize> = (0..a.geometry.len())
        .filter(|&i| a.geometry[i].kind == kind)
        .collect();
    let g = |f: fn(&UnitGeometry) -> f64| mean(idx.iter().map(|&i| f(&a.geometry[i])));
    let examples = a.stats.examples.max(1) as f64;
    let mut first_on = vec![0u64; a.stats.n_steps + 1];
    for &i in &idx {
        for (acc, c) in first_on.iter_mut().zip(&a.stats.units[i].first_on) {
            *acc += c;
        }
    }
    KindStats {
        units: idx.len(),
        e_norm: g(|u| u.e_norm),
        d_norm: g(|u| u.d_norm),
        c_norm: g(|u| u.c_norm),
        s_self: g(|u| u.s_self),
        recurrent_input: g(|u| u.recurrent_input),
        median_active_frac: median(
            idx.iter()
                .map(|&i| a.stats.units[i].active as f64 / examples)
                .collect(),
        ),
        first_on,
    }
}

/// A number with `digits` decimals, or "–" when undefined.
fn f(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "–".into()
    }
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1} %", 100.0 * v)
    } else {
        "–".into()
    }
}

/// How one of the paper's statements fares on this network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The measurement meets the stated criterion.
    Agrees,
    /// It does not.
    Disagrees,
    /// The network lacks the units the statement is about (e.g. no categorical units).
    NotTestable,
    /// Only the figures speak to it.
    Visual,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Agrees => "agrees",
            Verdict::Disagrees => "**disagrees**",
            Verdict::NotTestable => "not testable",
            Verdict::Visual => "see figure",
        }
    }

    fn from_bool(ok: bool) -> Verdict {
        if ok {
            Verdict::Agrees
        } else {
            Verdict::Disagrees
        }
    }
}

/// One row of the comparison with the paper.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The paper's statement (spec §8).
    pub statement: &'static str,
    /// What was measured here, and the criterion.
    pub ours: String,
    /// The verdict.
    pub verdict: Verdict,
}

/// Mean S_ij from part-units j to categorical units i, over pairs whose decoders are aligned
/// (cos ≥ 0.5) and over pairs that are nearly orthogonal (|cos| < 0.2).
fn pooling(a: &Analysis) -> (f64, usize, f64, usize) {
    let n = a.params.n_hidden;
    let (mut al, mut orth) = (Vec::new(), Vec::new());
    for i in (0..n).filter(|&i| a.geometry[i].kind == Kind::Categorical) {
        for j in (0..n).filter(|&j| a.geometry[j].kind == Kind::Part) {
            let c = a.alignment[i * n + j];
            if c >= 0.5 {
                al.push(a.params.s[i * n + j]);
            } else if c.abs() < 0.2 {
                orth.push(a.params.s[i * n + j]);
            }
        }
    }
    let (ka, ko) = (al.len(), orth.len());
    (mean(al.into_iter()), ka, mean(orth.into_iter()), ko)
}

/// Mean cos(D^t_i, D_i) over the units of `kind` whose step-t decoder is non-zero.
fn decoder_cos(a: &Analysis, t: usize, kind: Kind) -> f64 {
    mean(
        (0..a.geometry.len())
            .filter(|&i| a.geometry[i].kind == kind)
            .map(|i| a.step_decoder_cos[t - 1][i])
            .filter(|c| c.is_finite()),
    )
}

/// Each statement of spec §8 against this network.
pub fn comparisons(a: &Analysis) -> Vec<Comparison> {
    let n = a.geometry.len();
    let part = kind_stats(a, Kind::Part);
    let cat = kind_stats(a, Kind::Categorical);
    let has_cat = cat.units > 0;
    let has_both = has_cat && part.units > 0;
    let t_max = a.stats.n_steps;
    let mut rows = Vec::new();

    let frac = cat.units as f64 / n.max(1) as f64;
    rows.push(Comparison {
        statement: "About 10 % of the 400 units end up categorical.",
        ours: format!(
            "{} of {n} units ({}); criterion: 5–20 %",
            cat.units,
            pct(frac)
        ),
        verdict: Verdict::from_bool((0.05..=0.20).contains(&frac)),
    });

    let strong = &a.strong_per_class;
    let med = median(strong.iter().map(|&c| c as f64).collect());
    rows.push(Comparison {
        statement: "About 2 strong C connections per class.",
        ours: format!(
            "per class {:?} (C_qi ≥ {STRONG_FRACTION} × the class's largest weight), median {}; \
             criterion: median 1–3",
            strong,
            f(med, 1)
        ),
        verdict: Verdict::from_bool((1.0..=3.0).contains(&med)),
    });

    rows.push(Comparison {
        statement: "Categorical units are rarely active (≤ ~10 % of inputs).",
        ours: format!(
            "median active fraction: categorical {}, part {}; criterion: categorical ≤ 10 %",
            pct(cat.median_active_frac),
            pct(part.median_active_frac)
        ),
        verdict: if has_cat {
            Verdict::from_bool(cat.median_active_frac <= 0.10)
        } else {
            Verdict::NotTestable
        },
    });

    let versus = |what: &'static str, c: f64, p: f64, digits: usize| Comparison {
        statement: what,
        ours: format!(
            "mean categorical {}, part {}; criterion: categorical > part",
            f(c, digits),
            f(p, digits)
        ),
        verdict: if has_both {
            Verdict::from_bool(c > p)
        } else {
            Verdict::NotTestable
        },
    };
    rows.push(versus(
        "Categorical units have large ‖C_i‖.",
        cat.c_norm,
        part.c_norm,
        3,
    ));
    rows.push(versus(
        "Categorical units have strong recurrent input (Σ_{j≠i}|S_ij|).",
        cat.recurrent_input,
        part.recurrent_input,
        3,
    ));
    rows.push(versus(
        "Categorical units have a strong positive self-connection S_ii.",
        cat.s_self,
        part.s_self,
        3,
    ));

    // Pairs i ≠ j of categorical units, split by whether they vote for the same class.
    let (units, block) = &a.categorical;
    let k = units.len();
    let (mut same, mut other) = (Vec::new(), Vec::new());
    for r in 0..k {
        for c in (0..k).filter(|&c| c != r) {
            if a.geometry[units[r]].c_class == a.geometry[units[c]].c_class {
                same.push(block[r * k + c]);
            } else {
                other.push(block[r * k + c]);
            }
        }
    }
    let neg = other.iter().filter(|&&v| v < 0.0).count() as f64 / other.len().max(1) as f64;
    let (other_n, same_n) = (other.len(), same.len());
    let (other_mean, same_mean) = (mean(other.into_iter()), mean(same.into_iter()));
    rows.push(Comparison {
        statement: "Categorical units inhibit each other.",
        ours: format!(
            "mean S_ij between categorical units of different classes {} over {other_n} pairs \
             ({} negative), of the same class {} over {same_n} pairs; criterion: \
             different-class mean < 0",
            f(other_mean, 4),
            pct(neg),
            f(same_mean, 4)
        ),
        verdict: if other_n > 0 {
            Verdict::from_bool(other_mean < 0.0)
        } else {
            Verdict::NotTestable
        },
    });

    let (cat_mode, part_mode) = (cat.modal_first_step(), part.modal_first_step());
    let step = |s: Option<usize>| s.map_or("never".to_string(), |t| t.to_string());
    rows.push(Comparison {
        statement: "Categorical units usually switch on at step 2, part-units at step 1.",
        ours: format!(
            "most common first step: categorical {} (P(step 2 | on) = {}), part {} \
             (P(step 1 | on) = {}); criterion: modes 2 and 1",
            step(cat_mode),
            f(
                if t_max >= 2 {
                    cat.p_first_on(2)
                } else {
                    f64::NAN
                },
                2
            ),
            step(part_mode),
            f(part.p_first_on(1), 2)
        ),
        verdict: if has_both {
            Verdict::from_bool(cat_mode == Some(2) && part_mode == Some(1))
        } else {
            Verdict::NotTestable
        },
    });

    rows.push(Comparison {
        statement: "Part-units' incoming S − I weights track −α·DᵀD (ISTA).",
        ours: format!(
            "S_ij against −α·D_iᵀD_j (j ≠ i): correlation {} and slope {} over {} pairs \
             (α = {}); criterion: correlation ≥ 0.8",
            f(a.ista.correlation, 3),
            f(a.ista.slope, 3),
            a.ista.pairs,
            f(a.alpha, 4)
        ),
        verdict: if part.units > 0 {
            Verdict::from_bool(a.ista.correlation >= 0.8)
        } else {
            Verdict::NotTestable
        },
    });

    let (al, ka, orth, ko) = pooling(a);
    rows.push(Comparison {
        statement: "Categorical units pool over part-units: positive S_ij from aligned \
                    decoders, negative from orthogonal ones (the \"V\" plot).",
        ours: format!(
            "mean S_ij from part to categorical units: {} over {ka} aligned pairs \
             (cos ≥ 0.5), {} over {ko} orthogonal pairs (|cos| < 0.2); criterion: > 0 and < 0",
            f(al, 4),
            f(orth, 4)
        ),
        verdict: if ka > 0 && ko > 0 {
            Verdict::from_bool(al > 0.0 && orth < 0.0)
        } else {
            Verdict::NotTestable
        },
    });

    let (p1, c1, ct) = (
        decoder_cos(a, 1, Kind::Part),
        decoder_cos(a, 1, Kind::Categorical),
        decoder_cos(a, t_max, Kind::Categorical),
    );
    rows.push(Comparison {
        statement: "Part decoders are formed at step 1; categorical decoders sharpen over time.",
        ours: format!(
            "mean cos(D^t_i, D_i) of the least-squares decoders: part {} at t = 1; \
             categorical {} at t = 1, {} at t = {t_max}; criterion: part > categorical at \
             t = 1 and categorical rises",
            f(p1, 3),
            f(c1, 3),
            f(ct, 3)
        ),
        verdict: if has_both && c1.is_finite() && ct.is_finite() {
            Verdict::from_bool(p1 > c1 && ct > c1)
        } else {
            Verdict::NotTestable
        },
    });

    rows.push(Comparison {
        statement: "Categorical decoders look like whole-digit prototypes.",
        ours: "decoders_by_angle.png (categorical tiles outlined in red with their class)".into(),
        verdict: Verdict::Visual,
    });
    rows
}

/// The whole `summary.md`.
pub fn markdown(a: &Analysis, prov: &Provenance) -> String {
    let n = a.geometry.len();
    let t_max = a.stats.n_steps;
    let th = a.thresholds;
    let mut s = String::new();
    let _ = writeln!(s, "# Analysis of `{}`\n", prov.checkpoint);
    let _ = writeln!(
        s,
        "Trained to {}; n = {n} units, T = {t_max} steps. Test examples analysed: {} of {} \
         ({}). Code revision {}; worker threads: {} (results do not depend on the count).\n",
        prov.trained, prov.examples.0, prov.examples.1, prov.data, prov.git_rev, prov.threads
    );
    let _ = writeln!(
        s,
        "Definitions: the angle of unit i is arccos(E_i·D_i / (‖E_i‖‖D_i‖)), E_i row i of E, \
         D_i column i of D. Part-unit: angle < {} rad; categorical: > {} rad; intermediate: \
         between (`--part-below`, `--categorical-above`). Recurrent input = Σ_{{j≠i}} |S_ij|. \
         Active = z^T_i > 0 in the final code. First step on = smallest t with z^t_i > 0. \
         Everything is computed with the f64 reference forward.\n",
        f(th.part_below, 2),
        f(th.categorical_above, 2)
    );

    let _ = writeln!(s, "## Kinds\n\n| kind | units | fraction |\n|---|---|---|");
    for (kind, c) in Kind::ALL.iter().zip(kind_counts(&a.geometry)) {
        if *kind != Kind::Undefined || c > 0 {
            let _ = writeln!(
                s,
                "| {} | {c} | {} |",
                kind.as_str(),
                pct(c as f64 / n.max(1) as f64)
            );
        }
    }

    let _ = writeln!(
        s,
        "\n## Test error and activity\n\nTest error {} on {} examples (the paper: 1.08 % \
         for n = 400, T = 11 after the full schedule).\n",
        pct(a.stats.error_rate()),
        a.stats.examples
    );
    let _ = writeln!(
        s,
        "| step | mean active units | fraction of n |\n|---|---|---|"
    );
    for (t, m) in a.stats.mean_active_per_step().iter().enumerate() {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            t + 1,
            f(*m, 1),
            f(m / n.max(1) as f64, 3)
        );
    }

    let _ = writeln!(
        s,
        "\n## Per kind\n\n| kind | units | ‖E_i‖ | ‖D_i‖ | ‖C_i‖ | S_ii | recurrent input | \
         median active | P(first on at 1 \\| on) | P(first on at 2 \\| on) |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    for kind in [Kind::Part, Kind::Intermediate, Kind::Categorical] {
        let k = kind_stats(a, kind);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            kind.as_str(),
            k.units,
            f(k.e_norm, 4),
            f(k.d_norm, 3),
            f(k.c_norm, 3),
            f(k.s_self, 3),
            f(k.recurrent_input, 3),
            pct(k.median_active_frac),
            f(k.p_first_on(1), 2),
            f(
                if t_max >= 2 {
                    k.p_first_on(2)
                } else {
                    f64::NAN
                },
                2
            ),
        );
    }

    let _ = writeln!(
        s,
        "\n## Per-step least-squares decoders\n\nMean cos(D^t_i, D_i) between each unit's \
         least-squares decoder at step t (fit of x ≈ D^t·z^t over the examples, ridge ε = {} × \
         the mean diagonal of Z^tᵀZ^t) and its trained decoder, over units whose step-t \
         decoder is non-zero.\n\n| step | part | intermediate | categorical |\n|---|---|---|---|",
        a.ridge
    );
    for t in 1..=t_max {
        let _ = writeln!(
            s,
            "| {t} | {} | {} | {} |",
            f(decoder_cos(a, t, Kind::Part), 3),
            f(decoder_cos(a, t, Kind::Intermediate), 3),
            f(decoder_cos(a, t, Kind::Categorical), 3)
        );
    }

    let _ = writeln!(
        s,
        "\n## Compared with the paper (spec §8)\n\n| the paper | this network | verdict |\n\
         |---|---|---|"
    );
    let rows = comparisons(a);
    // A `|` inside a cell would end it.
    let cell = |text: &str| text.replace('|', "\\|");
    for c in &rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            cell(c.statement),
            cell(&c.ours),
            c.verdict.as_str()
        );
    }
    let disagree: Vec<&str> = rows
        .iter()
        .filter(|c| c.verdict == Verdict::Disagrees)
        .map(|c| c.statement)
        .collect();
    if disagree.is_empty() {
        let _ = writeln!(s, "\nNo measured statement disagrees with the paper.");
    } else {
        let _ = writeln!(
            s,
            "\nWhere this network disagrees with the paper: {}",
            disagree.join(" ")
        );
    }

    let _ = writeln!(
        s,
        "\n## Files\n\n- `units.csv`: one row per unit (angle, kind, norms, classifier class, \
         S_ii, recurrent input, activity, first-step counts)."
    );
    for fig in &figures::FIGURES {
        let _ = writeln!(s, "- `{}`: {}", fig.file, fig.what);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::tests::hand_analysis;

    #[test]
    fn verdicts_on_hand_built_network() {
        let a = hand_analysis();
        let rows = comparisons(&a);
        let verdict = |prefix: &str| {
            rows.iter()
                .find(|c| c.statement.starts_with(prefix))
                .map(|c| c.verdict)
        };
        // 1 of 4 units categorical: 25 %, outside 5–20 %.
        assert_eq!(verdict("About 10 %"), Some(Verdict::Disagrees));
        // Strong connections per class [2, 1]: median 1.5.
        assert_eq!(verdict("About 2 strong"), Some(Verdict::Agrees));
        // Unit 3 is active on every example.
        assert_eq!(
            verdict("Categorical units are rarely"),
            Some(Verdict::Disagrees)
        );
        // ‖C_3‖ = 4.03 against a part mean of 1.5; S_33 = 1.3 against 0.85.
        assert_eq!(
            verdict("Categorical units have large"),
            Some(Verdict::Agrees)
        );
        assert_eq!(
            verdict("Categorical units have a strong"),
            Some(Verdict::Agrees)
        );
        // A single categorical unit: no pair to inhibit.
        assert_eq!(
            verdict("Categorical units inhibit"),
            Some(Verdict::NotTestable)
        );
        // Unit 3 first turns on at step 2 in two of three examples; unit 0 at step 1.
        assert_eq!(verdict("Categorical units usually"), Some(Verdict::Agrees));
    }

    #[test]
    fn kind_stats_pool_first_steps() {
        let a = hand_analysis();
        let part = kind_stats(&a, Kind::Part);
        assert_eq!(part.units, 2);
        // Unit 0: step 1 twice, never once; unit 1: never three times.
        assert_eq!(part.first_on, [2, 0, 0, 4]);
        assert_eq!(part.modal_first_step(), Some(1));
        assert!((part.c_norm - 1.5).abs() < 1e-12);
        // Active fractions 2/3 and 0: median 1/3.
        assert!((part.median_active_frac - 1.0 / 3.0).abs() < 1e-12);
        let cat = kind_stats(&a, Kind::Categorical);
        assert_eq!(cat.modal_first_step(), Some(2));
        assert!((cat.p_first_on(2) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(kind_counts(&a.geometry), [2, 1, 1, 0]);
    }
}
