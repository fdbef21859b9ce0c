#!/usr/bin/env bash
# Runs experiments/tiny.toml through `drsae sweep --emit list` and GNU parallel, and checks that
# the summary equals that of a local `drsae sweep` of the same spec. Installs GNU parallel with
# apt if it is missing (CI runs as root). Exits non-zero on any failure.
# .ci/slurm_test.sh sources this file for the helpers below; run directly, it runs the test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SPEC="$ROOT/experiments/tiny.toml"
FIXTURE="$ROOT/crates/drsae-data/tests/fixtures/mnist-mini"
# The fixture flags, also in tiny.toml's data_args; repeated so the test does not depend on it.
DATA_FLAGS=(--data-dir "$FIXTURE" --allow-modified-data)
# The summaries are compared, so both sides record the same revision without needing git.
export DRSAE_GIT_REV=ci-sweep-test

# $DRSAE may name a prebuilt binary; otherwise build one in the dev profile, which CI's
# `cargo test` has mostly built already (a release build would cost minutes of CI time) and in
# which the numeric crates are optimised anyway (see [profile.dev.package] in Cargo.toml).
build_drsae() {
    if [ -z "${DRSAE:-}" ]; then
        (cd "$ROOT" && cargo build -p drsae-harness --bin drsae)
        DRSAE="${CARGO_TARGET_DIR:-$ROOT/target}/debug/drsae"
        case "$DRSAE" in /*) ;; *) DRSAE="$ROOT/$DRSAE" ;; esac
    fi
    echo "using $DRSAE"
}

# The columns that must agree between two sweeps of the same spec, one line per run, sorted.
# Every column but `message` is free of commas, so fields are taken from both ends of the line
# around it (mawk has no CSV mode; a quoted message may contain commas).
summary_numbers() {
    awk -F, '
        NR == 1 { H = NF; for (i = 1; i <= NF; i++) col[$i] = i; m = col["message"]; next }
        function f(name,   j) { j = col[name]; return (j < m) ? $j : $(NF - (H - j)) }
        { print f("run_id"), f("seed"), f("status"), f("best_valid_error"), f("best_epoch"),
                f("test_error_at_best"), f("epochs_run"), f("kernel") }
    ' "$1" | sort
}

# Fails unless summary $1 (the batch one) has $2 runs, all finished, with the numbers of $3.
compare_summaries() {
    local batch="$1" expected_runs="$2" local_summary="$3"
    [ -f "$batch" ] || { echo "FAIL: $batch was not written"; return 1; }
    local rows
    rows=$(($(wc -l < "$batch") - 1))
    if [ "$rows" -ne "$expected_runs" ]; then
        echo "FAIL: $batch has $rows rows, expected $expected_runs:"; cat "$batch"; return 1
    fi
    if summary_numbers "$batch" | awk '$3 != "finished" { bad = 1 } END { exit !bad }'; then
        echo "FAIL: not every run finished:"; cat "$batch"; return 1
    fi
    if ! diff <(summary_numbers "$local_summary") <(summary_numbers "$batch"); then
        echo "FAIL: the batch summary differs from the local sweep's (< local, > batch)"; return 1
    fi
    echo "summaries agree ($expected_runs runs):"
    summary_numbers "$batch"
}

parallel_test_main() {
    if ! command -v parallel > /dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq parallel > /dev/null
    fi
    build_drsae

    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT

    "$DRSAE" sweep "$SPEC" "${DATA_FLAGS[@]}" --results-dir "$WORK/local"
    "$DRSAE" sweep "$SPEC" "${DATA_FLAGS[@]}" --results-dir "$WORK/batch" --emit list
    local commands="$WORK/batch/tiny/commands.txt"
    echo "commands.txt:"; cat "$commands"
    # Two jobs at once, so that the two sweep-record calls really contend for the summary lock.
    parallel --will-cite --jobs 2 --halt now,fail=1 < "$commands"
    # Running the list again (a batch system's retry) must not add rows.
    parallel --will-cite --jobs 2 --halt now,fail=1 < "$commands"

    compare_summaries "$WORK/batch/tiny/summary.csv" 2 "$WORK/local/tiny/summary.csv"
    echo "parallel_test: OK"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    parallel_test_main
fi
