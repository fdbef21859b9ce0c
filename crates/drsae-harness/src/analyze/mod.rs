//! `drsae analyze`: what a trained network shows (spec §8): part-units and categorical units,
//! their connections, when they turn on, per-step decoders and progressive reconstructions.
//!
//! - [`units`]: per-unit geometry from the parameters alone (angles, kinds, norms, V plot).
//! - [`activity`]: one f64 reference pass over the test set (activity, first step on, the
//!   sums behind the per-step least-squares decoders).
//! - [`figures`]: the PNG figures; [`summary`]: `summary.md`, compared with the paper.
//!
//! Outputs in `--out DIR`: `units.csv` (one row per unit, columns in [`units_csv`]),
//! `summary.md` and the PNGs listed in [`figures::FIGURES`]. Existing files of those names are
//! replaced (each written atomically); nothing else in the folder is touched.

pub mod activity;
pub mod figures;
pub mod summary;
pub mod units;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use drsae_model::Params;
use drsae_model::checkpoint::{self, CheckpointError};
use drsae_model::reference;

use crate::cli_data::{DataArgs, DatasetArg};
use activity::PassStats;
use drsae_data::mnist::ChecksumStatus;
use units::{IstaFit, Kind, Thresholds, UnitGeometry, VSeries};

/// Flags of `drsae analyze`.
#[derive(Clone, Debug, Args)]
pub struct AnalyzeArgs {
    /// Checkpoint to analyse.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// Folder for units.csv, summary.md and the figures (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Analyse only the first N test examples (default: the whole test split).
    #[arg(long, value_name = "N")]
    pub examples: Option<usize>,
    /// Units whose encoder/decoder angle is below this (radians) are part-units.
    #[arg(long, default_value_t = 0.5, value_name = "RAD")]
    pub part_below: f64,
    /// Units whose encoder/decoder angle is above this (radians) are categorical units.
    #[arg(long, default_value_t = 0.7, value_name = "RAD")]
    pub categorical_above: f64,
    /// Ridge of the per-step least-squares decoders, relative to the mean diagonal of Z^tᵀZ^t.
    #[arg(long, default_value_t = 1e-3)]
    pub ridge: f64,
    /// Test digits shown in the progressive-reconstruction figure (the first N analysed).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub digits: usize,
    /// Worker threads (default: all cores); results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Dataset location and options.
    #[command(flatten)]
    pub data: DataArgs,
}

/// Why `drsae analyze` failed; every variant names the file or flag concerned.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The data could not be read.
    #[error(transparent)]
    Data(#[from] drsae_data::DataError),
    /// A flag has an unusable value.
    #[error("--{flag}: {message}")]
    Flag {
        /// The flag, without its dashes.
        flag: &'static str,
        /// What is wrong with its value.
        message: String,
    },
    /// The checkpoint and the data disagree.
    #[error("{}: {message}", path.display())]
    Mismatch {
        /// The checkpoint.
        path: PathBuf,
        /// What disagrees.
        message: String,
    },
    /// The worker thread pool could not start.
    #[error("cannot start {threads} worker threads: {message}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// The pool builder's error.
        message: String,
    },
    /// Writing an output failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A figure could not be drawn.
    #[error("{}: cannot draw: {message}", path.display())]
    Plot {
        /// The figure's file.
        path: PathBuf,
        /// The plotting library's error.
        message: String,
    },
}

/// Options of [`compute`] that do not come from the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Kind thresholds.
    pub thresholds: Thresholds,
    /// Relative ridge of the per-step decoders (see [`activity::step_decoders`]).
    pub ridge: f64,
    /// Digits for the progressive reconstruction.
    pub digits: usize,
    /// Examples per chunk of the pass (fixes the summation order).
    pub chunk: usize,
}

/// One test digit of the progressive-reconstruction figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Digit {
    /// Its index in the test split.
    pub index: usize,
    /// Its label.
    pub label: u8,
    /// The input x (unit norm).
    pub x: Vec<f64>,
    /// The final code z^T.
    pub z: Vec<f64>,
}

/// Everything `drsae analyze` computes, before anything is written.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The parameters analysed, in f64.
    pub params: Params<f64>,
    /// α = alpha_scale / T of the checkpoint's config (ISTA's step size).
    pub alpha: f64,
    /// The kind thresholds used.
    pub thresholds: Thresholds,
    /// The relative ridge of the per-step decoders.
    pub ridge: f64,
    /// Per-unit geometry.
    pub geometry: Vec<UnitGeometry>,
    /// The pass over the test examples.
    pub stats: PassStats,
    /// Per step t, D^tᵀ (n×m row-major): row i is unit i's least-squares decoder at step t.
    pub step_decoders: Vec<Vec<f64>>,
    /// Per step t and unit i, cos(D^t_i, D_i) against the trained decoder (NaN if D^t_i = 0).
    pub step_decoder_cos: Vec<Vec<f64>>,
    /// cos(D_i, D_j), n×n.
    pub alignment: Vec<f64>,
    /// The V plot.
    pub v_plot: Vec<VSeries>,
    /// Part-units' S − I against −α·DᵀD.
    pub ista: IstaFit,
    /// Categorical units ordered by class, and S − I among them.
    pub categorical: (Vec<usize>, Vec<f64>),
    /// Units with a strong connection to each class (C_qi ≥ ½ max_j C_qj).
    pub strong_per_class: Vec<usize>,
    /// Units shown in the per-step decoder figure: the most often active part-units, then
    /// the most often active categorical units (up to [`UNITS_SHOWN`] each).
    pub shown_units: Vec<usize>,
    /// Digits of the progressive reconstruction.
    pub digits: Vec<Digit>,
}

/// Units of each of the two main kinds shown in the per-step decoder figure.
pub const UNITS_SHOWN: usize = 4;

/// Bins of the V plot over cos ∈ [−1, 1].
pub const V_BINS: usize = 20;

/// Fraction of a class's largest classifier weight above which a connection counts as strong.
pub const STRONG_FRACTION: f64 = 0.5;

/// Runs every computation of the analysis on `images` (row-major, `labels.len()` × m).
pub fn compute(
    params: Params<f64>,
    n_steps: usize,
    alpha: f64,
    images: &[f32],
    labels: &[u8],
    opts: Options,
    pool: &rayon::ThreadPool,
) -> Analysis {
    let (m, n) = (params.n_input, params.n_hidden);
    let geometry = units::geometry(&params, opts.thresholds);
    let kinds: Vec<Kind> = geometry.iter().map(|g| g.kind).collect();
    let stats = activity::run_pass(&params, images, labels, n_steps, opts.chunk, pool);
    let step_decoders = activity::step_decoders(&stats, opts.ridge, pool);
    let columns: Vec<Vec<f64>> = (0..n).map(|i| units::decoder_column(&params, i)).collect();
    let step_decoder_cos = step_decoders
        .iter()
        .map(|dt| {
            (0..n)
                .map(|i| units::cosine(&dt[i * m..(i + 1) * m], &columns[i]))
                .collect()
        })
        .collect();
    let alignment = units::decoder_alignment(&params);
    let v_plot = units::v_plot(&params, &kinds, &alignment, V_BINS);
    let ista = units::ista_fit(&params, &kinds, alpha);
    let categorical = units::categorical_block(&params, &geometry);
    let strong_per_class = units::strong_connections_per_class(&params, STRONG_FRACTION);
    let mut shown_units = Vec::new();
    for kind in [Kind::Part, Kind::Categorical] {
        let mut of_kind: Vec<usize> = (0..n).filter(|&i| kinds[i] == kind).collect();
        of_kind.sort_by_key(|&i| (std::cmp::Reverse(stats.units[i].active), i));
        shown_units.extend(of_kind.into_iter().take(UNITS_SHOWN));
    }
    let digits = (0..opts.digits.min(labels.len()))
        .map(|index| {
            let x = activity::example(images, m, index);
            let trace = reference::forward(&params, &x, n_steps);
            Digit {
                index,
                label: labels[index],
                z: trace.z_final().to_vec(),
                x,
            }
        })
        .collect();
    Analysis {
        params,
        alpha,
        thresholds: opts.thresholds,
        ridge: opts.ridge,
        geometry,
        stats,
        step_decoders,
        step_decoder_cos,
        alignment,
        v_plot,
        ista,
        categorical,
        strong_per_class,
        shown_units,
        digits,
    }
}

/// A float for the CSV: shortest round-trip form, empty when absent or not finite.
fn csv_num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => String::new(),
    }
}

/// `units.csv`: one row per hidden unit i, with the columns
///
/// - `unit`: i; `kind`: part / intermediate / categorical / undefined (from `angle_rad`);
/// - `angle_rad`: arccos(E_i·D_i / (‖E_i‖‖D_i‖)); `e_norm`, `d_norm`, `c_norm`: ‖E_i‖, ‖D_i‖
///   and the norm of classifier column i;
/// - `c_class`, `c_max`: the class with the largest C_qi, and that weight;
/// - `s_self`: S_ii; `recurrent_input`: Σ_{j≠i} |S_ij|, the total recurrent input strength;
/// - `active_frac`: fraction of test examples with z^T_i > 0; `mean_active`: mean z^T_i over
///   them (empty if never active);
/// - `first_on_1` … `first_on_T`, `first_on_never`: examples whose smallest t with z^t_i > 0
///   is t, or that never turn unit i on; `p_first_on_2`: first_on_2 / examples that turn it on.
pub fn units_csv(geometry: &[UnitGeometry], stats: &PassStats) -> String {
    let t_max = stats.n_steps;
    let mut out = String::from(
        "unit,kind,angle_rad,e_norm,d_norm,c_norm,c_class,c_max,s_self,recurrent_input,\
         active_frac,mean_active",
    );
    for t in 1..=t_max {
        let _ = write!(out, ",first_on_{t}");
    }
    out.push_str(",first_on_never,p_first_on_2\n");
    let examples = stats.examples.max(1) as f64;
    for (i, (g, a)) in geometry.iter().zip(&stats.units).enumerate() {
        let _ = write!(
            out,
            "{i},{},{},{},{},{},{},{},{},{},{},{}",
            g.kind.as_str(),
            csv_num(Some(g.angle)),
            csv_num(Some(g.e_norm)),
            csv_num(Some(g.d_norm)),
            csv_num(Some(g.c_norm)),
            g.c_class,
            csv_num(Some(g.c_max)),
            csv_num(Some(g.s_self)),
            csv_num(Some(g.recurrent_input)),
            csv_num(Some(a.active as f64 / examples)),
            csv_num(a.mean_when_active()),
        );
        for c in &a.first_on {
            let _ = write!(out, ",{c}");
        }
        let p2 = if t_max >= 2 { a.p_first_on(2) } else { None };
        let _ = writeln!(out, ",{}", csv_num(p2));
    }
    out
}

/// Where the analysed network and data came from, for `summary.md`.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The checkpoint file.
    pub checkpoint: String,
    /// "phase, epoch" of the checkpoint's training state.
    pub trained: String,
    /// Which data, and whether its checksums were verified (not its folder, which is
    /// machine-specific and would make committed summaries differ between machines).
    pub data: String,
    /// Test examples analysed, and in the split.
    pub examples: (usize, usize),
    /// Worker threads.
    pub threads: usize,
    /// Git revision of the code.
    pub git_rev: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AnalyzeError + '_ {
    move |source| AnalyzeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `units.csv`, every figure and `summary.md` into `out`; returns the paths written.
pub fn write_outputs(
    a: &Analysis,
    prov: &Provenance,
    out: &Path,
) -> Result<Vec<PathBuf>, AnalyzeError> {
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let mut written = Vec::new();
    let csv_path = out.join("units.csv");
    crate::fsutil::write_atomic(&csv_path, units_csv(&a.geometry, &a.stats).as_bytes())
        .map_err(io_err(&csv_path))?;
    written.push(csv_path);
    written.extend(figures::draw_all(a, out)?);
    let md_path = out.join("summary.md");
    crate::fsutil::write_atomic(&md_path, summary::markdown(a, prov).as_bytes())
        .map_err(io_err(&md_path))?;
    written.push(md_path);
    Ok(written)
}

fn check_flags(args: &AnalyzeArgs) -> Result<(), AnalyzeError> {
    let flag = |flag, message: String| Err(AnalyzeError::Flag { flag, message });
    if !(args.part_below.is_finite() && args.part_below >= 0.0) {
        return flag(
            "part-below",
            format!("{} is not a non-negative angle", args.part_below),
        );
    }
    if !(args.categorical_above.is_finite() && args.categorical_above >= args.part_below) {
        return flag(
            "categorical-above",
            format!(
                "{} must be a finite angle ≥ --part-below ({})",
                args.categorical_above, args.part_below
            ),
        );
    }
    if !(args.ridge.is_finite() && args.ridge > 0.0) {
        return flag("ridge", format!("{} must be positive", args.ridge));
    }
    if args.examples == Some(0) {
        return flag("examples", "must be at least 1".into());
    }
    if args.threads == Some(0) {
        return flag("threads", "must be at least 1".into());
    }
    Ok(())
}

/// Runs `drsae analyze`: loads the checkpoint and the test split, computes, writes, and prints
/// the counts of each kind and the test error.
pub fn run_analyze(args: &AnalyzeArgs) -> Result<(), AnalyzeError> {
    let start = Instant::now();
    check_flags(args)?;
    let ckpt = checkpoint::load(&args.checkpoint)?;
    let data = args.data.load()?;
    let test = &data.test;
    if test.dim != ckpt.config.n_input {
        return Err(AnalyzeError::Mismatch {
            path: args.checkpoint.clone(),
            message: format!(
                "the network takes {} inputs but the images in {} have {} pixels",
                ckpt.config.n_input,
                data.dir.display(),
                test.dim
            ),
        });
    }
    if test.is_empty() {
        return Err(AnalyzeError::Mismatch {
            path: args.checkpoint.clone(),
            message: format!("the test split in {} is empty", data.dir.display()),
        });
    }
    let count = args.examples.unwrap_or(test.len()).min(test.len());
    let threads = args.threads.unwrap_or_else(crate::default_threads);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| AnalyzeError::Threads {
            threads,
            message: e.to_string(),
        })?;
    eprintln!(
        "analyze: {} ({} units, T = {}) on {count} test examples; worker threads: {threads}",
        args.checkpoint.display(),
        ckpt.config.n_hidden,
        ckpt.config.n_steps
    );
    let opts = Options {
        thresholds: Thresholds {
            part_below: args.part_below,
            categorical_above: args.categorical_above,
        },
        ridge: args.ridge,
        digits: args.digits,
        chunk: activity::CHUNK,
    };
    let computing = Instant::now();
    let analysis = compute(
        ckpt.params.to_f64(),
        ckpt.config.n_steps,
        ckpt.config.alpha(),
        &test.images[..count * test.dim],
        &test.labels[..count],
        opts,
        &pool,
    );
    let prov = Provenance {
        checkpoint: args.checkpoint.display().to_string(),
        trained: format!("{}, epoch {}", ckpt.state.phase, ckpt.state.epoch),
        data: format!(
            "{} test split, {}",
            match args.data.dataset {
                DatasetArg::Mnist => "MNIST",
                DatasetArg::FashionMnist => "Fashion-MNIST",
            },
            match data.checksums {
                ChecksumStatus::Verified => "SHA-256 verified",
                ChecksumStatus::Skipped => "checksums not checked (--allow-modified-data)",
                ChecksumStatus::Unknown => "no published checksums",
            }
        ),
        examples: (count, test.len()),
        threads,
        git_rev: crate::git_rev(),
    };
    let computed_s = computing.elapsed().as_secs_f64();
    let writing = Instant::now();
    let written = write_outputs(&analysis, &prov, &args.out)?;
    let counts = summary::kind_counts(&analysis.geometry);
    println!(
        "units             {}",
        Kind::ALL
            .iter()
            .zip(counts)
            .map(|(k, c)| format!("{} {c}", k.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "test error        {:.2}% ({count} examples, f64 reference)",
        100.0 * analysis.stats.error_rate()
    );
    println!(
        "wrote             {} files into {}",
        written.len(),
        args.out.display()
    );
    println!(
        "wall time         {:.1} s (computing {computed_s:.1} s, writing {:.1} s)",
        start.elapsed().as_secs_f64(),
        writing.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analyze::units::tests::hand_network;

    fn pool() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a test thread pool starts")
    }

    /// The analysis of the hand-built network of [`hand_network`] on three inputs.
    pub(crate) fn hand_analysis() -> Analysis {
        // Two copies of x = e₁ (labels 0 and 1) and one of x = e₄ (label 1).
        let images = [
            1.0, 0.0, 0.0, 0.0, //
            1.0, 0.0, 0.0, 0.0, //
            0.0, 0.0, 0.0, 1.0,
        ];
        let opts = Options {
            thresholds: Thresholds::default(),
            ridge: 1e-3,
            digits: 2,
            chunk: 2,
        };
        compute(hand_network(), 3, 0.11, &images, &[0, 1, 1], opts, &pool())
    }

    #[test]
    fn units_table_of_hand_built_network() {
        let a = hand_analysis();
        let csv = units_csv(&a.geometry, &a.stats);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "unit,kind,angle_rad,e_norm,d_norm,c_norm,c_class,c_max,s_self,recurrent_input,\
             active_frac,mean_active,first_on_1,first_on_2,first_on_3,first_on_never,\
             p_first_on_2"
        );
        assert_eq!(lines.len(), 5);
        let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
        let num = |r: usize, c: usize| -> f64 { rows[r][c].parse().unwrap_or(f64::NAN) };
        let kinds: Vec<&str> = rows.iter().map(|r| r[1]).collect();
        assert_eq!(kinds, ["part", "part", "intermediate", "categorical"]);
        for (r, angle) in [0.0, 0.3, 0.6, 1.2].into_iter().enumerate() {
            assert!((num(r, 2) - angle).abs() < 1e-12, "row {r}: {}", rows[r][2]);
        }
        // s_self and recurrent_input.
        assert_eq!(num(3, 8), 1.3);
        assert!((num(3, 9) - 2.0).abs() < 1e-12, "{}", rows[3][9]);
        assert!((num(1, 9) - 0.55).abs() < 1e-12, "{}", rows[1][9]);
        // x = e₄ drives only unit 3 (u_3 = 0.5 − 0.05 = 0.45 at step 1), which then inhibits
        // unit 0 and excites nobody else that is off: unit 3 is on in all three examples,
        // first at step 2 twice and at step 1 once.
        assert_eq!(&rows[3][12..16], ["1", "2", "0", "0"]);
        assert_eq!(rows[3][10], "1");
        assert!((num(3, 16) - 2.0 / 3.0).abs() < 1e-15);
        // Unit 0 is on for the two e₁ inputs only; unit 2 never: empty mean and p_first_on_2.
        assert_eq!(&rows[0][12..16], ["2", "0", "0", "1"]);
        assert_eq!(rows[2][11], "");
        assert_eq!(rows[2][16], "");
        // Unit 1's S row is all ≤ 0 and its drive negative: never on.
        assert_eq!(&rows[1][12..16], ["0", "0", "0", "3"]);
    }

    #[test]
    fn analysis_picks_units_and_digits() {
        let a = hand_analysis();
        // Part-units by activity (unit 0 active twice, unit 1 never), then categorical unit 3.
        assert_eq!(a.shown_units, [0, 1, 3]);
        assert_eq!(a.digits.len(), 2);
        assert_eq!(a.digits[1].label, 1);
        assert_eq!(a.step_decoders.len(), 3);
        assert_eq!(a.categorical.0, [3]);
        assert_eq!(a.strong_per_class, [2, 1]);
    }

    #[test]
    fn outputs_are_written_for_a_tiny_network() {
        let a = hand_analysis();
        let dir = tempfile::tempdir().expect("a temporary folder");
        let prov = Provenance {
            checkpoint: "hand.safetensors".into(),
            trained: "finetune, epoch 1".into(),
            data: "three hand-made inputs".into(),
            examples: (3, 3),
            threads: 2,
            git_rev: "test".into(),
        };
        let written = write_outputs(&a, &prov, dir.path()).expect("outputs are written");
        assert_eq!(written.len(), figures::FIGURES.len() + 2);
        for path in &written {
            let bytes = std::fs::read(path).expect("written file reads back");
            assert!(!bytes.is_empty(), "{} is empty", path.display());
            if path.extension().is_some_and(|e| e == "png") {
                assert_eq!(&bytes[1..4], b"PNG", "{} is not a PNG", path.display());
            }
        }
        let md = std::fs::read_to_string(dir.path().join("summary.md")).expect("summary");
        assert!(md.contains("| part | 2 |"), "{md}");
        assert!(md.contains("| categorical | 1 |"), "{md}");
    }
}
