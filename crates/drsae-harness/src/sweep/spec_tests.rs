//! Tests of spec parsing, validation messages and expansion.

use std::path::Path;

use toml::Value;

use super::*;

fn parse(text: &str) -> Result<Spec, SpecError> {
    Spec::parse(
        Path::new("experiments/t.toml"),
        text,
        &DataOverrides::default(),
    )
}

/// Asserts that `text` is rejected at `line` for `field`, with `words` in the message.
#[track_caller]
fn assert_rejected(text: &str, line: usize, field: &str, words: &str) {
    let e = parse(text).expect_err("spec accepted");
    let shown = e.to_string();
    assert_eq!((e.line, e.field.as_str()), (line, field), "{shown}");
    assert!(
        shown.starts_with(&format!("experiments/t.toml:{line}:")),
        "{shown}"
    );
    assert!(shown.contains(&format!("`{field}`")), "{shown}");
    assert!(shown.contains(words), "expected {words:?} in: {shown}");
}

#[test]
fn spec_rejects_unknown_config_field_naming_file_line_and_field() {
    assert_rejected(
        "[base]\nn_hidden = 16\nn_hiden = 17\n",
        3,
        "base.n_hiden",
        "unknown field `n_hiden`",
    );
    assert_rejected(
        "[sweep]\nseeds = [1]\n\n[grid]\nlambda = [0.1]\nlamda = [0.2, 0.3]\n",
        6,
        "grid.lamda",
        "unknown field `lamda`",
    );
    assert_rejected(
        "[[configs]]\nname = \"a\"\nn_steps = 2\n\n[[configs]]\nname = \"b\"\nsteps = 3\n",
        7,
        "configs[1].steps",
        "unknown field `steps`",
    );
}

#[test]
fn spec_rejects_unknown_sweep_keys_and_sections() {
    assert_rejected(
        "[sweep]\nthreads = 1\njob = 2\n",
        3,
        "sweep.job",
        "unknown key `job`",
    );
    assert_rejected(
        "[sweep.data_args]\nn_valid = 1\ndatadir = \"x\"\n",
        3,
        "sweep.data_args.datadir",
        "unknown key",
    );
    assert_rejected("[bases]\nn_hidden = 3\n", 1, "bases", "unknown key `bases`");
    assert_rejected(
        "[random]\nsamples = 2\nseed = 1\n[random.ranges]\nlambda = { min = 0.1, max = 1.0, lg = true }\n",
        5,
        "random.ranges.lambda.lg",
        "unknown key `lg`",
    );
}

#[test]
fn spec_rejects_wrong_types() {
    assert_rejected(
        "[base]\nlearning_rate = \"fast\"\n",
        2,
        "base.learning_rate",
        "invalid type",
    );
    assert_rejected(
        "[grid]\nn_hidden = [16, 3.5]\n",
        2,
        "grid.n_hidden",
        "invalid type",
    );
    assert_rejected(
        "[sweep]\nthreads = \"two\"\n",
        2,
        "sweep.threads",
        "expected an integer",
    );
    assert_rejected(
        "[sweep]\nseeds = 3\n",
        2,
        "sweep.seeds",
        "expected an array",
    );
    assert_rejected(
        "[grid]\nlambda = 0.1\n",
        2,
        "grid.lambda",
        "must be an array",
    );
}

#[test]
fn spec_rejects_empty_axis() {
    assert_rejected(
        "[grid]\nlambda = [0.1, 0.2]\nn_steps = []\n",
        3,
        "grid.n_steps",
        "axis is empty",
    );
    assert_rejected("[grid]\n", 1, "grid", "no axes");
}

#[test]
fn spec_rejects_invalid_values_found_by_config_validation() {
    assert_rejected(
        "[base]\nn_hidden = 16\nlearning_rate = -0.01\n",
        3,
        "base.learning_rate",
        "learning_rate",
    );
    // A bad value on its own line of a multi-line axis is reported on that line.
    assert_rejected(
        "[grid]\nlearning_rate = [\n  0.01,\n  -0.5,\n]\n",
        4,
        "grid.learning_rate",
        "must be a finite number > 0, got -0.5",
    );
    // A variant's value overrides [base], so the error points at the variant's line.
    let e = parse("[base]\nn_steps = 3\n[[configs]]\nname = \"zero\"\nn_steps = 0\n").unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (5, "configs[0].n_steps"));
    assert!(e.message.contains("variant zero"), "{e}");
}

#[test]
fn spec_rejects_seed_set_twice_and_mixed_variations() {
    assert_rejected(
        "[sweep]\nseeds = [1]\n[base]\nseed = 4\n",
        4,
        "base.seed",
        "set by [sweep].seeds",
    );
    assert_rejected(
        "[grid]\nlambda = [0.1]\n[[configs]]\nname = \"a\"\n",
        3,
        "configs",
        "at most one",
    );
    assert_rejected(
        "[sweep]\nseeds = [1, 1]\n",
        2,
        "sweep.seeds[1]",
        "listed twice",
    );
}

#[test]
fn toml_syntax_errors_are_located() {
    let e = parse("[sweep]\nthreads = 1\nseeds = [1,\n[base]\n").unwrap_err();
    assert!(e.line >= 3, "{e}");
    assert!(e.to_string().contains("not valid TOML"), "{e}");
}

const GRID: &str = "[sweep]\nseeds = [1, 2]\n[base]\nn_hidden = 16\n\
                    [grid]\nlambda = [0.03, 0.09, 0.27]\nn_steps = [2, 5, 11]\n";

#[test]
fn grid_expands_to_the_cartesian_product_times_seeds() {
    let spec = parse(GRID).unwrap();
    assert_eq!(spec.columns, ["lambda", "n_steps"]);
    assert_eq!(spec.runs.len(), 3 * 3 * 2);
    // Seeds outermost, then the first axis slowest.
    let first: Vec<String> = spec.runs[..3]
        .iter()
        .map(|r| r.describe(&spec.columns))
        .collect();
    assert_eq!(
        first,
        [
            "lambda=0.03 n_steps=2 seed=1",
            "lambda=0.03 n_steps=5 seed=1",
            "lambda=0.03 n_steps=11 seed=1"
        ]
    );
    assert_eq!(spec.runs[9].seed, 2);
    let ids: std::collections::HashSet<&str> = spec.runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), spec.runs.len(), "ids are unique");
    assert!(
        spec.runs
            .iter()
            .all(|r| r.id.len() == 16 && r.id.bytes().all(|b| b.is_ascii_hexdigit()))
    );
    // The resolved config holds the run's values.
    let cfg: toml::Table = toml::from_str(&spec.runs[0].config_toml).unwrap();
    assert_eq!(cfg["lambda"], Value::Float(0.03));
    assert_eq!(cfg["n_hidden"], Value::Integer(16));
    assert_eq!(cfg["seed"], Value::Integer(1));
}

#[test]
fn run_ids_are_stable_and_change_with_the_configuration() {
    let a = parse(GRID).unwrap();
    let b = parse(GRID).unwrap();
    let ids = |s: &Spec| s.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
    // Reordering sections and spelling a value differently changes nothing.
    let reordered = "[grid]\nlambda = [3e-2, 0.09, 0.27]\nn_steps = [2, 5, 11]\n[base]\nn_hidden = 16\n\
                     [sweep]\nseeds = [1, 2]\n";
    assert_eq!(ids(&a), ids(&parse(reordered).unwrap()));
    // Changing a field changes every id.
    let changed = parse(&GRID.replace("n_hidden = 16", "n_hidden = 17")).unwrap();
    assert!(ids(&a).iter().zip(ids(&changed)).all(|(x, y)| *x != y));
    // A field set to its default is the same configuration as leaving it out.
    let explicit = parse(&GRID.replace("n_hidden = 16", "n_hidden = 16\nw_rec = 5.0")).unwrap();
    assert_eq!(ids(&a), ids(&explicit));
    // n_valid changes what is computed; the data folder does not.
    let n_valid = parse(&GRID.replace(
        "seeds = [1, 2]",
        "seeds = [1, 2]\ndata_args = { n_valid = 200 }",
    ))
    .unwrap();
    assert_ne!(ids(&a), ids(&n_valid));
    let dir = parse(&GRID.replace(
        "seeds = [1, 2]",
        "seeds = [1, 2]\ndata_args = { data_dir = \"/x\" }",
    ))
    .unwrap();
    assert_eq!(ids(&a), ids(&dir));
    assert_eq!(dir.data.data_dir.as_deref(), Some(Path::new("/x")));
}

#[test]
fn configs_variants_become_columns() {
    let spec = parse(
        "[sweep]\nseeds = [1]\n[base]\nn_hidden = 16\n\
         [[configs]]\nname = \"a\"\nn_steps = 2\n[[configs]]\nname = \"b\"\nlambda = 0.2\n",
    )
    .unwrap();
    assert_eq!(spec.columns, ["variant", "n_steps", "lambda"]);
    // Fields a variant leaves alone show their resolved (default) value.
    assert_eq!(spec.runs[0].values, ["a", "2", "0.09"]);
    assert_eq!(spec.runs[1].values, ["b", "11", "0.2"]);
}

#[test]
fn identical_runs_are_rejected() {
    let e =
        parse("[[configs]]\nname = \"a\"\nn_steps = 11\n[[configs]]\nname = \"b\"\n").unwrap_err();
    assert!(e.message.contains("same configuration"), "{e}");
}

const RANDOM: &str = "[sweep]\nseeds = [1]\n[random]\nsamples = 400\nseed = 7\n\
                      [random.ranges]\nlearning_rate = { min = 1e-4, max = 1e-1, log = true }\n\
                      n_hidden = { min = 10, max = 20 }\nlambda = { min = 0.0, max = 0.5 }\n";

#[test]
fn random_search_is_reproducible_for_its_seed_and_respects_log_ranges() {
    let a = parse(RANDOM).unwrap();
    let b = parse(RANDOM).unwrap();
    assert_eq!(a.runs, b.runs, "same seed, same runs");
    let other = parse(&RANDOM.replace("seed = 7", "seed = 8")).unwrap();
    assert_ne!(a.runs[0].id, other.runs[0].id);
    assert_eq!(a.columns, ["learning_rate", "n_hidden", "lambda"]);

    let col = |name: &str| a.columns.iter().position(|c| c == name).unwrap();
    let lrs: Vec<f64> = a
        .runs
        .iter()
        .map(|r| r.values[col("learning_rate")].parse().unwrap())
        .collect();
    assert!(lrs.iter().all(|&x| (1e-4..=1e-1).contains(&x)));
    // Log-uniform: each decade gets about a third of the draws; uniform would put ~90 % of
    // them in the top decade.
    for (lo, hi) in [(1e-4, 1e-3), (1e-3, 1e-2), (1e-2, 1e-1)] {
        let share = lrs.iter().filter(|&&x| x >= lo && x < hi).count() as f64 / lrs.len() as f64;
        assert!(
            (share - 1.0 / 3.0).abs() < 0.08,
            "decade [{lo}, {hi}) got {share}"
        );
    }
    // Integer fields are rounded integers within the range, reaching both ends.
    let ns: Vec<i64> = a
        .runs
        .iter()
        .map(|r| r.values[col("n_hidden")].parse().unwrap())
        .collect();
    assert!(ns.iter().all(|n| (10..=20).contains(n)));
    assert!(ns.contains(&10) && ns.contains(&20));
    let lambdas: Vec<f64> = a
        .runs
        .iter()
        .map(|r| r.values[col("lambda")].parse().unwrap())
        .collect();
    assert!(lambdas.iter().all(|&x| (0.0..=0.5).contains(&x)));
    let mean = lambdas.iter().sum::<f64>() / lambdas.len() as f64;
    assert!((mean - 0.25).abs() < 0.03, "uniform mean {mean}");
}

#[test]
fn random_ranges_are_checked() {
    let bad_log = RANDOM.replace("min = 1e-4", "min = 0.0");
    let e = parse(&bad_log).unwrap_err();
    assert!(e.message.contains("log range needs min > 0"), "{e}");
    assert_eq!(e.line, 7);
    let swapped = RANDOM.replace("min = 10, max = 20", "min = 20, max = 10");
    assert!(
        parse(&swapped)
            .unwrap_err()
            .message
            .contains("greater than max")
    );
    // A sampled value the model rejects is caught like any other invalid value.
    let negative = RANDOM.replace("min = 0.0, max = 0.5", "min = -1.0, max = -0.5");
    let e = parse(&negative).unwrap_err();
    assert_eq!(e.field, "random.ranges.lambda");
    assert!(e.message.contains("must be a finite number ≥ 0"), "{e}");
}

#[test]
fn shipped_specs_parse_and_expand() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let count = |name: &str| {
        Spec::load(&dir.join(name), &DataOverrides::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .runs
            .len()
    };
    assert_eq!(count("quick.toml"), 1);
    assert_eq!(count("paper.toml"), 18);
    assert_eq!(count("paper-ablations.toml"), 15);
    assert_eq!(count("lambda_t.toml"), 18);
    assert_eq!(count("tiny.toml"), 2);
    let tiny = Spec::load(&dir.join("tiny.toml"), &DataOverrides::default()).unwrap();
    assert!(
        tiny.data
            .data_dir
            .unwrap()
            .ends_with("crates/drsae-data/tests/fixtures/mnist-mini")
    );
    assert_eq!(tiny.data.n_valid, Some(200));
}
