//! The PNG figures of `drsae analyze`, drawn with plotters. Text uses the DejaVu Sans that the
//! sweep plots embed (`sweep::plot::register_font`), so figures render the same everywhere.
//!
//! Image tiles: decoders and components are signed (mid-grey is 0, white positive, black
//! negative, each tile scaled to its own largest |value|); inputs and reconstructions are
//! drawn as dark ink on white. Each PNG is drawn into a temporary file beside its target and
//! renamed over it, so a reader never sees half a figure.

use std::f64::consts::FRAC_PI_2;
use std::fmt::Display;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::units::{self, Kind};
use super::{Analysis, AnalyzeError};
use crate::sweep::plot::{COLORS, draw_legend, register_font};

/// One figure: its file name, what it shows, its size in pixels and how it is drawn.
pub struct Figure {
    /// File name inside the output folder.
    pub file: &'static str,
    /// What it shows (listed in `summary.md` and the README).
    pub what: &'static str,
    size: fn(&Analysis) -> Result<(u32, u32), String>,
    draw: fn(&Area<'_>, &Analysis) -> Result<(), String>,
}

/// Every figure `drsae analyze` writes, in the order it writes them.
pub const FIGURES: [Figure; 8] = [
    Figure {
        file: "angle_histogram.png",
        what: "histogram of the angles between E_i and D_i, coloured by kind, with the \
               thresholds.",
        size: |_| Ok((960, 640)),
        draw: angle_histogram,
    },
    Figure {
        file: "decoders_by_angle.png",
        what: "every decoder column D_i as an image tile, sorted by angle (row by row), with \
               the angle under it; categorical units outlined in red with the class of their \
               largest classifier weight, intermediate units in orange.",
        size: decoders_size,
        draw: decoders_by_angle,
    },
    Figure {
        file: "cnorm_recurrent_vs_angle.png",
        what: "‖C_i‖ and the recurrent input Σ_{j≠i}|S_ij| of each unit against its angle.",
        size: |_| Ok((1440, 620)),
        draw: cnorm_recurrent,
    },
    Figure {
        file: "v_plot.png",
        what: "the \"V\" plot: mean S_ij against the decoder alignment cos(D_i, D_j), for \
               part ← part, categorical ← part and categorical ← categorical pairs, with \
               ISTA's −α·cos.",
        size: |_| Ok((960, 640)),
        draw: v_plot,
    },
    Figure {
        file: "first_on_step2_vs_angle.png",
        what: "P(a unit first turns on at step 2 | it turns on) against its angle.",
        size: |_| Ok((960, 640)),
        draw: first_on_step2,
    },
    Figure {
        file: "step_decoders.png",
        what: "per-step least-squares decoders D^t_i (t = 1..T) of the most often active part \
               and categorical units, beside the trained D_i, with cos(D^t_i, D_i) under each.",
        size: step_size,
        draw: step_decoders,
    },
    Figure {
        file: "progressive_reconstruction.png",
        what: "test digits rebuilt from their components D_i·z^T_i, largest ‖D_i‖·z^T_i \
               first: each component, then the running sum.",
        size: progressive_size,
        draw: progressive,
    },
    Figure {
        file: "categorical_s_minus_i.png",
        what: "S − I among the categorical units, ordered by the class they vote for \
               (red > 0 > blue, scaled to the largest off-diagonal |S_ij|).",
        size: |a| Ok(heat_size(a)),
        draw: categorical_heatmap,
    },
];

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Turns a plotting error into its message.
trait PlotResult<T> {
    fn plot(self) -> Result<T, String>;
}

impl<T, E: Display> PlotResult<T> for Result<T, E> {
    fn plot(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

const PART_COLOR: RGBColor = COLORS[0];
const INTERMEDIATE_COLOR: RGBColor = COLORS[1];
const CATEGORICAL_COLOR: RGBColor = COLORS[3];

fn kind_color(kind: Kind) -> RGBColor {
    match kind {
        Kind::Part => PART_COLOR,
        Kind::Intermediate => INTERMEDIATE_COLOR,
        Kind::Categorical => CATEGORICAL_COLOR,
        Kind::Undefined => BLACK,
    }
}

fn text(size: u32, color: &RGBColor) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(color)
}

/// Draws a figure of `size` pixels into a temporary PNG beside `path`, then renames it over
/// `path`.
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area) -> Result<(), String>,
) -> Result<(), AnalyzeError> {
    let plot_err = |message: String| AnalyzeError::Plot {
        path: path.to_path_buf(),
        message,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The image encoder picks the format from the extension: keep `.png` last.
    let tmp = path.with_file_name(format!(".{name}.{}.tmp.png", std::process::id()));
    let result = (|| {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).plot()?;
        draw(&root)?;
        root.present().plot()
    })();
    let result = result.map_err(plot_err).and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|source| AnalyzeError::Io {
            path: path.to_path_buf(),
            source,
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// How a tile maps values to grey.
#[derive(Clone, Copy)]
enum Shade {
    /// Mid-grey is 0, white the largest positive, black the largest negative |value|.
    Signed,
    /// White is 0 (and below), black the largest value.
    Ink,
}

/// The side of the square images the inputs are (28 for MNIST).
fn image_side(m: usize) -> Result<usize, String> {
    let side = (m as f64).sqrt().round() as usize;
    if side * side == m && side > 0 {
        Ok(side)
    } else {
        Err(format!("inputs of length {m} are not square images"))
    }
}

fn draw_tile(
    area: &Area,
    (x0, y0): (i32, i32),
    side: usize,
    scale: i32,
    values: &[f64],
    shade: Shade,
) -> Result<(), String> {
    let max = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for r in 0..side {
        for c in 0..side {
            let v = values[r * side + c];
            let t = if max > 0.0 { v / max } else { 0.0 };
            let g = match shade {
                Shade::Signed => 127.5 + 127.5 * t,
                Shade::Ink => 255.0 * (1.0 - t.clamp(0.0, 1.0)),
            }
            .round()
            .clamp(0.0, 255.0) as u8;
            let (px, py) = (x0 + c as i32 * scale, y0 + r as i32 * scale);
            // The bitmap backend fills a rectangle up to, not including, its far corner.
            area.draw(&Rectangle::new(
                [(px, py), (px + scale, py + scale)],
                RGBColor(g, g, g).filled(),
            ))
            .plot()?;
        }
    }
    Ok(())
}

fn outline(area: &Area, (x0, y0): (i32, i32), w: i32, color: RGBColor) -> Result<(), String> {
    area.draw(&Rectangle::new(
        [(x0 - 2, y0 - 2), (x0 + w + 1, y0 + w + 1)],
        color.stroke_width(2),
    ))
    .plot()
}

/// Largest angle on the x axes: every finite angle fits, and so do the thresholds.
fn angle_axis(a: &Analysis) -> f64 {
    let max = a
        .geometry
        .iter()
        .map(|g| g.angle)
        .filter(|v| v.is_finite())
        .fold(FRAC_PI_2, f64::max);
    max.max(a.thresholds.categorical_above) + 0.05
}

/// A range around the finite values `lo..hi` with 8 % headroom, never empty.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return 0.0..1.0;
    }
    let span = (hi - lo).max(1e-6);
    lo - 0.08 * span..hi + 0.08 * span
}

/// An axis tick label: three decimals at most, trailing zeros dropped, never "-0".
fn tick(v: &f64) -> String {
    if v.abs() < 1e-9 {
        return "0".into();
    }
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A chart with numeric x and y axes, drawn on an [`Area`].
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Pixel sizes of a chart's frame and text.
#[derive(Clone, Copy)]
struct Frame {
    caption: u32,
    margin: u32,
    x_label_area: u32,
    y_label_area: u32,
    /// Tick labels and the legend.
    labels: u32,
    axis_desc: u32,
}

/// A chart that fills its figure.
const LARGE: Frame = Frame {
    caption: 24,
    margin: 20,
    x_label_area: 50,
    y_label_area: 60,
    labels: 16,
    axis_desc: 18,
};

/// The scatters against the angle: smaller, so that two fit side by side in one figure.
const COMPACT: Frame = Frame {
    caption: 22,
    margin: 15,
    x_label_area: 45,
    y_label_area: 65,
    labels: 15,
    axis_desc: 17,
};

/// Builds a captioned chart on `area` and draws its mesh, so that every chart has the same
/// frame layout and [`tick`] labels.
fn chart<'a, 'b>(
    area: &'a Area<'b>,
    frame: Frame,
    caption: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    x_desc: &str,
    y_desc: &str,
) -> Result<Chart<'a, 'b>, String> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", frame.caption))
        .margin(frame.margin)
        .x_label_area_size(frame.x_label_area)
        .y_label_area_size(frame.y_label_area)
        .build_cartesian_2d(x, y)
        .plot()?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .label_style(("sans-serif", frame.labels))
        .axis_desc_style(("sans-serif", frame.axis_desc))
        .draw()
        .plot()?;
    Ok(chart)
}

/// Draws a vertical dashed line at each threshold over `y`.
fn threshold_lines(
    chart: &mut Chart<'_, '_>,
    a: &Analysis,
    y: std::ops::Range<f64>,
) -> Result<(), String> {
    for x in [a.thresholds.part_below, a.thresholds.categorical_above] {
        chart
            .draw_series(DashedLineSeries::new(
                [(x, y.start), (x, y.end)],
                6,
                4,
                BLACK.mix(0.6).stroke_width(1),
            ))
            .plot()?;
    }
    Ok(())
}

/// A scatter of (angle, value) points coloured by kind, with the thresholds.
fn scatter_vs_angle(
    area: &Area,
    a: &Analysis,
    caption: &str,
    y_desc: &str,
    points: &[(f64, f64, Kind)],
    y_range: Option<std::ops::Range<f64>>,
) -> Result<(), String> {
    let ys = points.iter().map(|p| p.1).filter(|v| v.is_finite());
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    let y_range = y_range.unwrap_or_else(|| padded(lo, hi));
    let mut chart = chart(
        area,
        COMPACT,
        caption,
        0.0..angle_axis(a),
        y_range.clone(),
        "angle between E_i and D_i (rad)",
        y_desc,
    )?;
    threshold_lines(&mut chart, a, y_range)?;
    for kind in Kind::ALL {
        let pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.2 == kind && p.0.is_finite() && p.1.is_finite())
            .map(|p| (p.0, p.1))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let color = kind_color(kind);
        chart
            .draw_series(
                pts.iter()
                    .map(|&p| Circle::new(p, 3, color.mix(0.75).filled())),
            )
            .plot()?
            .label(format!("{} ({})", kind.as_str(), pts.len()))
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
    }
    draw_legend(&mut chart, COMPACT.labels, SeriesLabelPosition::UpperLeft).plot()
}

fn angle_histogram(root: &Area, a: &Analysis) -> Result<(), String> {
    const WIDTH: f64 = 0.05;
    let x_max = angle_axis(a);
    let n_bins = (x_max / WIDTH).ceil() as usize;
    let mut counts = vec![0usize; n_bins];
    for g in a.geometry.iter().filter(|g| g.angle.is_finite()) {
        counts[((g.angle / WIDTH) as usize).min(n_bins - 1)] += 1;
    }
    let y_max = counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
    let mut chart = chart(
        root,
        LARGE,
        &format!("Angle between E_i and D_i ({} units)", a.geometry.len()),
        0.0..n_bins as f64 * WIDTH,
        0.0..y_max,
        "angle (rad)",
        "units",
    )?;
    let counts_by_kind = super::summary::kind_counts(&a.geometry);
    for (kind, total) in Kind::ALL.into_iter().zip(counts_by_kind) {
        let color = kind_color(kind);
        let bars: Vec<Rectangle<(f64, f64)>> = counts
            .iter()
            .enumerate()
            .filter(|&(b, &c)| {
                c > 0 && Kind::classify((b as f64 + 0.5) * WIDTH, a.thresholds) == kind
            })
            .map(|(b, &c)| {
                Rectangle::new(
                    [(b as f64 * WIDTH, 0.0), ((b + 1) as f64 * WIDTH, c as f64)],
                    color.filled(),
                )
            })
            .collect();
        if total == 0 || kind == Kind::Undefined {
            continue;
        }
        chart
            .draw_series(bars)
            .plot()?
            .label(format!("{} ({total})", kind.as_str()))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    threshold_lines(&mut chart, a, 0.0..y_max)?;
    draw_legend(&mut chart, LARGE.labels, SeriesLabelPosition::UpperRight).plot()
}

fn decoders_size(a: &Analysis) -> Result<(u32, u32), String> {
    let side = image_side(a.params.n_input)?;
    let n = a.geometry.len().max(1);
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let tile = (56 / side).max(1) * side;
    Ok((
        (20 + cols * (tile + 8)) as u32,
        (60 + rows * (tile + 24) + 10) as u32,
    ))
}

fn decoders_by_angle(root: &Area, a: &Analysis) -> Result<(), String> {
    let side = image_side(a.params.n_input)?;
    let n = a.geometry.len();
    let cols = ((n.max(1)) as f64).sqrt().ceil() as usize;
    let scale = (56 / side).max(1);
    let tile = (scale * side) as i32;
    let mut order: Vec<usize> = (0..n).collect();
    let key = |i: usize| {
        let v = a.geometry[i].angle;
        if v.is_nan() { f64::INFINITY } else { v }
    };
    order.sort_by(|&i, &j| key(i).total_cmp(&key(j)).then(i.cmp(&j)));
    root.draw_text(
        "Decoder columns D_i sorted by the angle between E_i and D_i (rad); red: categorical \
         unit with the class it votes for, orange: intermediate",
        &text(17, &BLACK),
        (10, 15),
    )
    .plot()?;
    for (pos, &i) in order.iter().enumerate() {
        let x0 = 10 + (pos % cols) as i32 * (tile + 8) + 4;
        let y0 = 60 + (pos / cols) as i32 * (tile + 24);
        let g = &a.geometry[i];
        draw_tile(
            root,
            (x0, y0),
            side,
            scale as i32,
            &units::decoder_column(&a.params, i),
            Shade::Signed,
        )?;
        let label = match g.kind {
            Kind::Categorical => {
                outline(root, (x0, y0), tile, CATEGORICAL_COLOR)?;
                format!("{:.2} → {}", g.angle, g.c_class)
            }
            Kind::Intermediate => {
                outline(root, (x0, y0), tile, INTERMEDIATE_COLOR)?;
                format!("{:.2}", g.angle)
            }
            _ => format!("{:.2}", g.angle),
        };
        root.draw_text(&label, &text(12, &kind_color(g.kind)), (x0, y0 + tile + 4))
            .plot()?;
    }
    Ok(())
}

fn cnorm_recurrent(root: &Area, a: &Analysis) -> Result<(), String> {
    let panels = root.split_evenly((1, 2));
    let c: Vec<(f64, f64, Kind)> = a
        .geometry
        .iter()
        .map(|g| (g.angle, g.c_norm, g.kind))
        .collect();
    let r: Vec<(f64, f64, Kind)> = a
        .geometry
        .iter()
        .map(|g| (g.angle, g.recurrent_input, g.kind))
        .collect();
    scatter_vs_angle(&panels[0], a, "Classifier weight norm", "‖C_i‖", &c, None)?;
    scatter_vs_angle(
        &panels[1],
        a,
        "Recurrent input strength",
        "Σ_{j≠i} |S_ij|",
        &r,
        None,
    )
}

fn first_on_step2(root: &Area, a: &Analysis) -> Result<(), String> {
    let pts: Vec<(f64, f64, Kind)> = a
        .geometry
        .iter()
        .zip(&a.stats.units)
        .filter_map(|(g, u)| {
            let p = if a.stats.n_steps >= 2 {
                u.p_first_on(2)
            } else {
                None
            };
            p.map(|p| (g.angle, p, g.kind))
        })
        .collect();
    scatter_vs_angle(
        root,
        a,
        "Probability of first turning on at step 2 (units that ever turn on)",
        "P(first on at step 2 | on)",
        &pts,
        Some(-0.02..1.02),
    )
}

fn v_plot(root: &Area, a: &Analysis) -> Result<(), String> {
    let means = a
        .v_plot
        .iter()
        .flat_map(|s| s.bins.iter().map(|b| b.mean_s))
        .filter(|v| v.is_finite())
        .chain([a.alpha, -a.alpha]);
    let (lo, hi) = means.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    // Wider y labels: the means are signed, with up to three decimals.
    let frame = Frame {
        y_label_area: 70,
        ..LARGE
    };
    let mut chart = chart(
        root,
        frame,
        "Mean S_ij against decoder alignment (receiver i ← sender j)",
        -1.0..1.0,
        padded(lo, hi),
        "cos(D_i, D_j)",
        "mean S_ij",
    )?;
    let alpha = a.alpha;
    chart
        .draw_series(DashedLineSeries::new(
            [(-1.0, alpha), (1.0, -alpha)],
            8,
            5,
            BLACK.stroke_width(2),
        ))
        .plot()?
        .label(format!("ISTA: −α·cos (α = {alpha:.4})"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    for (idx, s) in a.v_plot.iter().enumerate() {
        let color = [PART_COLOR, CATEGORICAL_COLOR, COLORS[4]][idx % 3];
        let pts: Vec<(f64, f64)> = s
            .bins
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| (0.5 * (b.lo + b.hi), b.mean_s))
            .collect();
        let pairs: usize = s.bins.iter().map(|b| b.count).sum();
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .plot()?;
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .plot()?
            .label(format!(
                "{} ← {} ({pairs} pairs)",
                s.receiver.as_str(),
                s.sender.as_str()
            ))
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
    }
    draw_legend(&mut chart, frame.labels, SeriesLabelPosition::UpperLeft).plot()
}

/// Geometry of the per-step decoder figure: tile scale, tile side in pixels, left margin.
fn step_layout(a: &Analysis) -> Result<(usize, i32, i32), String> {
    let side = image_side(a.params.n_input)?;
    let scale = (84 / side).max(1);
    Ok((scale, (scale * side) as i32, 190))
}

fn step_size(a: &Analysis) -> Result<(u32, u32), String> {
    let (_, tile, left) = step_layout(a)?;
    let cols = a.stats.n_steps as i32 + 1;
    let rows = a.shown_units.len().max(1) as i32;
    Ok((
        (left + cols * (tile + 10) + 10) as u32,
        (70 + rows * (tile + 26) + 10) as u32,
    ))
}

fn step_decoders(root: &Area, a: &Analysis) -> Result<(), String> {
    let side = image_side(a.params.n_input)?;
    let (scale, tile, left) = step_layout(a)?;
    let m = a.params.n_input;
    let t_max = a.stats.n_steps;
    root.draw_text(
        "Least-squares decoders D^t_i per step (fit of x ≈ D^t z^t), trained D_i on the right; \
         cos(D^t_i, D_i) under each",
        &text(17, &BLACK),
        (10, 12),
    )
    .plot()?;
    for col in 0..=t_max {
        let label = if col < t_max {
            format!("t = {}", col + 1)
        } else {
            "trained D_i".into()
        };
        root.draw_text(
            &label,
            &text(15, &BLACK),
            (left + col as i32 * (tile + 10), 45),
        )
        .plot()?;
    }
    if a.shown_units.is_empty() {
        return root
            .draw_text("no part or categorical units", &text(16, &BLACK), (10, 80))
            .plot();
    }
    for (row, &i) in a.shown_units.iter().enumerate() {
        let y0 = 70 + row as i32 * (tile + 26);
        let g = &a.geometry[i];
        let color = kind_color(g.kind);
        root.draw_text(&format!("unit {i}"), &text(16, &color), (10, y0 + 10))
            .plot()?;
        root.draw_text(
            &format!("{}, {:.2} rad", g.kind.as_str(), g.angle),
            &text(14, &color),
            (10, y0 + 32),
        )
        .plot()?;
        root.draw_text(
            &format!(
                "active {:.1} %",
                100.0 * a.stats.units[i].active as f64 / a.stats.examples.max(1) as f64
            ),
            &text(14, &color),
            (10, y0 + 52),
        )
        .plot()?;
        for t in 0..=t_max {
            let x0 = left + t as i32 * (tile + 10);
            let (values, label) = if t < t_max {
                let c = a.step_decoder_cos[t][i];
                let label = if c.is_finite() {
                    format!("cos {c:.2}")
                } else {
                    "never on".into()
                };
                (a.step_decoders[t][i * m..(i + 1) * m].to_vec(), label)
            } else {
                (units::decoder_column(&a.params, i), String::new())
            };
            draw_tile(root, (x0, y0), side, scale as i32, &values, Shade::Signed)?;
            root.draw_text(&label, &text(12, &BLACK), (x0, y0 + tile + 4))
                .plot()?;
        }
    }
    Ok(())
}

/// Components shown per digit in the progressive reconstruction.
const COMPONENTS_SHOWN: usize = 12;

fn progressive_size(a: &Analysis) -> Result<(u32, u32), String> {
    let side = image_side(a.params.n_input)?;
    let tile = ((56 / side).max(1) * side) as u32;
    let rows = 2 * a.digits.len().max(1) as u32;
    Ok((
        150 + (COMPONENTS_SHOWN as u32 + 1) * (tile + 12) + 10,
        50 + rows * (tile + 22) + a.digits.len() as u32 * 10 + 10,
    ))
}

fn progressive(root: &Area, a: &Analysis) -> Result<(), String> {
    let side = image_side(a.params.n_input)?;
    let scale = (56 / side).max(1);
    let tile = (scale * side) as i32;
    let m = a.params.n_input;
    root.draw_text(
        "Progressive reconstruction: components D_i·z_i, largest ‖D_i‖·z_i first (p part, \
         i intermediate, c categorical), and their running sum",
        &text(16, &BLACK),
        (10, 12),
    )
    .plot()?;
    for (d, digit) in a.digits.iter().enumerate() {
        let comps = units::components_by_contribution(&a.params, &digit.z);
        let y_comp = 50 + d as i32 * (2 * (tile + 22) + 10);
        let y_sum = y_comp + tile + 22;
        root.draw_text(
            &format!("test #{} (label {})", digit.index, digit.label),
            &text(14, &BLACK),
            (10, y_comp + 8),
        )
        .plot()?;
        root.draw_text("components", &text(13, &BLACK), (10, y_comp + 28))
            .plot()?;
        root.draw_text("running sum", &text(13, &BLACK), (10, y_sum + 8))
            .plot()?;
        // Column 0: the input above, the full reconstruction D·z^T below.
        let x0 = 150;
        draw_tile(root, (x0, y_comp), side, scale as i32, &digit.x, Shade::Ink)?;
        root.draw_text("input", &text(12, &BLACK), (x0, y_comp + tile + 3))
            .plot()?;
        let mut full = vec![0.0; m];
        for (_, c) in &comps {
            full.iter_mut().zip(c).for_each(|(f, v)| *f += v);
        }
        draw_tile(root, (x0, y_sum), side, scale as i32, &full, Shade::Ink)?;
        root.draw_text(
            &format!("all {}", comps.len()),
            &text(12, &BLACK),
            (x0, y_sum + tile + 3),
        )
        .plot()?;
        let mut sum = vec![0.0; m];
        for (k, (unit, comp)) in comps.iter().take(COMPONENTS_SHOWN).enumerate() {
            let x = x0 + (k as i32 + 1) * (tile + 12);
            let kind = a.geometry[*unit].kind;
            draw_tile(root, (x, y_comp), side, scale as i32, comp, Shade::Signed)?;
            let letter = &kind.as_str()[..1];
            root.draw_text(
                &format!("#{unit} {letter}"),
                &text(12, &kind_color(kind)),
                (x, y_comp + tile + 3),
            )
            .plot()?;
            sum.iter_mut().zip(comp).for_each(|(s, v)| *s += v);
            draw_tile(root, (x, y_sum), side, scale as i32, &sum, Shade::Ink)?;
            root.draw_text(
                &format!("{} unit{}", k + 1, if k == 0 { "" } else { "s" }),
                &text(12, &BLACK),
                (x, y_sum + tile + 3),
            )
            .plot()?;
        }
    }
    Ok(())
}

/// Cell size (pixels) of the S − I heatmap for k units.
fn heat_cell(k: usize) -> i32 {
    (640 / k.max(1) as i32).clamp(4, 40)
}

fn heat_size(a: &Analysis) -> (u32, u32) {
    let k = a.categorical.0.len() as i32;
    let side = k * heat_cell(k as usize);
    (
        (120 + side + 40).max(960) as u32,
        (110 + side + 40).max(200) as u32,
    )
}

fn categorical_heatmap(root: &Area, a: &Analysis) -> Result<(), String> {
    let (units, block) = &a.categorical;
    let k = units.len();
    if k == 0 {
        return root
            .draw_text(
                &format!(
                    "No categorical units (angle > {} rad): nothing to show.",
                    a.thresholds.categorical_above
                ),
                &text(18, &BLACK),
                (20, 40),
            )
            .plot();
    }
    let cell = heat_cell(k);
    let (left, top) = (120, 110);
    // The colour scale follows the off-diagonal entries (the connections between units); the
    // diagonal S_ii − 1 is usually larger and simply saturates.
    let off_diagonal = (0..k * k).filter(|idx| k == 1 || idx / k != idx % k);
    let max = off_diagonal.fold(0.0f64, |m, idx| m.max(block[idx].abs()));
    root.draw_text(
        &format!("S − I among the {k} categorical units, ordered by class (row i ← column j)"),
        &text(16, &BLACK),
        (10, 12),
    )
    .plot()?;
    root.draw_text(
        &format!(
            "red > 0 > blue, full colour at |S_ij| = {max:.3} (the largest off-diagonal entry); \
             labels: the class of each unit's largest classifier weight"
        ),
        &text(14, &BLACK),
        (10, 36),
    )
    .plot()?;
    for r in 0..k {
        for c in 0..k {
            let t = if max > 0.0 {
                (block[r * k + c] / max).clamp(-1.0, 1.0)
            } else {
                0.0
            };
            let fade = |v: f64| (255.0 * (1.0 - v.abs())).round().clamp(0.0, 255.0) as u8;
            let color = if t >= 0.0 {
                RGBColor(255, fade(t), fade(t))
            } else {
                RGBColor(fade(t), fade(t), 255)
            };
            let (x, y) = (left + c as i32 * cell, top + r as i32 * cell);
            root.draw(&Rectangle::new(
                [(x, y), (x + cell, y + cell)],
                color.filled(),
            ))
            .plot()?;
        }
    }
    let classes: Vec<usize> = units.iter().map(|&i| a.geometry[i].c_class).collect();
    let side = k as i32 * cell;
    for idx in 0..k {
        let starts_class = idx == 0 || classes[idx] != classes[idx - 1];
        let offset = idx as i32 * cell;
        if starts_class {
            if idx > 0 {
                root.draw(&PathElement::new(
                    vec![(left, top + offset), (left + side, top + offset)],
                    BLACK.stroke_width(1),
                ))
                .plot()?;
                root.draw(&PathElement::new(
                    vec![(left + offset, top), (left + offset, top + side)],
                    BLACK.stroke_width(1),
                ))
                .plot()?;
            }
            let label = format!("{}", classes[idx]);
            root.draw_text(&label, &text(14, &BLACK), (left - 18, top + offset + 2))
                .plot()?;
            root.draw_text(&label, &text(14, &BLACK), (left + offset + 2, top - 20))
                .plot()?;
        }
    }
    root.draw(&Rectangle::new(
        [(left, top), (left + side, top + side)],
        BLACK.stroke_width(1),
    ))
    .plot()
}

/// Draws every figure of [`FIGURES`] into `out`; returns the paths written.
pub fn draw_all(a: &Analysis, out: &Path) -> Result<Vec<PathBuf>, AnalyzeError> {
    register_font();
    let mut written = Vec::new();
    for fig in &FIGURES {
        let path = out.join(fig.file);
        let size = (fig.size)(a).map_err(|message| AnalyzeError::Plot {
            path: path.clone(),
            message,
        })?;
        render(&path, size, |root| (fig.draw)(root, a))?;
        written.push(path);
    }
    Ok(written)
}
