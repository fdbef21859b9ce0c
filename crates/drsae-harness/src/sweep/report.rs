//! `drsae report SPEC.toml`: aggregates a sweep's summary over seeds into `report.md` and
//! draws the plots (test error against each swept field, validation curves).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::files::{Layout, atomic_write};
use super::plot::{self, Curve, Point, Series};
use super::runner::duration;
use super::spec::{DataOverrides, Spec};
use super::summary;
use super::{ReportArgs, SweepError};

/// One configuration (the runs that differ only in seed) and what its runs achieved.
#[derive(Debug, Clone)]
pub struct Group {
    /// Values of the spec's swept columns.
    pub values: Vec<String>,
    /// Ids of the spec's runs of this configuration.
    pub run_ids: Vec<String>,
    /// Test errors (fractions) of finished runs.
    pub test: Vec<f64>,
    /// Seed of each of those runs, in the same order.
    pub seeds: Vec<String>,
    /// Best validation errors (fractions) of finished runs.
    pub valid: Vec<f64>,
    /// Best epochs of finished runs.
    pub best_epoch: Vec<f64>,
    /// Wall times (s) of finished runs.
    pub wall: Vec<f64>,
    /// Wall times (s) of finished runs up to their best validation error (where recorded).
    pub wall_at_best: Vec<f64>,
    /// Recorded statuses, counted.
    pub statuses: BTreeMap<String, usize>,
}

/// Mean and sample standard deviation (n − 1 in the denominator; `None` for fewer than two
/// values, where it is undefined).
pub fn mean_std(xs: &[f64]) -> Option<(f64, Option<f64>)> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let std = (xs.len() > 1)
        .then(|| (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    Some((mean, std))
}

/// Groups the spec's runs by configuration (in spec order) and fills in the summary's rows.
pub fn groups(spec: &Spec, rows: &summary::Summary) -> Vec<Group> {
    let header = summary::header(&spec.columns);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or(0);
    let (status, test, valid, epoch, wall, wall_at_best, seed) = (
        col("status"),
        col("test_error_at_best"),
        col("best_valid_error"),
        col("best_epoch"),
        col("wall_s"),
        col("wall_s_at_best"),
        col("seed"),
    );
    let latest = rows.latest();
    let mut groups: Vec<Group> = Vec::new();
    for run in &spec.runs {
        let i = match groups.iter().position(|g| g.values == run.values) {
            Some(i) => i,
            None => {
                groups.push(Group {
                    values: run.values.clone(),
                    run_ids: Vec::new(),
                    test: Vec::new(),
                    seeds: Vec::new(),
                    valid: Vec::new(),
                    best_epoch: Vec::new(),
                    wall: Vec::new(),
                    wall_at_best: Vec::new(),
                    statuses: BTreeMap::new(),
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[i];
        g.run_ids.push(run.id.clone());
        let Some(r) = latest.get(run.id.as_str()) else {
            *g.statuses.entry("not run".into()).or_default() += 1;
            continue;
        };
        *g.statuses.entry(r[status].clone()).or_default() += 1;
        if r[status] == "finished" {
            let num = |c: usize| r[c].parse::<f64>().ok();
            if let Some(t) = num(test) {
                g.test.push(t);
                g.seeds.push(r[seed].clone());
            }
            g.valid.extend(num(valid));
            g.best_epoch.extend(num(epoch));
            g.wall.extend(num(wall));
            g.wall_at_best.extend(num(wall_at_best));
        }
    }
    groups
}

fn pct(xs: &[f64]) -> String {
    match mean_std(xs) {
        None => "–".into(),
        Some((m, None)) => format!("{:.2}", 100.0 * m),
        Some((m, Some(s))) => format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * s),
    }
}

/// The markdown report.
pub fn markdown(
    spec: &Spec,
    groups: &[Group],
    plots: &[PathBuf],
    summary_path: &Path,
    recorded: usize,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Sweep report: {}\n", spec.stem);
    if let Some(d) = &spec.description {
        let _ = writeln!(md, "{}\n", d.trim());
    }
    let _ = writeln!(
        md,
        "Spec `{}`; {recorded} of {} runs recorded in `{}`. Errors are MNIST error rates in %, \
         mean ± sample standard deviation over the seeds whose run finished (n), and each run's \
         with its seed in brackets; the test error is that of the checkpoint with the best \
         validation error. Wall times are means: up to the best validation error, and in all \
         (early stopping's patience included).\n",
        spec.path.display(),
        spec.runs.len(),
        summary_path.display()
    );
    let mut head: Vec<String> = spec.columns.clone();
    head.extend(
        [
            "n",
            "test error (%)",
            "test error by seed (%)",
            "best valid error (%)",
            "best epoch",
            "wall time to best",
            "wall time",
            "runs",
        ]
        .map(String::from),
    );
    let _ = writeln!(md, "| {} |", head.join(" | "));
    let _ = writeln!(md, "|{}|", vec!["---"; head.len()].join("|"));
    for g in groups {
        let mut cells = g.values.clone();
        let epoch = mean_std(&g.best_epoch)
            .map(|(m, _)| format!("{m:.0}"))
            .unwrap_or_else(|| "–".into());
        let mean_duration = |xs: &[f64]| {
            mean_std(xs)
                .map(|(m, _)| duration(m))
                .unwrap_or_else(|| "–".into())
        };
        let by_seed: Vec<String> = g
            .seeds
            .iter()
            .zip(&g.test)
            .map(|(s, t)| format!("{:.2} ({s})", 100.0 * t))
            .collect();
        let runs: Vec<String> = g.statuses.iter().map(|(s, n)| format!("{n} {s}")).collect();
        cells.extend([
            g.test.len().to_string(),
            pct(&g.test),
            if by_seed.is_empty() {
                "–".into()
            } else {
                by_seed.join(", ")
            },
            pct(&g.valid),
            epoch,
            mean_duration(&g.wall_at_best),
            mean_duration(&g.wall),
            runs.join(", "),
        ]);
        let _ = writeln!(md, "| {} |", cells.join(" | "));
    }
    if !plots.is_empty() {
        let _ = writeln!(md, "\n## Plots\n");
        for p in plots {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "![{}]({name})\n",
                name.trim_end_matches(".png").replace('_', " ")
            );
        }
    }
    md
}

/// Validation error (%) against the epoch count (each row of metrics.csv is one epoch, phase 1
/// and phase 2 counted together), for the rows that measured it.
pub fn valid_curve(metrics: &Path) -> Option<Vec<(f64, f64)>> {
    let mut reader = csv::Reader::from_path(metrics).ok()?;
    let col = reader
        .headers()
        .ok()?
        .iter()
        .position(|h| h == "valid_error")?;
    let mut points = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let Ok(rec) = rec else { break };
        if let Some(v) = rec.get(col).and_then(|s| s.trim().parse::<f64>().ok()) {
            points.push(((i + 1) as f64, 100.0 * v));
        }
    }
    (!points.is_empty()).then_some(points)
}

/// A short legend label for a configuration.
fn label(columns: &[String], values: &[String]) -> String {
    if columns.is_empty() {
        return "base".into();
    }
    columns
        .iter()
        .zip(values)
        .map(|(c, v)| format!("{c}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `drsae report`: see [`ReportArgs`].
pub fn run_report(args: &ReportArgs) -> Result<(), SweepError> {
    let spec = Spec::load(&args.spec, &DataOverrides::default())?;
    let layout = Layout::new(&args.results_dir, &spec.stem);
    let summary_path = layout.summary();
    let rows = summary::read(&summary_path, &summary::header(&spec.columns))?;
    if let Some(t) = &rows.torn {
        eprintln!(
            "note: ignoring the torn last line {} of {}",
            t.line,
            summary_path.display()
        );
    }
    let groups = groups(&spec, &rows);
    let recorded = spec
        .runs
        .iter()
        .filter(|r| rows.latest().contains_key(r.id.as_str()))
        .count();

    let mut plots = Vec::new();
    // Named variants differ in several fields at once, so their one meaningful axis is the
    // variant itself; grid axes and random fields each get a plot.
    let axes: Vec<usize> = match spec.variation {
        super::spec::Variation::Configs(_) => vec![0],
        _ => (0..spec.columns.len()).collect(),
    };
    for k in axes {
        let field = &spec.columns[k];
        // For a grid, one series per combination of the other axes' values, so that a 2-D
        // grid shows e.g. error against λ with one line per T. Variants and random points
        // differ in every column at once, so there they form a single series.
        let grid = matches!(spec.variation, super::spec::Variation::Grid(_));
        let mut series: Vec<Series> = Vec::new();
        for g in &groups {
            let Some((mean, std)) = mean_std(&g.test) else {
                continue;
            };
            let others: Vec<String> = g
                .values
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != k)
                .map(|(_, v)| v.clone())
                .collect();
            let other_cols: Vec<String> = spec
                .columns
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != k)
                .map(|(_, c)| c.clone())
                .collect();
            let name = if others.is_empty() || !grid {
                String::new()
            } else {
                label(&other_cols, &others)
            };
            let point = Point {
                x: g.values[k].clone(),
                y: 100.0 * mean,
                err: std.map(|s| 100.0 * s),
            };
            match series.iter_mut().find(|s| s.name == name) {
                Some(s) => s.points.push(point),
                None => series.push(Series {
                    name,
                    points: vec![point],
                }),
            }
        }
        if series.is_empty() {
            continue;
        }
        // Lines only where they mean something: a grid axis with every other axis fixed.
        let path = layout.root.join(format!("test_error_vs_{field}.png"));
        plot::error_vs_field(&path, &spec.stem, field, &series, grid)?;
        plots.push(path);
    }

    let mut curves = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        for id in &g.run_ids {
            if let Some(points) = valid_curve(&layout.run_dir(id).join("metrics.csv")) {
                curves.push(Curve {
                    group: i,
                    label: label(&spec.columns, &g.values),
                    points,
                });
            }
        }
    }
    if !curves.is_empty() {
        let path = layout.root.join("valid_curves.png");
        plot::valid_curves(&path, &spec.stem, &curves)?;
        plots.push(path);
    }

    let md = markdown(&spec, &groups, &plots, &summary_path, recorded);
    let report = layout.report();
    std::fs::create_dir_all(&layout.root).map_err(|e| SweepError::io(&layout.root, e))?;
    atomic_write(&report, md.as_bytes()).map_err(|e| SweepError::io(&report, e))?;
    eprintln!("wrote {} and {} plot(s)", report.display(), plots.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_uses_the_sample_standard_deviation() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(m, 2.5);
        assert!((s.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[2.0]), Some((2.0, None)));
        assert_eq!(mean_std(&[]), None);
    }
}
