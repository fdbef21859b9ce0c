//! `cargo xtask`: orchestration only; heavy work runs in release builds of `drsae`.
fn main() {}
