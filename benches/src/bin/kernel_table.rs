//! Measures the kernel result table single-threaded and writes it as CSV (plus markdown on
//! stdout): the model's dense products beside `matrixmultiply`, and the sparse products beside
//! the dense ones they replace. The depth-subset rows (`gemm_depth_subset_*`, the product the
//! engine runs over a group's active units) give as density the fraction of the depth that
//! some row of X needs, and GFLOP/s over that depth.
//!
//! Usage: `kernel_table OUT.csv [GIT_REV]` (or `GIT_REV` in the environment). The kernels are
//! `drsae_kernels::kernels()`, so `DRSAE_ISA=avx2` measures another path. An existing file is
//! appended to (its header must match), never overwritten; the write is atomic (temporary file
//! in the same folder, then rename).

use drsae_benches::{
    BATCHES, DENSITIES, GemmProblem, N_HIDDEN, N_INPUT, ROW_SHARES, RecGradProblem, SparseProblem,
    fma_chains, fma_peak_gflops, median_secs_interleaved, model_shapes,
};
use std::cell::RefCell;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const HEADER: &str = "op,shape,b,kernel,isa,median_gflops,pct_of_peak,matrixmultiply_gflops,\
ratio_vs_matrixmultiply,density,dense_gflops_equiv,sparse_speedup,git_rev,peak_gflops,threads,\
repeats,unix_time,sparse_speedup_vs_dense_nt";
const REPEATS: usize = 31;
const WARMUP: Duration = Duration::from_millis(60);
const BATCH_TIME: Duration = Duration::from_millis(2);

/// FMA-chain iterations per peak measurement call (~0.1 ms).
const PEAK_ITERS: u64 = 20_000;

/// One row of the table.
struct Row {
    /// FMA peak measured interleaved with this row's kernels, GFLOP/s.
    peak: f64,
    op: String,
    shape: String,
    b: usize,
    gflops: f64,
    mm_gflops: f64,
    ratio: f64,
    density: Option<f64>,
    dense_equiv: Option<f64>,
    speedup: Option<f64>,
    /// Speed-up over the dense product with `W` read transposed (`x·Eᵀ`, `E` as stored).
    speedup_nt: Option<f64>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(out) = args.get(1) else {
        eprintln!("usage: kernel_table OUT.csv [GIT_REV]");
        std::process::exit(2);
    };
    // Optional `--filter SUBSTR` (development aid): only rows whose op contains SUBSTR.
    let filter = args
        .iter()
        .position(|a| a == "--filter")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_default();
    let git_rev = args
        .get(2)
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .or_else(|| std::env::var("GIT_REV").ok())
        .unwrap_or_else(|| "unknown".to_string());
    let kern = drsae_kernels::kernels();
    let peak = fma_peak_gflops(15);
    eprintln!(
        "kernels: {} ; measured FMA peak {peak:.1} GFLOP/s (single thread)",
        kern.name()
    );

    let peak_flops = fma_chains(PEAK_ITERS) as f64;
    let mut rows = Vec::new();
    for &b in &BATCHES {
        for shape in model_shapes(b) {
            if !format!("gemm_{}", shape.op).contains(&filter) {
                continue;
            }
            // One problem for both implementations: same operands, same cache footprint.
            let p = RefCell::new(GemmProblem::new(shape, 42 + b as u64));
            let t = median_secs_interleaved(
                &mut [
                    &mut || p.borrow_mut().run_ours(kern),
                    &mut || p.borrow_mut().run_matrixmultiply(),
                    &mut || {
                        fma_chains(PEAK_ITERS);
                    },
                ],
                WARMUP,
                BATCH_TIME,
                REPEATS,
            );
            let f = shape.flops() as f64;
            rows.push(Row {
                peak: peak_flops / t[2] / 1e9,
                op: format!("gemm_{}", shape.op),
                shape: shape.dims(),
                b,
                gflops: f / t[0] / 1e9,
                mm_gflops: f / t[1] / 1e9,
                ratio: t[1] / t[0],
                density: None,
                dense_equiv: None,
                speedup: None,
                speedup_nt: None,
            });
            eprintln!(
                "{} b={b}: {:.1} vs {:.1}",
                shape.op,
                f / t[0] / 1e9,
                f / t[1] / 1e9
            );
        }
    }
    for &b in &BATCHES {
        for (op, k) in [("enc", N_INPUT), ("rec", N_HIDDEN)] {
            for &d in &DENSITIES {
                if !format!("sparse_gemm_{op}").contains(&filter)
                    && !format!("gemm_depth_subset_{op}").contains(&filter)
                {
                    continue;
                }
                // One problem (one W, one X) for every variant, so they differ only in the
                // kernel.
                let sp = RefCell::new(SparseProblem::new(op, b, k, N_HIDDEN, d, 7 + b as u64));
                let t = median_secs_interleaved(
                    &mut [
                        &mut || sp.borrow_mut().run_sparse(kern),
                        &mut || sp.borrow_mut().run_dense(kern),
                        &mut || sp.borrow_mut().run_matrixmultiply(),
                        &mut || sp.borrow_mut().run_convert_and_sparse(kern),
                        &mut || sp.borrow_mut().run_dense_nt(kern),
                        &mut || {
                            fma_chains(PEAK_ITERS);
                        },
                        &mut || sp.borrow_mut().run_depth_subset(kern),
                    ],
                    WARMUP,
                    BATCH_TIME,
                    REPEATS,
                );
                let sp = sp.into_inner();
                let dense_f = sp.dense_flops() as f64;
                let density = sp.actual_density();
                for (name, ts) in [("sparse_gemm", t[0]), ("sparse_gemm_with_convert", t[3])] {
                    rows.push(Row {
                        peak: peak_flops / t[5] / 1e9,
                        op: format!("{name}_{op}"),
                        shape: sp.dims(),
                        b,
                        gflops: sp.sparse_flops() as f64 / ts / 1e9,
                        mm_gflops: dense_f / t[2] / 1e9,
                        ratio: t[2] / ts,
                        density: Some(density),
                        dense_equiv: Some(dense_f / ts / 1e9),
                        speedup: Some(t[1] / ts),
                        speedup_nt: Some(t[4] / ts),
                    });
                }
                rows.push(Row {
                    peak: peak_flops / t[5] / 1e9,
                    op: format!("gemm_depth_subset_{op}"),
                    shape: sp.dims(),
                    b,
                    gflops: sp.depth_subset_flops() as f64 / t[6] / 1e9,
                    mm_gflops: dense_f / t[2] / 1e9,
                    ratio: t[2] / t[6],
                    density: Some(sp.depth_fraction()),
                    dense_equiv: Some(dense_f / t[6] / 1e9),
                    speedup: Some(t[1] / t[6]),
                    speedup_nt: Some(t[4] / t[6]),
                });
                eprintln!(
                    "sparse {op} b={b} d={d}: speed-up {:.2} (with convert {:.2}), depth subset \
                     {:.2} over {:.0} % of the depth",
                    t[1] / t[0],
                    t[1] / t[3],
                    t[1] / t[6],
                    100.0 * sp.depth_fraction()
                );
            }
        }
    }

    for &b in &BATCHES {
        for &share in &ROW_SHARES {
            if !"gemm_tn_rows_rec_grad".contains(&filter) {
                continue;
            }
            let rp = RefCell::new(RecGradProblem::new(b, 10, N_HIDDEN, share, 11 + b as u64));
            let t = median_secs_interleaved(
                &mut [
                    &mut || rp.borrow_mut().run_rows(kern),
                    &mut || rp.borrow_mut().run_dense(kern),
                    &mut || rp.borrow_mut().run_matrixmultiply(),
                    &mut || {
                        fma_chains(PEAK_ITERS);
                    },
                ],
                WARMUP,
                BATCH_TIME,
                REPEATS,
            );
            let rp = rp.into_inner();
            let dense_f = rp.dense_flops() as f64;
            rows.push(Row {
                peak: peak_flops / t[3] / 1e9,
                op: "gemm_tn_rows_rec_grad".to_string(),
                shape: rp.dims(),
                b,
                gflops: rp.rows_flops() as f64 / t[0] / 1e9,
                mm_gflops: dense_f / t[2] / 1e9,
                ratio: t[2] / t[0],
                density: Some(rp.row_share()),
                dense_equiv: Some(dense_f / t[0] / 1e9),
                speedup: Some(t[1] / t[0]),
                speedup_nt: None,
            });
            eprintln!(
                "recurrent gradient b={b} rows {:.2}: per-example rows {:.2}× the dense product",
                rp.row_share(),
                t[1] / t[0]
            );
        }
    }

    // % of peak uses the median of the per-row peaks: one number for the whole table, measured
    // under the same load as the kernels (a single up-front measurement is at the mercy of
    // whatever else runs on the shared core at that moment).
    let peak_all = drsae_benches::median(rows.iter().map(|r| r.peak).collect());
    let unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let opt = |x: Option<f64>, digits: usize| x.map_or(String::new(), |v| format!("{v:.digits$}"));
    let mut csv = String::new();
    for r in &rows {
        writeln!(
            csv,
            "{},{},{},{},{},{:.2},{:.1},{:.2},{:.3},{},{},{},{},{:.1},1,{},{},{}",
            r.op,
            r.shape,
            r.b,
            kern.name(),
            kern.isa(),
            r.gflops,
            100.0 * r.gflops / peak_all,
            r.mm_gflops,
            r.ratio,
            opt(r.density, 3),
            opt(r.dense_equiv, 2),
            opt(r.speedup, 2),
            git_rev,
            r.peak,
            REPEATS,
            unix_time,
            opt(r.speedup_nt, 2)
        )
        .expect("writing to a String cannot fail");
    }
    // OUT = "-": print only (development runs).
    if out.as_str() != "-"
        && let Err(e) = write_csv(Path::new(out), &csv)
    {
        eprintln!("error: {e}");
        std::process::exit(1);
    }

    println!(
        "Kernels `{}`, single thread, median of {REPEATS} timed batches (thread CPU time); FMA peak {peak:.1} GFLOP/s \
         at start, {peak_all:.1} median over the rows (measured interleaved with them; % of \
         peak uses the latter).\n",
        kern.name(),
    );
    println!(
        "| op | shape | B | GFLOP/s | % peak | matrixmultiply GFLOP/s | ratio vs mm | density | dense-equiv GFLOP/s | sparse speed-up | vs dense A·Wᵀ |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.0} | {:.1} | {:.2} | {} | {} | {} | {} |",
            r.op,
            r.shape,
            r.b,
            r.gflops,
            100.0 * r.gflops / peak_all,
            r.mm_gflops,
            r.ratio,
            opt(r.density, 3),
            opt(r.dense_equiv, 1),
            opt(r.speedup, 2),
            opt(r.speedup_nt, 2)
        );
    }
}

/// Writes `rows` (CSV lines without header) to `path`: a new file with the header, or appended
/// to an existing one whose header matches; atomically via a temporary file and a rename.
fn write_csv(path: &Path, rows: &str) -> Result<(), String> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => {
            let first = text.lines().next().unwrap_or("");
            if first != HEADER {
                return Err(format!(
                    "{} exists with a different header; refusing to mix tables",
                    path.display()
                ));
            }
            eprintln!("appending to {}", path.display());
            text
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!("{HEADER}\n"),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("csv.tmp");
    let mut text = existing;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(rows);
    std::fs::write(&tmp, text).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming to {}: {e}", path.display()))
}
