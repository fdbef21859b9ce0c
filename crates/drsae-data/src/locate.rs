//! Finding the data folder: a command-line flag, else an environment variable, else the repo default.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The environment variable that names the data folder when no flag is given.
pub const DATA_DIR_ENV: &str = "DRSAE_DATA_DIR";

/// The data folder relative to the repository root when neither flag nor variable is set.
pub const DEFAULT_DATA_SUBDIR: &str = "data/mnist";

/// The data folder: `flag` if given, else `$DRSAE_DATA_DIR` if set and non-empty, else
/// `<repo_root>/data/mnist`. Nothing is checked here; loading reports a missing folder.
pub fn resolve_data_dir(flag: Option<&Path>, repo_root: &Path) -> PathBuf {
    resolve_from(flag, std::env::var_os(DATA_DIR_ENV), repo_root)
}

/// [`resolve_data_dir`] with the environment value passed in, so it can be tested without
/// mutating the process environment (which is unsafe while other test threads run).
fn resolve_from(flag: Option<&Path>, env: Option<OsString>, repo_root: &Path) -> PathBuf {
    if let Some(flag) = flag {
        return flag.to_path_buf();
    }
    match env {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => repo_root.join(DEFAULT_DATA_SUBDIR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_over_env_and_default() {
        let got = resolve_from(Some(Path::new("/f")), Some("/e".into()), Path::new("/r"));
        assert_eq!(got, PathBuf::from("/f"));
    }

    #[test]
    fn env_wins_over_default() {
        let got = resolve_from(None, Some("/e".into()), Path::new("/r"));
        assert_eq!(got, PathBuf::from("/e"));
    }

    #[test]
    fn empty_or_unset_env_falls_back_to_repo_default() {
        for env in [None, Some(OsString::new())] {
            let got = resolve_from(None, env, Path::new("/r"));
            assert_eq!(got, PathBuf::from("/r/data/mnist"));
        }
    }
}
