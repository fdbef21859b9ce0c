//! ISA selection: `DRSAE_ISA` forces a path (or fails clearly), `DRSAE_REQUIRE_ISA` guards CI.
//!
//! The environment is read once per process, so these tests re-run this test binary as a child
//! process with the variable set and look at what the child reports.

use drsae_kernels::{Isa, Kernels, check_required_isa, kernels};
use std::process::Command;

/// Not a test on its own: prints the process-wide kernels for the parent tests below.
#[test]
#[ignore = "helper run as a child process by the tests below"]
fn child_prints_selected_kernels() {
    let k = kernels();
    println!("SELECTED {} {}", k.isa(), k.name());
}

/// Runs [`child_prints_selected_kernels`] with `DRSAE_ISA=value`; returns (success, output).
fn child_with_isa(value: &str) -> (bool, String) {
    let out = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "--exact",
            "child_prints_selected_kernels",
            "--ignored",
            "--nocapture",
        ])
        .env("DRSAE_ISA", value)
        .env_remove("DRSAE_REQUIRE_ISA")
        .output()
        .expect("run the test binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn forcing_each_available_isa_selects_exactly_that_isa() {
    for k in Kernels::available() {
        let (ok, text) = child_with_isa(k.isa().as_str());
        assert!(ok, "DRSAE_ISA={} failed:\n{text}", k.isa());
        assert!(
            text.contains(&format!("SELECTED {} {}", k.isa(), k.name())),
            "DRSAE_ISA={} selected something else:\n{text}",
            k.isa()
        );
    }
}

#[test]
fn forcing_an_unknown_or_unavailable_isa_is_a_clear_error() {
    let (ok, text) = child_with_isa("sse9");
    assert!(!ok, "an unknown ISA must not silently fall back:\n{text}");
    assert!(text.contains("unknown ISA"), "{text}");
    for isa in Isa::ALL {
        if Kernels::new(isa).is_none() {
            let (ok, text) = child_with_isa(isa.as_str());
            assert!(!ok, "forcing unavailable {isa} must fail:\n{text}");
            assert!(text.contains("does not support"), "{text}");
        }
    }
}

#[test]
fn required_isa_is_in_use() {
    // With DRSAE_REQUIRE_ISA=avx512 (CI on an AVX-512 runner) this fails unless the
    // process-wide kernels really are the AVX-512 ones.
    if let Err(e) = check_required_isa() {
        panic!("{e}");
    }
}

#[test]
fn every_isa_this_cpu_reports_is_constructible_and_named() {
    let avail = Kernels::available();
    assert!(avail.iter().any(|k| k.isa() == Isa::Portable));
    for k in &avail {
        assert_eq!(Kernels::new(k.isa()).map(|x| x.isa()), Some(k.isa()));
        assert!(k.name().contains('x'), "{}", k.name());
        assert_eq!(k.isa().as_str().parse::<Isa>().unwrap(), k.isa());
    }
    assert!("sse9".parse::<Isa>().is_err());
    assert_eq!(Kernels::best().isa(), avail.last().unwrap().isa());
}
