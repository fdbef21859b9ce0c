//! Small file helpers: atomic writes (ARCHITECTURE.md: results are written to a temporary file
//! in the same folder, then renamed) and the sweep's folder layout.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never a
/// mixture, even if this process dies mid-write. The temporary file lives in the same folder
/// because rename is atomic only within one file system.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        // Data must be on disk before the rename publishes it, or a crash could leave the
        // new name pointing at an empty file.
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Persist the rename itself; not every file system supports syncing a folder, and the
        // data is already safe, so a failure here is not an error.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Where one spec's results live: `<results-dir>/<stem>/`.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<results-dir>/<stem>`.
    pub root: PathBuf,
}

impl Layout {
    /// The layout for a spec stem under a results folder.
    pub fn new(results_dir: &Path, stem: &str) -> Layout {
        Layout {
            root: results_dir.join(stem),
        }
    }

    /// The layout a run folder `<root>/runs/<id>` belongs to.
    pub fn of_run_dir(run_dir: &Path) -> Option<Layout> {
        let runs = run_dir.parent()?;
        if runs.file_name()? != "runs" {
            return None;
        }
        Some(Layout {
            root: runs.parent()?.to_path_buf(),
        })
    }

    /// `runs/<id>/`: one run's folder.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.root.join("runs").join(id)
    }

    /// `summary.csv`: one row per finished run.
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.csv")
    }

    /// `.lock`: held by the one sweep process working on this spec.
    pub fn sweep_lock(&self) -> PathBuf {
        self.root.join(".lock")
    }

    /// `.summary.lock`: held for the milliseconds of one summary update.
    pub fn summary_lock(&self) -> PathBuf {
        self.root.join(".summary.lock")
    }

    /// `commands.txt`: one shell command per run, for batch systems.
    pub fn commands(&self) -> PathBuf {
        self.root.join("commands.txt")
    }

    /// `sweep.slurm`: a Slurm job-array script over `commands.txt`.
    pub fn slurm(&self) -> PathBuf {
        self.root.join("sweep.slurm")
    }

    /// `report.md`.
    pub fn report(&self) -> PathBuf {
        self.root.join("report.md")
    }
}

/// Makes a path absolute against the current directory without touching the file system
/// (unlike `canonicalize`, it works for paths that do not exist yet).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
