//! The sweep report's PNG plots, drawn with plotters.
//!
//! Text is rendered with DejaVu Sans embedded from the `dejavu` crate: plotters' `ab_glyph`
//! backend loads no system fonts, and embedding means the plots render the same on a fresh
//! machine with no font packages installed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::SweepError;

/// One point of an error-versus-field plot: x as written in the summary, y in %.
#[derive(Debug, Clone)]
pub struct Point {
    /// The field's value.
    pub x: String,
    /// Mean test error (%).
    pub y: f64,
    /// Sample standard deviation (%), when there are two or more seeds.
    pub err: Option<f64>,
}

/// Points sharing the values of every other swept field.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text (empty: no legend).
    pub name: String,
    /// Its points.
    pub points: Vec<Point>,
}

/// One run's validation curve.
#[derive(Debug, Clone)]
pub struct Curve {
    /// Index of its configuration (picks the colour).
    pub group: usize,
    /// Legend text of the configuration.
    pub label: String,
    /// (epoch, validation error %).
    pub points: Vec<(f64, f64)>,
}

/// Tableau 10: distinguishable colours, also for most colour-blind readers.
pub(crate) const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const SIZE: (u32, u32) = (960, 640);

/// Width of one character of a 16-px axis label, rounded up (DejaVu Sans averages ~7.5 px).
const LABEL_CHAR_PX: u32 = 8;

/// Registers the embedded DejaVu Sans as "sans-serif" (once per process), for every plot.
pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TTF; if registration failed anyway, text would be
        // missing from the plots but the numbers in report.md are unaffected.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Draws the legend of the series labelled so far in the one style every plot shares (the
/// sweep's and `drsae analyze`'s figures): white, slightly see-through, with a black border.
pub(crate) fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    font_size: u32,
    position: SeriesLabelPosition,
) -> DrawResult<(), DB> {
    chart
        .configure_series_labels()
        .label_font(("sans-serif", font_size))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(position)
        .draw()
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> SweepError {
    SweepError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A y range around `lo..hi` with 10 % headroom, never empty.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let span = (hi - lo).max(hi.abs() * 0.1).max(1e-3);
    (lo - 0.1 * span).max(0.0)..hi + 0.1 * span
}

/// Whether category names written side by side under the x axis (one slot each) would run
/// into each other.
fn labels_collide(categories: &[String]) -> bool {
    categories.len() as u32 * (widest_px(categories) + 10) > SIZE.0 - 110
}

/// Approximate width in pixels of the longest category name.
fn widest_px(categories: &[String]) -> u32 {
    let chars = categories
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0);
    chars as u32 * LABEL_CHAR_PX
}

/// Tick labels: up to three significant digits, plain in the readable range.
fn sig3(v: f64) -> String {
    if v == 0.0 || (0.01..1000.0).contains(&v.abs()) {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        // Round to three significant digits, then print the shortest form: `1e-3`, `3.16e-4`.
        let rounded: f64 = format!("{v:.2e}").parse().unwrap_or(v);
        format!("{rounded:e}")
    }
}

/// Test error against one swept field: mean per configuration with ±1 sample-std error bars.
/// Numeric fields use a numeric axis (logarithmic when the values span a factor of 10 or more,
/// as learning rates and λ usually do); other fields (variant names) are categories.
pub fn error_vs_field(
    path: &Path,
    stem: &str,
    field: &str,
    series: &[Series],
    lines: bool,
) -> Result<(), SweepError> {
    register_font();
    let xs: Vec<&str> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.x.as_str()))
        .collect();
    // A numeric axis only when every value is a finite number: `inf` (an unbounded norm, say)
    // would make the axis range infinite, so such a field is shown by category.
    let numeric: Option<Vec<f64>> = xs
        .iter()
        .map(|x| x.parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect();
    let mut categories: Vec<String> = Vec::new();
    for x in &xs {
        if !categories.iter().any(|c| c == x) {
            categories.push(x.to_string());
        }
    }
    let (lo, hi) = match &numeric {
        Some(v) => (
            v.iter().cloned().fold(f64::INFINITY, f64::min),
            v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        ),
        None => (0.0, 0.0),
    };
    let log = numeric.is_some() && lo > 0.0 && hi / lo >= 10.0;
    // Map each point's x to the plotted coordinate.
    let coord = |x: &str| -> f64 {
        match (&numeric, log) {
            (Some(_), true) => x.parse::<f64>().unwrap_or(1.0).log10(),
            (Some(_), false) => x.parse::<f64>().unwrap_or(0.0),
            (None, _) => categories.iter().position(|c| c == x).unwrap_or(0) as f64,
        }
    };
    let x_range = match (&numeric, log) {
        (Some(_), true) => {
            let pad = 0.05 * (hi.log10() - lo.log10());
            lo.log10() - pad..hi.log10() + pad
        }
        (Some(_), false) => {
            let pad = if hi > lo {
                0.05 * (hi - lo)
            } else {
                0.5_f64.max(0.1 * hi.abs())
            };
            lo - pad..hi + pad
        }
        (None, _) => -0.5..categories.len() as f64 - 0.5,
    };
    let ys: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .map(|p| (p.y - p.err.unwrap_or(0.0), p.y + p.err.unwrap_or(0.0)))
        })
        .collect();
    let y_range = padded(
        ys.iter().map(|y| y.0).fold(f64::INFINITY, f64::min),
        ys.iter().map(|y| y.1).fold(f64::NEG_INFINITY, f64::max),
    );

    // Category names that would not fit side by side under the axis are written vertically
    // below their ticks, with room for the longest (plotters centres rotated tick labels on
    // the tick, across the axis, so these are drawn as text of their own).
    let vertical = numeric.is_none() && labels_collide(&categories);
    let x_label_area = if vertical {
        widest_px(&categories) + 45
    } else {
        50
    };

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{stem}: test error vs {field}"), ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(x_label_area)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, y_range)
        .map_err(|e| plot_err(path, e))?;
    let fmt_x = |v: &f64| -> String {
        match (&numeric, log) {
            (Some(_), true) => sig3(10f64.powf(*v)),
            (Some(_), false) => sig3(*v),
            (None, _) => {
                let i = v.round();
                if !vertical && (v - i).abs() < 1e-6 && i >= 0.0 {
                    categories.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            }
        }
    };
    let x_desc = if log {
        format!("{field} (log scale)")
    } else {
        field.to_string()
    };
    let n_labels = if numeric.is_some() {
        8
    } else {
        categories.len().max(1)
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("test error (%)")
        .x_labels(n_labels)
        .x_label_formatter(&fmt_x)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    if vertical {
        let style = TextStyle::from(("sans-serif", 16).into_font())
            .pos(Pos::new(HPos::Left, VPos::Center))
            .transform(FontTransform::Rotate90);
        let bottom = chart.y_range().start;
        for (i, name) in categories.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64, bottom));
            root.draw(&Text::new(name.as_str(), (px, py + 12), style.clone()))
                .map_err(|e| plot_err(path, e))?;
        }
    }

    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts: Vec<(f64, f64, Option<f64>)> =
            s.points.iter().map(|p| (coord(&p.x), p.y, p.err)).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        if lines && pts.len() > 1 {
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|p| (p.0, p.1)),
                    color.stroke_width(2),
                ))
                .map_err(|e| plot_err(path, e))?;
        }
        chart
            .draw_series(pts.iter().filter_map(|p| {
                p.2.map(|e| {
                    ErrorBar::new_vertical(p.0, p.1 - e, p.1, p.1 + e, color.stroke_width(2), 10)
                })
            }))
            .map_err(|e| plot_err(path, e))?;
        let anno = chart
            .draw_series(
                pts.iter()
                    .map(|p| Circle::new((p.0, p.1), 5, color.filled())),
            )
            .map_err(|e| plot_err(path, e))?;
        if !s.name.is_empty() {
            anno.label(s.name.clone())
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
        }
    }
    if series.iter().any(|s| !s.name.is_empty()) {
        draw_legend(&mut chart, 16, SeriesLabelPosition::UpperRight)
            .map_err(|e| plot_err(path, e))?;
    }
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

/// Validation error over epochs, one line per run, one colour per configuration.
pub fn valid_curves(path: &Path, stem: &str, curves: &[Curve]) -> Result<(), SweepError> {
    register_font();
    let max_x = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let ys: Vec<f64> = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .collect();
    let lo = ys.iter().cloned().fold(f64::INFINITY, f64::min);
    // Early epochs (an untrained classifier) can sit near 90 %; clip the axis at 4× the best
    // error so that the differences that matter, tenths of a percent, stay visible.
    let hi = ys
        .iter()
        .cloned()
        .fold(f64::NEG_INFINITY, f64::max)
        .min((4.0 * lo).max(lo + 1.0));
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{stem}: validation error"), ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_x * 1.02, padded(lo, hi))
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("epoch (phase 1 + phase 2)")
        // Epochs are whole numbers: label only the ticks that fall on one.
        .x_labels((max_x as usize + 1).min(12))
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-6 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .y_desc("validation error (%)")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    let y_max = hi + 0.1 * (hi - lo).max(1e-3);
    let mut labelled = Vec::new();
    for c in curves {
        let color = COLORS[c.group % COLORS.len()];
        let pts: Vec<(f64, f64)> = c.points.iter().map(|&(x, y)| (x, y.min(y_max))).collect();
        // Markers as well as lines when points are few, or a one-point curve (a run with a
        // single validation) would not show at all.
        if pts.len() < 30 {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| plot_err(path, e))?;
        }
        let anno = chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| plot_err(path, e))?;
        if !labelled.contains(&c.group) {
            labelled.push(c.group);
            anno.label(c.label.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        }
    }
    draw_legend(&mut chart, 16, SeriesLabelPosition::UpperRight).map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_category_names_collide_and_short_ones_do_not() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!labels_collide(&names(&[
            "n400_T11", "n200_T2", "n200_T11"
        ])));
        assert!(labels_collide(&names(&[
            "n400_T11",
            "n200_T2",
            "n200_T11",
            "n400_T11_linear_on_pretrained",
            "n400_T11_linear_tuned",
            "n400_T11_no_pretraining",
        ])));
        // Many short names collide too.
        assert!(labels_collide(&names(&["abcdef"; 20])));
    }

    /// An unbounded value (`inf`) among numbers is drawn as a category, not on an infinite
    /// numeric axis (where drawing never finished).
    #[test]
    fn infinite_field_values_are_plotted_as_categories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        let point = |x: &str, y: f64| Point {
            x: x.into(),
            y,
            err: None,
        };
        let series = [Series {
            name: String::new(),
            points: vec![point("5.0", 7.3), point("inf", 2.1)],
        }];
        error_vs_field(&path, "s", "c_row_bound", &series, false).unwrap();
        assert!(std::fs::read(&path).unwrap().starts_with(b"\x89PNG"));
    }
}
