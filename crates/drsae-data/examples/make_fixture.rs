//! Cuts the committed test fixture out of full MNIST: `make_fixture <src dir> <out dir> [n_train n_test]`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (src, out) = match &args[..] {
        [src, out, ..] => (PathBuf::from(src), PathBuf::from(out)),
        _ => {
            eprintln!(
                "usage: make_fixture <src dir> <out dir> [n_train n_test]  (default 1000 500)"
            );
            return ExitCode::FAILURE;
        }
    };
    let parse =
        |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (n_train, n_test) = (parse(2, 1000), parse(3, 500));
    match drsae_data::make_fixture(&src, &out, n_train, n_test) {
        Ok(()) => {
            println!(
                "wrote {n_train} training and {n_test} test examples to {}",
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
