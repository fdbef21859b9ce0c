//! What the parameters alone say about each hidden unit (spec §8): the angle between its
//! encoder row and decoder column, its kind, norms, self-connection and recurrent input; the
//! "V" plot of S_ij against decoder alignment; how closely part-units' S − I tracks ISTA's
//! −α·DᵀD; and the components of a reconstruction in order of contribution.
//!
//! Everything here is a pure function of `Params<f64>` (and of a code z), so it is tested on
//! hand-built networks without data.

use drsae_model::Params;

/// The two angle thresholds (radians) that sort units into kinds. The paper calls them
/// heuristic, so they are flags, not constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Units with an angle below this are part-units (the paper: 0.5 rad).
    pub part_below: f64,
    /// Units with an angle above this are categorical units (the paper: 0.7 rad).
    pub categorical_above: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            part_below: 0.5,
            categorical_above: 0.7,
        }
    }
}

/// The kind of a unit, from the angle between its encoder row and decoder column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Small angle: ISTA-like, driven directly by the input.
    Part,
    /// Between the two thresholds.
    Intermediate,
    /// Large angle: driven by other units through S, read by the classifier.
    Categorical,
    /// E_i or D_i is zero, so the angle is undefined (a dead unit).
    Undefined,
}

impl Kind {
    /// Every kind, in the order tables list them.
    pub const ALL: [Kind; 4] = [
        Kind::Part,
        Kind::Intermediate,
        Kind::Categorical,
        Kind::Undefined,
    ];

    /// The word written in `units.csv` and `summary.md`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Part => "part",
            Kind::Intermediate => "intermediate",
            Kind::Categorical => "categorical",
            Kind::Undefined => "undefined",
        }
    }

    /// The kind of a unit whose encoder/decoder angle is `angle` (NaN: undefined).
    pub fn classify(angle: f64, th: Thresholds) -> Kind {
        if angle.is_nan() {
            Kind::Undefined
        } else if angle < th.part_below {
            Kind::Part
        } else if angle > th.categorical_above {
            Kind::Categorical
        } else {
            Kind::Intermediate
        }
    }
}

/// What the parameters say about one hidden unit i.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitGeometry {
    /// arccos(E_i·D_i / (‖E_i‖‖D_i‖)) in radians; NaN when either norm is zero.
    pub angle: f64,
    /// The kind that angle implies.
    pub kind: Kind,
    /// ‖E_i‖, the norm of encoder row i.
    pub e_norm: f64,
    /// ‖D_i‖, the norm of decoder column i.
    pub d_norm: f64,
    /// ‖C_i‖, the norm of classifier column i (the unit's weights to all classes).
    pub c_norm: f64,
    /// The class q with the largest (signed) C_qi: the class this unit votes for.
    pub c_class: usize,
    /// That largest weight C_qi.
    pub c_max: f64,
    /// S_ii, the self-connection.
    pub s_self: f64,
    /// Σ_{j≠i} |S_ij|: the total strength of the recurrent input from the other units.
    pub recurrent_input: f64,
}

fn norm(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|a| a * a).sum::<f64>().sqrt()
}

/// Decoder column i of D (m×n row-major), as a vector of length m.
pub fn decoder_column(p: &Params<f64>, i: usize) -> Vec<f64> {
    let n = p.n_hidden;
    (0..p.n_input).map(|k| p.d[k * n + i]).collect()
}

/// The cosine of the angle between two vectors, clamped to [−1, 1]; NaN if either is zero.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = norm(a.iter().copied());
    let nb = norm(b.iter().copied());
    if na == 0.0 || nb == 0.0 {
        f64::NAN
    } else {
        (dot / (na * nb)).clamp(-1.0, 1.0)
    }
}

/// The geometry of every unit, in unit order.
pub fn geometry(p: &Params<f64>, th: Thresholds) -> Vec<UnitGeometry> {
    let (m, n, l) = (p.n_input, p.n_hidden, p.n_classes);
    (0..n)
        .map(|i| {
            let e_row = &p.e[i * m..(i + 1) * m];
            let d_col = decoder_column(p, i);
            let angle = cosine(e_row, &d_col).acos();
            let (c_class, c_max) =
                (0..l)
                    .map(|q| (q, p.c[q * n + i]))
                    .fold((0, f64::NEG_INFINITY), |best, cur| {
                        if cur.1 > best.1 { cur } else { best }
                    });
            UnitGeometry {
                angle,
                kind: Kind::classify(angle, th),
                e_norm: norm(e_row.iter().copied()),
                d_norm: norm(d_col.iter().copied()),
                c_norm: norm((0..l).map(|q| p.c[q * n + i])),
                c_class,
                c_max,
                s_self: p.s[i * n + i],
                recurrent_input: (0..n)
                    .filter(|&j| j != i)
                    .map(|j| p.s[i * n + j].abs())
                    .sum(),
            }
        })
        .collect()
}

/// The n×n matrix of decoder alignments cos(D_i, D_j) (row-major; NaN for a zero column).
pub fn decoder_alignment(p: &Params<f64>) -> Vec<f64> {
    let n = p.n_hidden;
    let cols: Vec<Vec<f64>> = (0..n).map(|i| decoder_column(p, i)).collect();
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            let c = cosine(&cols[i], &cols[j]);
            out[i * n + j] = c;
            out[j * n + i] = c;
        }
    }
    out
}

/// One bin of the "V" plot: the pairs whose decoder alignment falls in `[lo, hi)`.
#[derive(Debug, Clone, PartialEq)]
pub struct VBin {
    /// Lower edge of the alignment bin.
    pub lo: f64,
    /// Upper edge (the last bin includes 1).
    pub hi: f64,
    /// Pairs (i, j), i ≠ j, in the bin.
    pub count: usize,
    /// Mean S_ij over them (NaN when the bin is empty).
    pub mean_s: f64,
}

/// The "V" plot for one combination of kinds: S_ij from `sender` units j to `receiver`
/// units i, binned by cos(D_i, D_j).
#[derive(Debug, Clone, PartialEq)]
pub struct VSeries {
    /// Kind of the receiving unit i.
    pub receiver: Kind,
    /// Kind of the sending unit j.
    pub sender: Kind,
    /// The bins, from −1 to 1.
    pub bins: Vec<VBin>,
}

/// The combinations the V plot shows: part-units among themselves (ISTA predicts
/// S_ij ≈ −α·D_i·D_j), and categorical units' input from part-units and from each other.
pub const V_PAIRS: [(Kind, Kind); 3] = [
    (Kind::Part, Kind::Part),
    (Kind::Categorical, Kind::Part),
    (Kind::Categorical, Kind::Categorical),
];

/// Mean S_ij against the decoder alignment cos(D_i, D_j) in `n_bins` equal bins over [−1, 1],
/// for each combination of [`V_PAIRS`]; pairs with an undefined alignment are left out.
pub fn v_plot(p: &Params<f64>, kinds: &[Kind], alignment: &[f64], n_bins: usize) -> Vec<VSeries> {
    let n = p.n_hidden;
    let width = 2.0 / n_bins as f64;
    V_PAIRS
        .iter()
        .map(|&(receiver, sender)| {
            let mut sums = vec![0.0; n_bins];
            let mut counts = vec![0usize; n_bins];
            for i in (0..n).filter(|&i| kinds[i] == receiver) {
                for j in (0..n).filter(|&j| j != i && kinds[j] == sender) {
                    let a = alignment[i * n + j];
                    if a.is_nan() {
                        continue;
                    }
                    let bin = (((a + 1.0) / width) as usize).min(n_bins - 1);
                    sums[bin] += p.s[i * n + j];
                    counts[bin] += 1;
                }
            }
            let bins = (0..n_bins)
                .map(|b| VBin {
                    lo: -1.0 + b as f64 * width,
                    hi: -1.0 + (b + 1) as f64 * width,
                    count: counts[b],
                    mean_s: if counts[b] == 0 {
                        f64::NAN
                    } else {
                        sums[b] / counts[b] as f64
                    },
                })
                .collect();
            VSeries {
                receiver,
                sender,
                bins,
            }
        })
        .collect()
}

/// How well the incoming weights of part-units follow ISTA: S_ij against −α·D_iᵀD_j over every
/// part-unit i and every other unit j. The diagonal (where ISTA gives S_ii = 1 − α‖D_i‖²) is
/// left out: its few large values would dominate the correlation of the many small
/// off-diagonal ones, which are what explaining-away is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct IstaFit {
    /// Pairs compared.
    pub pairs: usize,
    /// Pearson correlation (NaN with fewer than two pairs or no spread).
    pub correlation: f64,
    /// Least-squares slope of S_ij on −α·D_iᵀD_j (1 for exact ISTA).
    pub slope: f64,
}

/// Compares part-units' incoming off-diagonal S with ISTA's −α·DᵀD (see [`IstaFit`]).
pub fn ista_fit(p: &Params<f64>, kinds: &[Kind], alpha: f64) -> IstaFit {
    let n = p.n_hidden;
    let cols: Vec<Vec<f64>> = (0..n).map(|i| decoder_column(p, i)).collect();
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for i in (0..n).filter(|&i| kinds[i] == Kind::Part) {
        for j in (0..n).filter(|&j| j != i) {
            let dot: f64 = cols[i].iter().zip(&cols[j]).map(|(a, b)| a * b).sum();
            xs.push(-alpha * dot);
            ys.push(p.s[i * n + j]);
        }
    }
    let (correlation, slope) = correlation_and_slope(&xs, &ys);
    IstaFit {
        pairs: xs.len(),
        correlation,
        slope,
    }
}

/// Pearson correlation of (x, y) and the least-squares slope of y on x.
pub fn correlation_and_slope(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let k = xs.len() as f64;
    if xs.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let mx = xs.iter().sum::<f64>() / k;
    let my = ys.iter().sum::<f64>() / k;
    let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
        sxy += (x - mx) * (y - my);
    }
    let corr = if sxx > 0.0 && syy > 0.0 {
        sxy / (sxx * syy).sqrt()
    } else {
        f64::NAN
    };
    let slope = if sxx > 0.0 { sxy / sxx } else { f64::NAN };
    (corr, slope)
}

/// The categorical units ordered by the class they vote for, then by unit index, and S − I
/// among them (k×k row-major, entry (a, b) = S_ij − δ_ij for i = units[a], j = units[b]).
pub fn categorical_block(p: &Params<f64>, geo: &[UnitGeometry]) -> (Vec<usize>, Vec<f64>) {
    let n = p.n_hidden;
    let mut units: Vec<usize> = (0..n)
        .filter(|&i| geo[i].kind == Kind::Categorical)
        .collect();
    units.sort_by_key(|&i| (geo[i].c_class, i));
    let block = units
        .iter()
        .flat_map(|&i| {
            units
                .iter()
                .map(move |&j| p.s[i * n + j] - if i == j { 1.0 } else { 0.0 })
        })
        .collect();
    (units, block)
}

/// For each class q, the number of units with a strong connection to it: C_qi at least
/// `fraction` × the largest C_qj of that class (none when that largest weight is ≤ 0).
pub fn strong_connections_per_class(p: &Params<f64>, fraction: f64) -> Vec<usize> {
    let n = p.n_hidden;
    (0..p.n_classes)
        .map(|q| {
            let row = &p.c[q * n..(q + 1) * n];
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if max <= 0.0 {
                0
            } else {
                row.iter().filter(|&&w| w >= fraction * max).count()
            }
        })
        .collect()
}

/// The components D_i·z_i of the reconstruction D·z, largest contribution ‖D_i‖·z_i first
/// (ties by unit index), leaving out inactive units: (unit, component of length m).
pub fn components_by_contribution(p: &Params<f64>, z: &[f64]) -> Vec<(usize, Vec<f64>)> {
    let n = p.n_hidden;
    let mut active: Vec<(usize, f64)> = (0..n)
        .filter(|&i| z[i] > 0.0)
        .map(|i| (i, norm(decoder_column(p, i).into_iter()) * z[i]))
        .collect();
    active.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    active
        .into_iter()
        .map(|(i, _)| {
            let comp = decoder_column(p, i).iter().map(|d| d * z[i]).collect();
            (i, comp)
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A hand-built network, m = 4 inputs, n = 4 units, l = 2 classes, whose every analysed
    /// quantity is known in closed form:
    ///
    /// | unit | E_i | D_i | angle | kind | C_i | S_ii | Σ_{j≠i}|S_ij| |
    /// |---|---|---|---|---|---|---|---|
    /// | 0 | 0.1·e₁ | e₁ | 0 | part | (1, 0) | 0.9 | 0.3 |
    /// | 1 | 2·e₂ | 0.5·(sin .3 e₁ + cos .3 e₂) | 0.3 | part | (0, 2) | 0.8 | 0.55 |
    /// | 2 | e₃ | cos .6 e₃ + sin .6 e₄ | 0.6 | intermediate | (−3, 0) | 1.1 | 0 |
    /// | 3 | 0.5·e₄ | 0.8·(sin 1.2 e₁ + cos 1.2 e₄) | 1.2 | categorical | (0.5, −4) | 1.3 | 2.0 |
    ///
    /// With b = (0, .01, .01, .05) and x = e₁, unit 0 turns on at step 1, unit 3 (through
    /// S_30 = 1) at step 2, and units 1 and 2 never.
    pub(crate) fn hand_network() -> Params<f64> {
        let (m, n, l) = (4, 4, 2);
        let mut p = Params::<f64>::zeros(m, n, l);
        // E rows.
        p.e[0] = 0.1;
        p.e[m + 1] = 2.0;
        p.e[2 * m + 2] = 1.0;
        p.e[3 * m + 3] = 0.5;
        // D columns (d[k*n + i] = D_ki).
        let set_d = |p: &mut Params<f64>, i: usize, col: [f64; 4]| {
            for (k, v) in col.into_iter().enumerate() {
                p.d[k * n + i] = v;
            }
        };
        set_d(&mut p, 0, [1.0, 0.0, 0.0, 0.0]);
        set_d(
            &mut p,
            1,
            [0.5 * 0.3f64.sin(), 0.5 * 0.3f64.cos(), 0.0, 0.0],
        );
        set_d(&mut p, 2, [0.0, 0.0, 0.6f64.cos(), 0.6f64.sin()]);
        set_d(
            &mut p,
            3,
            [0.8 * 1.2f64.sin(), 0.0, 0.0, 0.8 * 1.2f64.cos()],
        );
        p.c = vec![
            1.0, 0.0, -3.0, 0.5, // class 0
            0.0, 2.0, 0.0, -4.0, // class 1
        ];
        p.s = vec![
            0.9, -0.1, 0.0, -0.2, //
            -0.2, 0.8, -0.05, -0.3, //
            0.0, 0.0, 1.1, 0.0, //
            1.0, 0.4, -0.6, 1.3, //
        ];
        p.b = vec![0.0, 0.01, 0.01, 0.05];
        p
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + b.abs())
    }

    #[test]
    fn geometry_of_hand_built_network_matches_closed_form() {
        let p = hand_network();
        let geo = geometry(&p, Thresholds::default());
        let expected = [
            // angle, kind, ‖E‖, ‖D‖, ‖C‖, class, C max, S_ii, recurrent input
            (0.0, Kind::Part, 0.1, 1.0, 1.0, 0, 1.0, 0.9, 0.3),
            (0.3, Kind::Part, 2.0, 0.5, 2.0, 1, 2.0, 0.8, 0.55),
            (0.6, Kind::Intermediate, 1.0, 1.0, 3.0, 1, 0.0, 1.1, 0.0),
            (
                1.2,
                Kind::Categorical,
                0.5,
                0.8,
                16.25f64.sqrt(),
                0,
                0.5,
                1.3,
                2.0,
            ),
        ];
        assert_eq!(geo.len(), 4);
        for (i, (g, e)) in geo.iter().zip(expected).enumerate() {
            assert!(close(g.angle, e.0), "unit {i}: angle {} ≠ {}", g.angle, e.0);
            assert_eq!(g.kind, e.1, "unit {i}: kind");
            assert!(close(g.e_norm, e.2), "unit {i}: ‖E‖ {}", g.e_norm);
            assert!(close(g.d_norm, e.3), "unit {i}: ‖D‖ {}", g.d_norm);
            assert!(close(g.c_norm, e.4), "unit {i}: ‖C‖ {}", g.c_norm);
            assert_eq!(g.c_class, e.5, "unit {i}: class");
            assert!(close(g.c_max, e.6), "unit {i}: C max {}", g.c_max);
            assert!(close(g.s_self, e.7), "unit {i}: S_ii {}", g.s_self);
            assert!(
                close(g.recurrent_input, e.8),
                "unit {i}: recurrent input {}",
                g.recurrent_input
            );
        }
    }

    #[test]
    fn thresholds_are_respected_at_their_edges() {
        let th = Thresholds {
            part_below: 0.25,
            categorical_above: 1.0,
        };
        assert_eq!(Kind::classify(0.2499, th), Kind::Part);
        assert_eq!(Kind::classify(0.25, th), Kind::Intermediate);
        assert_eq!(Kind::classify(1.0, th), Kind::Intermediate);
        assert_eq!(Kind::classify(1.0001, th), Kind::Categorical);
        assert_eq!(Kind::classify(f64::NAN, th), Kind::Undefined);
        // With these thresholds the hand network's unit 1 (0.3 rad) is no longer a part-unit
        // and unit 3 (1.2 rad) is still categorical.
        let kinds: Vec<Kind> = geometry(&hand_network(), th)
            .iter()
            .map(|g| g.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                Kind::Part,
                Kind::Intermediate,
                Kind::Intermediate,
                Kind::Categorical
            ]
        );
    }

    #[test]
    fn dead_unit_has_undefined_angle() {
        let mut p = hand_network();
        for k in 0..4 {
            p.d[k * 4 + 2] = 0.0;
        }
        let geo = geometry(&p, Thresholds::default());
        assert!(geo[2].angle.is_nan());
        assert_eq!(geo[2].kind, Kind::Undefined);
    }

    #[test]
    fn v_plot_bins_hand_built_pairs() {
        let p = hand_network();
        let kinds: Vec<Kind> = geometry(&p, Thresholds::default())
            .iter()
            .map(|g| g.kind)
            .collect();
        let align = decoder_alignment(&p);
        // cos(D_0, D_1) = sin .3, cos(D_3, D_0) = sin 1.2, cos(D_3, D_1) = sin .3 · sin 1.2.
        assert!(close(align[1], 0.3f64.sin()));
        assert!(close(align[3 * 4], 1.2f64.sin()));
        assert!(close(align[3 * 4 + 1], 0.3f64.sin() * 1.2f64.sin()));
        let v = v_plot(&p, &kinds, &align, 4);
        assert_eq!(v.len(), 3);
        let summary = |s: &VSeries| -> Vec<(usize, f64)> {
            s.bins.iter().map(|b| (b.count, b.mean_s)).collect()
        };
        // part ← part: (0 ← 1) and (1 ← 0), both at 0.2955, in bin [0, 0.5).
        assert_eq!((v[0].receiver, v[0].sender), (Kind::Part, Kind::Part));
        let pp = summary(&v[0]);
        assert_eq!(pp.iter().map(|b| b.0).collect::<Vec<_>>(), [0, 0, 2, 0]);
        assert!(close(pp[2].1, (-0.1 + -0.2) / 2.0));
        // categorical ← part: (3 ← 1) at 0.2755 in [0, 0.5), (3 ← 0) at 0.932 in [0.5, 1].
        assert_eq!(
            (v[1].receiver, v[1].sender),
            (Kind::Categorical, Kind::Part)
        );
        let cp = summary(&v[1]);
        assert_eq!(cp.iter().map(|b| b.0).collect::<Vec<_>>(), [0, 0, 1, 1]);
        assert!(close(cp[2].1, 0.4));
        assert!(close(cp[3].1, 1.0));
        // categorical ← categorical: a single categorical unit, no pair.
        assert!(v[2].bins.iter().all(|b| b.count == 0 && b.mean_s.is_nan()));
        assert!(close(v[0].bins[0].lo, -1.0) && close(v[0].bins[3].hi, 1.0));
    }

    #[test]
    fn ista_fit_is_exact_for_an_ista_network() {
        // The model's own ISTA parameters (S = I − α·DᵀD) make every part-unit's incoming
        // S_ij (j ≠ i) equal −α·D_iᵀD_j.
        let alpha = 0.11;
        let p = drsae_model::init::ista_params(&hand_network().d, 4, 4, 2, alpha, 0.0);
        // Every unit of an ISTA network has E_i ∥ D_i: a part-unit.
        assert!(
            geometry(&p, Thresholds::default())
                .iter()
                .all(|g| g.kind == Kind::Part && g.angle.abs() < 1e-7)
        );
        let kinds = [Kind::Part, Kind::Part, Kind::Intermediate, Kind::Part];
        let fit = ista_fit(&p, &kinds, alpha);
        assert_eq!(fit.pairs, 9);
        assert!((fit.correlation - 1.0).abs() < 1e-12, "{fit:?}");
        assert!((fit.slope - 1.0).abs() < 1e-12, "{fit:?}");
        // The hand network's S is not ISTA's.
        let fit = ista_fit(&hand_network(), &kinds, alpha);
        assert!(fit.correlation < 0.9, "{fit:?}");
    }

    #[test]
    fn categorical_block_holds_s_minus_identity() {
        let mut p = hand_network();
        let mut geo = geometry(&p, Thresholds::default());
        let (units, block) = categorical_block(&p, &geo);
        assert_eq!(units, [3]);
        assert!(close(block[0], 0.3));
        // Make unit 2 categorical too, voting for class 1: it sorts after unit 3 (class 0).
        geo[2].kind = Kind::Categorical;
        p.s[2 * 4 + 3] = -0.7;
        let (units, block) = categorical_block(&p, &geo);
        assert_eq!(units, [3, 2]);
        let want = [0.3, -0.6, -0.7, 0.1];
        for (got, want) in block.iter().zip(want) {
            assert!(close(*got, want), "{block:?}");
        }
    }

    #[test]
    fn strong_connections_count_units_near_the_class_maximum() {
        let p = hand_network();
        // Class 0: weights (1, 0, −3, 0.5), max 1: units ≥ 0.5 are 0 and 3.
        // Class 1: weights (0, 2, 0, −4), max 2: only unit 1.
        assert_eq!(strong_connections_per_class(&p, 0.5), [2, 1]);
        assert_eq!(strong_connections_per_class(&p, 0.4), [2, 1]);
        assert_eq!(strong_connections_per_class(&p, 0.6), [1, 1]);
    }

    #[test]
    fn components_are_ordered_and_sum_to_the_reconstruction() {
        let p = hand_network();
        let z = [0.2, 0.0, 0.1, 0.5];
        let comps = components_by_contribution(&p, &z);
        // Contributions ‖D_i‖·z_i: unit 0 0.2, unit 2 0.1, unit 3 0.4; unit 1 is inactive.
        let order: Vec<usize> = comps.iter().map(|c| c.0).collect();
        assert_eq!(order, [3, 0, 2]);
        for k in 0..4 {
            let sum: f64 = comps.iter().map(|c| c.1[k]).sum();
            let recon: f64 = (0..4).map(|i| p.d[k * 4 + i] * z[i]).sum();
            assert!(close(sum, recon), "pixel {k}: {sum} ≠ {recon}");
        }
    }
}
