//! Sweep specifications (`experiments/*.toml`): parsing, validation with file:line errors, and
//! expansion into concrete runs.
//!
//! A spec is checked completely before anything runs: every key is looked up, every value's type
//! checked, and every expanded run's configuration passed through [`Config::from_toml_str`], so a
//! typo on line 40 is reported before the first of 27 runs starts, not an hour into the sweep.
//! Errors name the file, the line and column of the key, and the field.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use drsae_model::config::{Config, ConfigError};
use toml::Value;

use super::ident::{canonical_value, run_id};
use super::random::SplitMix64;

/// The top-level sections a spec may contain.
const SECTIONS: [&str; 5] = ["sweep", "base", "grid", "configs", "random"];
/// The keys of `[sweep]`.
const SWEEP_KEYS: [&str; 4] = ["description", "threads", "seeds", "data_args"];
/// The keys of `[sweep.data_args]`: the data flags of `drsae train`.
const DATA_KEYS: [&str; 3] = ["n_valid", "data_dir", "allow_modified_data"];
/// The keys of `[random]` other than the ranges.
const RANDOM_KEYS: [&str; 3] = ["samples", "seed", "ranges"];
/// The keys of one `[random.ranges]` entry.
const RANGE_KEYS: [&str; 3] = ["min", "max", "log"];
/// The summary column that holds a `[[configs]]` variant's name.
pub const VARIANT_COLUMN: &str = "variant";

/// A spec that could not be accepted, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The spec file, as given on the command line.
    pub file: PathBuf,
    /// 1-based line of the offending key (0 when the problem is the file as a whole).
    pub line: usize,
    /// 1-based column of the offending key (0 when unknown).
    pub column: usize,
    /// Dotted path of the offending key, e.g. `grid.lambda` or `configs[1].n_steps`.
    pub field: String,
    /// What is wrong, in a sentence.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SpecError {}

/// The data flags passed to every `drsae train` of a sweep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataArgs {
    /// `--n-valid`: how many of the last training images validate.
    pub n_valid: Option<u64>,
    /// `--data-dir`: where the IDX files are (a location, so not part of a run's identity).
    pub data_dir: Option<PathBuf>,
    /// `--allow-modified-data`: accept files that are not the published MNIST.
    pub allow_modified_data: bool,
}

impl DataArgs {
    /// The `drsae train` flags these arguments stand for.
    pub fn train_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(dir) = &self.data_dir {
            flags.push("--data-dir".to_string());
            flags.push(dir.display().to_string());
        }
        if self.allow_modified_data {
            flags.push("--allow-modified-data".to_string());
        }
        if let Some(n) = self.n_valid {
            flags.push("--n-valid".to_string());
            flags.push(n.to_string());
        }
        flags
    }

    /// The part of the arguments that changes what a run computes, as canonical text for the
    /// run id: the validation split. The data folder and the permission to read modified
    /// files are left out on purpose: they say where data is and whether to trust it, differ
    /// between a laptop and a cluster, and the same sweep must get the same ids on both (and
    /// `drsae sweep-record`, which re-expands the spec without the command-line flags, must
    /// find the ids the sweep used).
    pub fn identity(&self) -> String {
        match self.n_valid {
            Some(n) => format!("n_valid={n}\n"),
            None => String::new(),
        }
    }
}

/// Command-line values that override or complete a spec's `[sweep.data_args]`.
#[derive(Debug, Clone, Default)]
pub struct DataOverrides {
    /// `--data-dir` given to `drsae sweep` (relative to the current directory).
    pub data_dir: Option<PathBuf>,
    /// `--allow-modified-data` given to `drsae sweep`.
    pub allow_modified_data: bool,
}

/// One `field = value` assignment of Config fields, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// The Config field.
    pub field: String,
    /// Its value as written in the spec.
    pub value: Value,
    /// Dotted path of the key in the spec, for error messages.
    pub path: String,
    /// Line and column of the key.
    pub at: (usize, usize),
}

/// How a spec varies the configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Variation {
    /// No `[grid]`, `[[configs]]` or `[random]`: the `[base]` configuration alone (× seeds).
    Single,
    /// `[grid]`: the cartesian product of the axes, first axis varying slowest.
    Grid(Vec<Axis>),
    /// `[[configs]]`: a list of named variants.
    Configs(Vec<Variant>),
    /// `[random]`: `samples` points drawn from the ranges.
    Random(RandomSearch),
}

/// One `[grid]` axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// The Config field the axis sweeps.
    pub field: String,
    /// Its values, each with its own position (for errors on one bad value).
    pub values: Vec<Assignment>,
}

/// One `[[configs]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The variant's `name`.
    pub name: String,
    /// Its Config fields (overriding `[base]`).
    pub fields: Vec<Assignment>,
}

/// `[random]`: random search.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomSearch {
    /// How many points to draw.
    pub samples: usize,
    /// Seed of the draw (independent of the training seeds).
    pub seed: u64,
    /// One range per field, in file order.
    pub ranges: Vec<Range>,
}

/// One `[random.ranges]` entry: `field = { min = .., max = .., log = true }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    /// The Config field.
    pub field: String,
    /// Lower end (inclusive).
    pub min: f64,
    /// Upper end (inclusive).
    pub max: f64,
    /// Draw log-uniformly (`min` must be > 0).
    pub log: bool,
    /// Round to an integer (both ends written as integers, or an integer Config field).
    pub integer: bool,
    /// Dotted path of the key in the spec.
    pub path: String,
    /// Line and column of the key.
    pub at: (usize, usize),
}

/// A parsed, validated sweep specification.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The spec file as given.
    pub path: PathBuf,
    /// The file's stem: the results go to `<results-dir>/<stem>/`.
    pub stem: String,
    /// `[sweep].description`, shown in reports.
    pub description: Option<String>,
    /// Threads per run (`--threads` of `drsae train`).
    pub threads: usize,
    /// `[sweep].seeds`: one run per seed and configuration; `None` keeps the configs' own seed.
    pub seeds: Option<Vec<u64>>,
    /// Line and column of `[sweep].seeds` (for errors about a seed).
    pub seeds_at: (usize, usize),
    /// The data flags passed to `drsae train`.
    pub data: DataArgs,
    /// `[base]`: Config fields shared by every run.
    pub base: Vec<Assignment>,
    /// How the configuration varies.
    pub variation: Variation,
    /// The summary columns that tell runs apart besides the seed (axes, variant and its
    /// fields, or the random fields), in file order.
    pub columns: Vec<String>,
    /// Every run the spec expands to, validated, in execution order (seeds outermost, so an
    /// interrupted sweep has covered every configuration once before it repeats any).
    pub runs: Vec<Run>,
}

/// One concrete training run of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Stable id: 16 hex digits of FNV-1a 64 over the canonical resolved config and data args.
    pub id: String,
    /// Values of [`Spec::columns`], as written in the summary.
    pub values: Vec<String>,
    /// The training seed.
    pub seed: u64,
    /// The resolved configuration, as `Config::to_toml_string` writes it.
    pub config_toml: String,
}

impl Run {
    /// A short human description, e.g. `lambda=0.09 n_steps=5 seed=1`.
    pub fn describe(&self, columns: &[String]) -> String {
        let mut parts: Vec<String> = columns
            .iter()
            .zip(&self.values)
            .map(|(c, v)| format!("{c}={v}"))
            .collect();
        parts.push(format!("seed={}", self.seed));
        parts.join(" ")
    }
}

/// Byte offsets of keys and values in the spec text, by dotted path.
struct Positions {
    text_line_starts: Vec<usize>,
    keys: HashMap<String, usize>,
}

impl Positions {
    fn new(text: &str) -> Positions {
        let mut text_line_starts = vec![0];
        text_line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let mut keys = HashMap::new();
        if let Ok(doc) = toml::de::DeTable::parse(text) {
            walk_table(doc.get_ref(), "", &mut keys);
        }
        Positions {
            text_line_starts,
            keys,
        }
    }

    /// 1-based (line, column) of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.text_line_starts.partition_point(|&s| s <= offset);
        let start = self.text_line_starts[line - 1];
        (line, offset - start + 1)
    }

    /// Position of a dotted path, or of its closest recorded ancestor.
    fn at(&self, path: &str) -> (usize, usize) {
        let mut p = path;
        loop {
            if let Some(&off) = self.keys.get(p) {
                return self.line_col(off);
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return (0, 0),
            }
        }
    }
}

fn walk_table(table: &toml::de::DeTable<'_>, prefix: &str, out: &mut HashMap<String, usize>) {
    for (k, v) in table.iter() {
        let path = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        out.insert(path.clone(), k.span().start);
        walk_value(v, &path, out);
    }
}

fn walk_value(
    v: &toml::Spanned<toml::de::DeValue<'_>>,
    path: &str,
    out: &mut HashMap<String, usize>,
) {
    match v.get_ref() {
        toml::de::DeValue::Table(t) => walk_table(t, path, out),
        toml::de::DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let p = format!("{path}[{i}]");
                out.insert(p.clone(), item.span().start);
                walk_value(item, &p, out);
            }
        }
        _ => {}
    }
}

/// Builds errors that point into one spec file.
struct Ctx<'a> {
    file: &'a Path,
    pos: Positions,
}

impl Ctx<'_> {
    fn err(&self, path: &str, message: impl Into<String>) -> SpecError {
        let (line, column) = self.pos.at(path);
        SpecError {
            file: self.file.to_path_buf(),
            line,
            column,
            field: path.to_string(),
            message: message.into(),
        }
    }

    fn err_at(&self, path: &str, at: (usize, usize), message: impl Into<String>) -> SpecError {
        SpecError {
            file: self.file.to_path_buf(),
            line: at.0,
            column: at.1,
            field: path.to_string(),
            message: message.into(),
        }
    }

    fn assignment(&self, path: &str, field: &str, value: &Value) -> Assignment {
        Assignment {
            field: field.to_string(),
            value: value.clone(),
            path: path.to_string(),
            at: self.pos.at(path),
        }
    }

    fn table<'v>(&self, path: &str, v: &'v Value) -> Result<&'v toml::Table, SpecError> {
        v.as_table()
            .ok_or_else(|| self.err(path, format!("expected a table, found {}", type_name(v))))
    }

    fn check_keys(
        &self,
        prefix: &str,
        table: &toml::Table,
        allowed: &[&str],
    ) -> Result<(), SpecError> {
        // Report the first unknown key in file order, which is the one a reader looks at first.
        let mut unknown: Vec<(usize, usize, &String)> = table
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .map(|k| {
                let (l, c) = self.pos.at(&join(prefix, k));
                (l, c, k)
            })
            .collect();
        unknown.sort();
        match unknown.first() {
            Some((_, _, k)) => Err(self.err(
                &join(prefix, k),
                format!("unknown key `{k}`; expected one of: {}", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn uint(&self, path: &str, v: &Value, min: i64) -> Result<u64, SpecError> {
        match v {
            Value::Integer(i) if *i >= min => Ok(*i as u64),
            Value::Integer(i) => {
                Err(self.err(path, format!("must be an integer ≥ {min}, got {i}")))
            }
            other => Err(self.err(
                path,
                format!("expected an integer ≥ {min}, found {}", type_name(other)),
            )),
        }
    }

    fn number(&self, path: &str, v: &Value) -> Result<f64, SpecError> {
        match v {
            Value::Integer(i) => Ok(*i as f64),
            Value::Float(f) if f.is_finite() => Ok(*f),
            Value::Float(f) => Err(self.err(path, format!("must be a finite number, got {f}"))),
            other => Err(self.err(
                path,
                format!("expected a number, found {}", type_name(other)),
            )),
        }
    }

    /// Config fields of a table (`[base]` or a variant), in file order.
    fn fields(&self, prefix: &str, table: &toml::Table, skip: &[&str]) -> Vec<Assignment> {
        let mut out: Vec<Assignment> = table
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| self.assignment(&join(prefix, k), k, v))
            .collect();
        out.sort_by_key(|a| a.at);
        out
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The TOML type of a value, as a noun for messages.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// A value as written in summary columns and run tables: strings bare, numbers as TOML
/// would read them back, so that `0.09` stays `0.09`.
pub fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => display_float(*f),
        Value::Boolean(b) => b.to_string(),
        other => canonical_value(other),
    }
}

/// Plain decimals in the readable range, scientific notation outside it (`1e-5`, not
/// `0.00001`); both read back as the same f64.
pub fn display_float(f: f64) -> String {
    let a = f.abs();
    if a == 0.0 || (1e-3..1e6).contains(&a) || !f.is_finite() {
        let s = f.to_string();
        // Keep a float recognisable as one (TOML and readers of the CSV): `1` → `1.0`.
        if f.is_finite() && !s.contains(['.', 'e', 'E']) {
            format!("{s}.0")
        } else {
            s
        }
    } else {
        format!("{f:e}")
    }
}

impl Spec {
    /// Reads, checks and expands a spec file. `overrides` are the data flags given on the
    /// command line; they win over `[sweep.data_args]`.
    pub fn load(path: &Path, overrides: &DataOverrides) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read the spec: {e}"),
        })?;
        Spec::parse(path, &text, overrides)
    }

    /// Checks and expands spec text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str, overrides: &DataOverrides) -> Result<Spec, SpecError> {
        let doc: toml::Table = match toml::from_str(text) {
            Ok(d) => d,
            Err(e) => {
                let pos = Positions::new(text);
                let (line, column) = e.span().map(|s| pos.line_col(s.start)).unwrap_or((0, 0));
                return Err(SpecError {
                    file: path.to_path_buf(),
                    line,
                    column,
                    field: String::new(),
                    message: format!("not valid TOML: {}", e.message().trim()),
                });
            }
        };
        let ctx = Ctx {
            file: path,
            pos: Positions::new(text),
        };
        ctx.check_keys("", &doc, &SECTIONS)?;

        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ctx.err(
                    "",
                    "the spec file has no name to derive a results folder from",
                )
            })?;

        // [sweep]
        let empty = toml::Table::new();
        let sweep = match doc.get("sweep") {
            Some(v) => ctx.table("sweep", v)?,
            None => &empty,
        };
        ctx.check_keys("sweep", sweep, &SWEEP_KEYS)?;
        let description = match sweep.get("description") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                return Err(ctx.err(
                    "sweep.description",
                    format!("expected a string, found {}", type_name(v)),
                ));
            }
        };
        let threads = match sweep.get("threads") {
            None => 1,
            Some(v) => ctx.uint("sweep.threads", v, 1)? as usize,
        };
        let seeds_at = ctx.pos.at("sweep.seeds");
        let seeds = match sweep.get("seeds") {
            None => None,
            Some(Value::Array(a)) => {
                if a.is_empty() {
                    return Err(ctx.err("sweep.seeds", "is empty: give at least one seed"));
                }
                let mut seeds = Vec::with_capacity(a.len());
                for (i, v) in a.iter().enumerate() {
                    let s = ctx.uint(&format!("sweep.seeds[{i}]"), v, 0)?;
                    if seeds.contains(&s) {
                        return Err(ctx.err(
                            &format!("sweep.seeds[{i}]"),
                            format!("seed {s} is listed twice"),
                        ));
                    }
                    seeds.push(s);
                }
                Some(seeds)
            }
            Some(v) => {
                return Err(ctx.err(
                    "sweep.seeds",
                    format!("expected an array of integers, found {}", type_name(v)),
                ));
            }
        };
        let data = parse_data_args(&ctx, sweep, path, overrides)?;

        // [base]
        let base = match doc.get("base") {
            Some(v) => ctx.fields("base", ctx.table("base", v)?, &[]),
            None => Vec::new(),
        };

        let present: Vec<&str> = ["grid", "configs", "random"]
            .into_iter()
            .filter(|k| doc.contains_key(*k))
            .collect();
        if present.len() > 1 {
            return Err(ctx.err(
                present[1],
                format!(
                    "a spec has at most one of [grid], [[configs]] and [random]; this one has {}",
                    present.join(" and ")
                ),
            ));
        }
        let defaults = default_config_table();
        let variation = match present.first().copied() {
            None => Variation::Single,
            Some("grid") => Variation::Grid(parse_grid(&ctx, &doc["grid"])?),
            Some("configs") => Variation::Configs(parse_configs(&ctx, &doc["configs"])?),
            Some(_) => Variation::Random(parse_random(&ctx, &doc["random"], &defaults)?),
        };

        // With [sweep].seeds the sweep owns the seed: a seed set elsewhere would be silently
        // overwritten, so it is an error.
        if seeds.is_some() {
            let seed_elsewhere = base
                .iter()
                .chain(variation_assignments(&variation))
                .find(|a| a.field == "seed")
                .map(|a| (a.path.clone(), a.at));
            let seed_elsewhere = seed_elsewhere.or_else(|| match &variation {
                Variation::Random(r) => r
                    .ranges
                    .iter()
                    .find(|r| r.field == "seed")
                    .map(|r| (r.path.clone(), r.at)),
                _ => None,
            });
            if let Some((p, at)) = seed_elsewhere {
                return Err(ctx.err_at(
                    &p,
                    at,
                    "`seed` is set by [sweep].seeds; remove it here or drop [sweep].seeds",
                ));
            }
        }

        let columns = columns_of(&variation);
        let mut spec = Spec {
            path: path.to_path_buf(),
            stem,
            description,
            threads,
            seeds,
            seeds_at,
            data,
            base,
            variation,
            columns,
            runs: Vec::new(),
        };
        spec.runs = spec.expand(&ctx)?;
        Ok(spec)
    }

    /// The configuration points (before seeds), each a list of assignments over `[base]` and
    /// its summary-column values where they come from the spec (variant names).
    fn points(&self) -> Vec<Vec<Assignment>> {
        match &self.variation {
            Variation::Single => vec![Vec::new()],
            Variation::Grid(axes) => {
                let mut points: Vec<Vec<Assignment>> = vec![Vec::new()];
                for axis in axes {
                    points = points
                        .into_iter()
                        .flat_map(|p| {
                            axis.values.iter().map(move |v| {
                                let mut q = p.clone();
                                q.push(v.clone());
                                q
                            })
                        })
                        .collect();
                }
                points
            }
            Variation::Configs(variants) => variants.iter().map(|v| v.fields.clone()).collect(),
            Variation::Random(r) => {
                let mut rng = SplitMix64::new(r.seed);
                (0..r.samples)
                    .map(|_| {
                        r.ranges
                            .iter()
                            .map(|range| Assignment {
                                field: range.field.clone(),
                                value: range.sample(&mut rng),
                                path: range.path.clone(),
                                at: range.at,
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    fn expand(&self, ctx: &Ctx<'_>) -> Result<Vec<Run>, SpecError> {
        let points = self.points();
        let seeds: Vec<Option<u64>> = match &self.seeds {
            Some(s) => s.iter().map(|&s| Some(s)).collect(),
            None => vec![None],
        };
        let names: Vec<Option<&str>> = match &self.variation {
            Variation::Configs(v) => v.iter().map(|v| Some(v.name.as_str())).collect(),
            _ => vec![None; points.len()],
        };
        let mut runs = Vec::with_capacity(points.len() * seeds.len());
        let mut seen: HashMap<String, String> = HashMap::new();
        for seed in &seeds {
            for (point, name) in points.iter().zip(&names) {
                let run = self.resolve(ctx, point, *name, *seed)?;
                let desc = run.describe(&self.columns);
                if let Some(other) = seen.insert(run.id.clone(), desc.clone()) {
                    let at = point.first().map(|a| (a.path.clone(), a.at));
                    let (p, at) = at.unwrap_or_else(|| ("sweep.seeds".into(), self.seeds_at));
                    return Err(ctx.err_at(
                        &p,
                        at,
                        format!(
                            "runs `{other}` and `{desc}` resolve to the same configuration \
                             (run {}); every run of a sweep must differ",
                            run.id
                        ),
                    ));
                }
                runs.push(run);
            }
        }
        Ok(runs)
    }

    /// Merges `[base]`, one point and the seed, validates the result with the model's own
    /// parser and computes the run's id and column values.
    fn resolve(
        &self,
        ctx: &Ctx<'_>,
        point: &[Assignment],
        variant: Option<&str>,
        seed: Option<u64>,
    ) -> Result<Run, SpecError> {
        // The point overrides [base]; keep, for each field, the assignment that won so an error
        // can point at the line that set the offending value.
        let mut merged: Vec<Assignment> = Vec::new();
        for a in self.base.iter().chain(point) {
            merged.retain(|m| m.field != a.field);
            merged.push(a.clone());
        }
        if let Some(s) = seed {
            merged.push(Assignment {
                field: "seed".into(),
                value: Value::Integer(s as i64),
                path: "sweep.seeds".into(),
                at: self.seeds_at,
            });
        }
        // One `"key" = value` per line, so that a parse error's line number tells which
        // assignment it is about. Keys are quoted so that any key the spec used stays valid TOML.
        let mut text = String::new();
        for a in &merged {
            text.push_str(&format!(
                "{} = {}\n",
                Value::String(a.field.clone()),
                inline_value(&a.value)
            ));
        }
        let context = {
            let mut parts: Vec<String> = Vec::new();
            if let Some(v) = variant {
                parts.push(format!("variant {v}"));
            }
            parts.extend(
                point
                    .iter()
                    .map(|a| format!("{} = {}", a.field, display_value(&a.value))),
            );
            if let Some(s) = seed {
                parts.push(format!("seed = {s}"));
            }
            if parts.is_empty() {
                String::new()
            } else {
                format!(" (in the run with {})", parts.join(", "))
            }
        };
        let config = Config::from_toml_str(&text).map_err(|e| {
            let culprit = culprit(&e, &merged, &text);
            match culprit {
                Some(a) => ctx.err_at(&a.path, a.at, format!("{}{context}", config_message(&e))),
                None => ctx.err("base", format!("{}{context}", config_message(&e))),
            }
        })?;
        let resolved = config
            .to_toml_string()
            .map_err(|e| ctx.err("base", format!("cannot write the resolved config: {e}")))?;
        let resolved_table: toml::Table = toml::from_str(&resolved).map_err(|e| {
            ctx.err(
                "base",
                format!("the resolved config does not read back: {e}"),
            )
        })?;
        let id = run_id(&resolved_table, &self.data.identity());
        let values = self
            .columns
            .iter()
            .map(|c| {
                if c == VARIANT_COLUMN {
                    variant.unwrap_or_default().to_string()
                } else {
                    resolved_table.get(c).map(display_value).unwrap_or_default()
                }
            })
            .collect();
        Ok(Run {
            id,
            values,
            seed: config.seed,
            config_toml: resolved,
        })
    }
}

/// A TOML value written inline (`[1, 2]`, `{ a = 1 }`, `"s"`, `0.09`).
fn inline_value(v: &Value) -> String {
    // toml's Display for a Value is its inline form; floats keep full round-trip precision.
    v.to_string()
}

/// The model's message without toml's multi-line source excerpt, which would show the
/// generated text rather than the user's spec.
fn config_message(e: &ConfigError) -> String {
    match e {
        ConfigError::Parse(p) => p.message().trim().replace('\n', " "),
        other => other.to_string(),
    }
}

/// Which assignment a Config error is about: the field the model named, or the line of the
/// generated text that the TOML error points at (one assignment per line).
fn culprit<'a>(e: &ConfigError, merged: &'a [Assignment], text: &str) -> Option<&'a Assignment> {
    match e {
        ConfigError::Invalid { field, .. } => merged.iter().find(|a| a.field == *field),
        ConfigError::Parse(p) => {
            let start = p.span()?.start;
            let line = text[..start.min(text.len())].matches('\n').count();
            merged.get(line)
        }
        ConfigError::Serialize(_) => None,
    }
}

/// `Config::default()` as a TOML table: tells which fields are integers.
fn default_config_table() -> toml::Table {
    toml::Table::try_from(Config::default()).unwrap_or_default()
}

fn parse_data_args(
    ctx: &Ctx<'_>,
    sweep: &toml::Table,
    spec_path: &Path,
    overrides: &DataOverrides,
) -> Result<DataArgs, SpecError> {
    let mut data = DataArgs::default();
    if let Some(v) = sweep.get("data_args") {
        let t = ctx.table("sweep.data_args", v)?;
        ctx.check_keys("sweep.data_args", t, &DATA_KEYS)?;
        if let Some(v) = t.get("n_valid") {
            data.n_valid = Some(ctx.uint("sweep.data_args.n_valid", v, 0)?);
        }
        match t.get("data_dir") {
            None => {}
            Some(Value::String(s)) => {
                // Relative to the spec file, like paths in Cargo.toml, so that the spec means
                // the same thing whatever directory the sweep is started from.
                let p = PathBuf::from(s);
                let base = spec_path.parent().unwrap_or(Path::new("."));
                data.data_dir = Some(if p.is_absolute() { p } else { base.join(p) });
            }
            Some(v) => {
                return Err(ctx.err(
                    "sweep.data_args.data_dir",
                    format!("expected a string (a folder), found {}", type_name(v)),
                ));
            }
        }
        match t.get("allow_modified_data") {
            None => {}
            Some(Value::Boolean(b)) => data.allow_modified_data = *b,
            Some(v) => {
                return Err(ctx.err(
                    "sweep.data_args.allow_modified_data",
                    format!("expected true or false, found {}", type_name(v)),
                ));
            }
        }
    }
    if let Some(d) = &overrides.data_dir {
        data.data_dir = Some(d.clone());
    }
    data.allow_modified_data |= overrides.allow_modified_data;
    Ok(data)
}

fn parse_grid(ctx: &Ctx<'_>, v: &Value) -> Result<Vec<Axis>, SpecError> {
    let t = ctx.table("grid", v)?;
    if t.is_empty() {
        return Err(ctx.err("grid", "has no axes: add `field = [values...]`"));
    }
    let mut axes = Vec::with_capacity(t.len());
    for (field, values) in t {
        let path = join("grid", field);
        let Value::Array(values) = values else {
            return Err(ctx.err(
                &path,
                format!(
                    "an axis must be an array of values (`{field} = [..]`), found {}",
                    type_name(values)
                ),
            ));
        };
        if values.is_empty() {
            return Err(ctx.err(&path, "axis is empty: give at least one value"));
        }
        let values: Vec<Assignment> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut a = ctx.assignment(&format!("{path}[{i}]"), field, v);
                // Errors name the axis; the position is the value's own (its line may differ
                // in a multi-line array).
                a.path = path.clone();
                a
            })
            .collect();
        for (i, a) in values.iter().enumerate() {
            if values[..i].iter().any(|b| b.value == a.value) {
                return Err(ctx.err_at(
                    &path,
                    a.at,
                    format!("value {} is listed twice", display_value(&a.value)),
                ));
            }
        }
        axes.push((
            ctx.pos.at(&path),
            Axis {
                field: field.clone(),
                values,
            },
        ));
    }
    axes.sort_by_key(|(at, _)| *at);
    Ok(axes.into_iter().map(|(_, a)| a).collect())
}

fn parse_configs(ctx: &Ctx<'_>, v: &Value) -> Result<Vec<Variant>, SpecError> {
    let Value::Array(items) = v else {
        return Err(ctx.err(
            "configs",
            format!("expected [[configs]] tables, found {}", type_name(v)),
        ));
    };
    if items.is_empty() {
        return Err(ctx.err("configs", "is empty: give at least one [[configs]] entry"));
    }
    let mut variants: Vec<Variant> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("configs[{i}]");
        let t = ctx.table(&prefix, item)?;
        let name = match t.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(Value::String(_)) => return Err(ctx.err(&join(&prefix, "name"), "is empty")),
            Some(v) => {
                return Err(ctx.err(
                    &join(&prefix, "name"),
                    format!("expected a string, found {}", type_name(v)),
                ));
            }
            None => return Err(ctx.err(&prefix, "has no `name = \"...\"`")),
        };
        if variants.iter().any(|v| v.name == name) {
            return Err(ctx.err(
                &join(&prefix, "name"),
                format!("name `{name}` is used twice"),
            ));
        }
        variants.push(Variant {
            name,
            fields: ctx.fields(&prefix, t, &["name"]),
        });
    }
    Ok(variants)
}

fn parse_random(
    ctx: &Ctx<'_>,
    v: &Value,
    defaults: &toml::Table,
) -> Result<RandomSearch, SpecError> {
    let t = ctx.table("random", v)?;
    ctx.check_keys("random", t, &RANDOM_KEYS)?;
    let samples = match t.get("samples") {
        Some(v) => ctx.uint("random.samples", v, 1)? as usize,
        None => return Err(ctx.err("random", "needs `samples = N`")),
    };
    let seed = match t.get("seed") {
        Some(v) => ctx.uint("random.seed", v, 0)?,
        None => return Err(ctx.err("random", "needs `seed = N` (the draw must be reproducible)")),
    };
    let ranges_table = match t.get("ranges") {
        Some(v) => ctx.table("random.ranges", v)?,
        None => return Err(ctx.err("random", "needs [random.ranges] with at least one field")),
    };
    if ranges_table.is_empty() {
        return Err(ctx.err("random.ranges", "has no fields"));
    }
    let mut ranges = Vec::with_capacity(ranges_table.len());
    for (field, r) in ranges_table {
        let path = join("random.ranges", field);
        let rt = ctx.table(&path, r)?;
        ctx.check_keys(&path, rt, &RANGE_KEYS)?;
        let (Some(min_v), Some(max_v)) = (rt.get("min"), rt.get("max")) else {
            return Err(ctx.err(&path, "needs both `min` and `max`"));
        };
        let min = ctx.number(&join(&path, "min"), min_v)?;
        let max = ctx.number(&join(&path, "max"), max_v)?;
        let log = match rt.get("log") {
            None => false,
            Some(Value::Boolean(b)) => *b,
            Some(v) => {
                return Err(ctx.err(
                    &join(&path, "log"),
                    format!("expected true or false, found {}", type_name(v)),
                ));
            }
        };
        if min > max {
            return Err(ctx.err(&path, format!("min {min} is greater than max {max}")));
        }
        if log && min <= 0.0 {
            return Err(ctx.err(
                &join(&path, "min"),
                format!("a log range needs min > 0, got {min}"),
            ));
        }
        let integer = (min_v.is_integer() && max_v.is_integer())
            || defaults.get(field).is_some_and(Value::is_integer);
        if integer && min.ceil() > max.floor() {
            return Err(ctx.err(
                &path,
                format!("integer range [{min}, {max}] holds no integer"),
            ));
        }
        ranges.push(Range {
            field: field.clone(),
            min,
            max,
            log,
            integer,
            path: path.clone(),
            at: ctx.pos.at(&path),
        });
    }
    ranges.sort_by_key(|r| r.at);
    Ok(RandomSearch {
        samples,
        seed,
        ranges,
    })
}

impl Range {
    /// Draws one value: uniform, or log-uniform, in [min, max]; integers rounded and kept
    /// inside the range; floats rounded to 6 significant digits, so that a value written to
    /// the summary reads back as the value that ran, and so that last-bit differences between
    /// platforms' `exp`/`ln` cannot change a run's id.
    pub fn sample(&self, rng: &mut SplitMix64) -> Value {
        let u = rng.next_f64();
        let x = if self.log {
            (self.min.ln() + u * (self.max.ln() - self.min.ln())).exp()
        } else {
            self.min + u * (self.max - self.min)
        };
        if self.integer {
            let v = x.round().clamp(self.min.ceil(), self.max.floor());
            Value::Integer(v as i64)
        } else {
            let v: f64 = format!("{x:.5e}").parse().unwrap_or(x);
            Value::Float(v.clamp(self.min, self.max))
        }
    }
}

fn variation_assignments(v: &Variation) -> Box<dyn Iterator<Item = &Assignment> + '_> {
    match v {
        Variation::Single | Variation::Random(_) => Box::new(std::iter::empty()),
        Variation::Grid(axes) => Box::new(axes.iter().flat_map(|a| a.values.iter())),
        Variation::Configs(vs) => Box::new(vs.iter().flat_map(|v| v.fields.iter())),
    }
}

/// The summary columns that tell configurations apart (the seed has its own column).
fn columns_of(v: &Variation) -> Vec<String> {
    let mut cols: Vec<String> = match v {
        Variation::Single => Vec::new(),
        Variation::Grid(axes) => axes.iter().map(|a| a.field.clone()).collect(),
        Variation::Configs(variants) => {
            let mut cols = vec![VARIANT_COLUMN.to_string()];
            let mut seen = BTreeSet::new();
            for v in variants {
                for a in &v.fields {
                    if seen.insert(a.field.clone()) {
                        cols.push(a.field.clone());
                    }
                }
            }
            cols
        }
        Variation::Random(r) => r.ranges.iter().map(|r| r.field.clone()).collect(),
    };
    cols.retain(|c| c != "seed");
    cols
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
