//! `cargo xtask`: orchestration only; heavy work runs in release builds of `drsae`.
//!
//! Every command prints what it runs, builds `drsae` in release mode where it needs it, and
//! then *replaces* itself with the final command (`exec` on Unix): the command's exit code is
//! xtask's exit code, and Ctrl-C reaches it exactly as if it had been typed directly, so an
//! interrupted `cargo xtask sweep` checkpoints and exits 130 like `drsae sweep` does.
//! std only, so that `cargo xtask` starts without compiling a dependency tree.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask <command> [args...]    (paths are relative to the repository root)

commands (each prints what it runs; `drsae` is built with --release first):
  fetch-data [--dir D]      download and verify MNIST            (drsae fetch-data)
  fixture [--src D] [...]   cut the 1,000-image test fixture     (drsae fixture --out
                            crates/drsae-data/tests/fixtures/mnist-mini)
  bench-kernels [OUT.csv]   kernel GFLOP/s table                 (kernel_table, default
                            results/kernels.csv)
  sweep SPEC.toml [...]     run a sweep                          (drsae sweep; see --help)
  report SPEC.toml [...]    aggregate a sweep                    (drsae report)
  figures [--checkpoint F] [--pretrained F] [...]
                            analysis figures of a fine-tuned checkpoint (default: the
                            checkpoint-best.safetensors of results/paper-train/n400-T11-seed1,
                            else of results/quick-train, else the newest of
                            results/quick/runs/*) and
                            of its pretrained start (default: pretrained.safetensors
                            beside it) into results/figures/{final,pretrained}
                            (drsae analyze; other flags, e.g. --data-dir D, go to both)
  ci                        what CI runs                         (bash .ci/run)
";

/// The commit the working tree is at, with `-dirty` when it has uncommitted changes, so
/// that result rows say which code measured them.
fn git_rev(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(rev) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(changes) if changes.is_empty() => rev,
        _ => format!("{rev}-dirty"),
    }
}

/// Where the committed test fixture lives, relative to the repository root.
const FIXTURE_DIR: &str = "crates/drsae-data/tests/fixtures/mnist-mini";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let root = repo_root();
    let rest = rest.to_vec();
    let result = match cmd.to_str().unwrap_or("") {
        "fetch-data" => drsae(&root, "fetch-data", rest),
        "fixture" => {
            let mut rest = rest;
            if !rest.iter().any(|a| a == "--out") {
                rest.extend(["--out".into(), root.join(FIXTURE_DIR).into()]);
            }
            drsae(&root, "fixture", rest)
        }
        "bench-kernels" => {
            let out = if rest.is_empty() {
                vec![OsString::from("results/kernels.csv")]
            } else {
                rest
            };
            let mut c = cargo(&root);
            c.args([
                "run",
                "--release",
                "-p",
                "drsae-benches",
                "--bin",
                "kernel_table",
                "--",
            ])
            .args(out)
            .env("GIT_REV", git_rev(&root));
            exec(c)
        }
        "sweep" => drsae(&root, "sweep", rest),
        "report" => drsae(&root, "report", rest),
        "figures" => figures(&root, rest),
        "ci" => {
            let mut c = Command::new("bash");
            c.arg(".ci/run").args(rest).current_dir(&root);
            exec(c)
        }
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(0)
        }
        other => {
            eprint!("xtask: unknown command `{other}`\n\n{USAGE}");
            Ok(2)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root: xtask's manifest folder is `<root>/xtask`.
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `$CARGO` (set by `cargo run` to the cargo that runs us, so the same toolchain builds),
/// else `cargo` from PATH, run in the repository root.
fn cargo(root: &Path) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root);
    c
}

/// `target/` of the workspace (or `$CARGO_TARGET_DIR`).
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => root.join(d),
        None => root.join("target"),
    }
}

/// Builds `drsae` in release mode, then runs `drsae <sub> <args>` in the repository root.
fn drsae(root: &Path, sub: &str, args: Vec<OsString>) -> Result<u8, String> {
    let (code, bin) = build_drsae(root)?;
    if code != 0 {
        return Ok(code);
    }
    let mut c = Command::new(bin);
    c.arg(sub).args(args).current_dir(root);
    exec(c)
}

/// Runs whose best checkpoint `cargo xtask figures` analyses when none is named, first found
/// first: the paper-schedule run, then the README's main (quick) run.
const MAIN_RUNS: [&str; 2] = ["results/paper-train/n400-T11-seed1", "results/quick-train"];

/// Where `cargo xtask figures` looks next: the newest run of the quick sweep.
const FIGURES_RUNS: &str = "results/quick/runs";

/// `cargo xtask figures`: `drsae analyze` of a fine-tuned checkpoint into
/// results/figures/final/, then of the pretrained-only checkpoint into
/// results/figures/pretrained/, so that the two can be compared.
fn figures(root: &Path, args: Vec<OsString>) -> Result<u8, String> {
    let mut checkpoint = None;
    let mut pretrained = None;
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let text = arg.to_string_lossy().into_owned();
        let slot = match text.split_once('=').map_or(text.as_str(), |(flag, _)| flag) {
            "--checkpoint" => &mut checkpoint,
            "--pretrained" => &mut pretrained,
            "--out" => {
                return Err(
                    "figures writes into results/figures/final and results/figures/pretrained; \
                     run `drsae analyze --out DIR` for another folder"
                        .into(),
                );
            }
            _ => {
                rest.push(arg);
                continue;
            }
        };
        let value = match text.split_once('=') {
            Some((_, v)) => OsString::from(v),
            None => it
                .next()
                .ok_or_else(|| format!("{text} needs a file name"))?,
        };
        *slot = Some(PathBuf::from(value));
    }
    let runs = root.join(FIGURES_RUNS);
    let checkpoint = match checkpoint {
        Some(p) => p,
        None => MAIN_RUNS
            .iter()
            .map(|run| root.join(run).join("checkpoint-best.safetensors"))
            .find(|p| p.is_file())
            .or_else(|| newest(&runs, "checkpoint-best.safetensors"))
            .ok_or_else(|| {
            format!(
                "no checkpoint-best.safetensors in {} or {FIGURES_RUNS}/*/checkpoint-best.safetensors found; pass --checkpoint FILE \
                 (a fine-tuned checkpoint-best.safetensors) and --pretrained FILE (the \
                 pretrained.safetensors of the same run)",
                MAIN_RUNS.join(", ")
            )
        })?,
    };
    let pretrained = match pretrained {
        Some(p) => p,
        None => {
            let beside = root
                .join(&checkpoint)
                .with_file_name("pretrained.safetensors");
            if beside.is_file() {
                beside
            } else {
                newest(&runs, "pretrained.safetensors").ok_or_else(|| {
                    format!(
                        "no pretrained.safetensors beside {} or in {FIGURES_RUNS}/*/; pass \
                         --pretrained FILE (the checkpoint saved at the end of phase 1)",
                        checkpoint.display()
                    )
                })?
            }
        }
    };
    // Commands run in the repository root: name files relative to it where possible, so that
    // the summaries written into results/ do not depend on where the checkout lives.
    let relative = |p: PathBuf| p.strip_prefix(root).map(Path::to_path_buf).unwrap_or(p);
    let (checkpoint, pretrained) = (relative(checkpoint), relative(pretrained));
    let (code, bin) = build_drsae(root)?;
    if code != 0 {
        return Ok(code);
    }
    let analyze = |ckpt: &Path, out: &str| {
        let mut c = Command::new(&bin);
        c.arg("analyze")
            .arg("--checkpoint")
            .arg(ckpt)
            .args(["--out", out])
            .args(&rest)
            .current_dir(root);
        c
    };
    let code = run(analyze(&checkpoint, "results/figures/final"))?;
    if code != 0 {
        return Ok(code);
    }
    exec(analyze(&pretrained, "results/figures/pretrained"))
}

/// The most recently modified `<dir>/*/<name>`, if any.
fn newest(dir: &Path, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join(name))
        .filter_map(|path| {
            let modified = path.metadata().ok()?.modified().ok()?;
            Some((modified, path))
        })
        .max()
        .map(|(_, path)| path)
}

/// Builds `drsae` in release mode: the build's exit code and the binary's path.
fn build_drsae(root: &Path) -> Result<(u8, PathBuf), String> {
    let mut build = cargo(root);
    build.args([
        "build",
        "--release",
        "-p",
        "drsae-harness",
        "--bin",
        "drsae",
    ]);
    let code = run(build)?;
    let bin = target_dir(root)
        .join("release")
        .join(format!("drsae{}", std::env::consts::EXE_SUFFIX));
    Ok((code, bin))
}

fn show(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|ch: char| ch.is_whitespace() || "'\"$`\\".contains(ch)) {
            s.push_str(&format!(" '{}'", a.replace('\'', r"'\''")));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// Runs a command to completion; its exit code (128 + signal if killed).
fn run(mut c: Command) -> Result<u8, String> {
    eprintln!("xtask: {}", show(&c));
    let status = c
        .status()
        .map_err(|e| format!("cannot run {}: {e}", c.get_program().to_string_lossy()))?;
    Ok(exit_code(status))
}

fn exit_code(status: std::process::ExitStatus) -> u8 {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return 128u8.saturating_add(sig as u8);
        }
    }
    status.code().map(|c| c.clamp(0, 255) as u8).unwrap_or(1)
}

/// Replaces this process with the command (Unix), or runs it and returns its exit code.
fn exec(mut c: Command) -> Result<u8, String> {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        eprintln!("xtask: {}", show(&c));
        // exec only returns on failure.
        let e = c.exec();
        Err(format!(
            "cannot run {}: {e}",
            c.get_program().to_string_lossy()
        ))
    }
    #[cfg(not(unix))]
    {
        run(c)
    }
}
