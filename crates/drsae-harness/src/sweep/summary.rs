//! `summary.csv`: one row per run that reached a terminal status, appended atomically under a
//! lock, and repaired when its last line was torn.
//!
//! Appending a row rewrites the whole file (to a temporary file, fsync, rename) while holding
//! `.summary.lock`. An `O_APPEND` write of one line would be cheaper, but it is atomic only
//! against other writers, not against a crash or a full disk, which can leave half a line; a
//! rename is all-or-nothing. The file has one row per run (at most thousands of short lines),
//! so rewriting it costs microseconds next to the minutes a run takes. The lock serialises
//! writers: a local sweep's runner and the `drsae sweep-record` calls of batch jobs.
//! Files written by other means (an editor, a copy cut short, a file system without atomic
//! rename) can still end in a torn line; it is dropped, with a warning, before the next append.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::SweepError;
use super::files::{Layout, atomic_write};
use super::lock::LockFile;
use super::outcome::{Record, Status};
use super::spec::{Run, display_float};

/// The columns after the run id, the swept fields and the seed.
pub const RESULT_COLUMNS: [&str; 12] = [
    "status",
    "message",
    "best_valid_error",
    "best_epoch",
    "test_error_at_best",
    "epochs_run",
    "wall_s",
    "wall_s_at_best",
    "examples_per_s",
    "git_rev",
    "kernel",
    "threads",
];

/// How long a summary update waits for another writer (each holds the lock for milliseconds).
const SUMMARY_LOCK_WAIT: Duration = Duration::from_secs(120);

/// The header of a spec's summary: `run_id`, the swept columns, `seed`, the result columns.
pub fn header(columns: &[String]) -> Vec<String> {
    let mut h = vec!["run_id".to_string()];
    h.extend(columns.iter().cloned());
    h.push("seed".to_string());
    h.extend(RESULT_COLUMNS.iter().map(|s| s.to_string()));
    h
}

/// A summary row for a run and its record.
pub fn row(run: &Run, rec: &Record, git_rev: &str) -> Vec<String> {
    let f = |x: Option<f64>| x.map(display_float).unwrap_or_default();
    let u = |x: Option<u64>| x.map(|v| v.to_string()).unwrap_or_default();
    let mut r = vec![run.id.clone()];
    r.extend(run.values.iter().cloned());
    r.push(run.seed.to_string());
    r.extend([
        rec.status.as_str().to_string(),
        rec.message.clone(),
        f(rec.best_valid_error),
        u(rec.best_epoch),
        f(rec.test_error_at_best),
        u(rec.epochs_run),
        f(rec.wall_s),
        f(rec.wall_s_at_best),
        f(rec.examples_per_s),
        git_rev.to_string(),
        rec.kernel.clone(),
        rec.threads.map(|t| t.to_string()).unwrap_or_default(),
    ]);
    r
}

/// The last line of a summary, dropped because it was incomplete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornLine {
    /// Its 1-based line number.
    pub line: u64,
    /// Its text.
    pub text: String,
}

impl TornLine {
    /// The warning printed when the line is dropped.
    pub fn warning(&self, path: &Path) -> String {
        format!(
            "warning: {}: dropped torn last line {} ({:?}): it was incomplete, probably cut by \
             a crash or a full disk; that run will be recorded again when it is rerun",
            path.display(),
            self.line,
            self.text
        )
    }
}

/// A parsed summary.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The data rows, in file order (the header excluded).
    pub rows: Vec<Vec<String>>,
    /// The torn last line, if there was one (not in `rows`).
    pub torn: Option<TornLine>,
    /// Bytes of the file that are kept (everything before the torn line).
    keep: usize,
}

impl Summary {
    /// The last row of each run id (a run retried with `--retry-failed` has several).
    pub fn latest(&self) -> HashMap<&str, &Vec<String>> {
        let mut m = HashMap::new();
        for r in &self.rows {
            m.insert(r[0].as_str(), r);
        }
        m
    }

    /// The terminal status recorded last for each run id.
    pub fn statuses(&self, header: &[String]) -> HashMap<String, Status> {
        let col = header.iter().position(|h| h == "status").unwrap_or(0);
        self.latest()
            .into_iter()
            .filter_map(|(id, r)| Status::parse(&r[col]).map(|s| (id.to_string(), s)))
            .collect()
    }
}

/// Parses summary bytes against the expected header.
pub fn parse(path: &Path, bytes: &[u8], header: &[String]) -> Result<Summary, SweepError> {
    let mut summary = Summary::default();
    if bytes.is_empty() {
        return Ok(summary);
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut records: Vec<(u64, usize, Result<csv::StringRecord, String>)> = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let start = reader.position().clone();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let pos = record.position().cloned().unwrap_or(start);
                records.push((pos.line(), pos.byte() as usize, Ok(record.clone())));
            }
            Err(e) => {
                // An unreadable record (e.g. invalid UTF-8 cut mid-character) is torn if it is
                // the last one; keep reading to find out.
                let pos = e.position().cloned().unwrap_or(start);
                records.push((pos.line(), pos.byte() as usize, Err(e.to_string())));
            }
        }
    }
    let ends_with_newline = bytes.ends_with(b"\n");
    let n = records.len();
    summary.keep = bytes.len();
    for (i, (line, byte, rec)) in records.into_iter().enumerate() {
        let last = i + 1 == n;
        // The header is checked for equality below, so a complete header line with the wrong
        // columns is a foreign file, not a torn one.
        let complete = match &rec {
            Ok(r) => (i == 0 || r.len() == header.len()) && (!last || ends_with_newline),
            Err(_) => false,
        };
        if !complete {
            if last {
                let text = String::from_utf8_lossy(&bytes[byte.min(bytes.len())..])
                    .trim_end()
                    .to_string();
                summary.torn = Some(TornLine { line, text });
                summary.keep = byte;
                break;
            }
            let detail = match rec {
                Ok(r) => format!("has {} fields, expected {}", r.len(), header.len()),
                Err(e) => e,
            };
            return Err(SweepError::Summary {
                path: path.to_path_buf(),
                message: format!(
                    "line {line} {detail}; the file is damaged in the middle, which an \
                     interrupted write cannot cause: fix or move it by hand"
                ),
            });
        }
        let Ok(rec) = rec else {
            unreachable!("complete records parsed")
        };
        let fields: Vec<String> = rec.iter().map(str::to_string).collect();
        if i == 0 {
            if fields != header {
                return Err(SweepError::Summary {
                    path: path.to_path_buf(),
                    message: format!(
                        "its columns ({}) are not this spec's ({}): the spec's axes changed \
                         since it was written; move the file away or use another --results-dir",
                        fields.join(","),
                        header.join(",")
                    ),
                });
            }
        } else {
            summary.rows.push(fields);
        }
    }
    Ok(summary)
}

/// Reads a summary without changing it (a missing file is an empty summary).
pub fn read(path: &Path, header: &[String]) -> Result<Summary, SweepError> {
    match std::fs::read(path) {
        Ok(bytes) => parse(path, &bytes, header),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Summary::default()),
        Err(e) => Err(SweepError::io(path, e)),
    }
}

/// The summary of a results layout, with its lock.
#[derive(Debug, Clone)]
pub struct SummaryFile {
    /// `summary.csv`.
    pub path: PathBuf,
    /// `.summary.lock`.
    pub lock: PathBuf,
    /// The header this spec expects.
    pub header: Vec<String>,
}

impl SummaryFile {
    /// The summary of `layout` for a spec with these swept columns.
    pub fn new(layout: &Layout, columns: &[String]) -> SummaryFile {
        SummaryFile {
            path: layout.summary(),
            lock: layout.summary_lock(),
            header: header(columns),
        }
    }

    fn locked(&self) -> Result<LockFile, SweepError> {
        match LockFile::acquire_wait(&self.lock, SUMMARY_LOCK_WAIT) {
            Ok(Ok(l)) => Ok(l),
            Ok(Err(h)) => Err(SweepError::Locked {
                path: self.lock.clone(),
                pid: h.pid,
                host: h.host,
                what: "updating the summary",
            }),
            Err(e) => Err(SweepError::io(&self.lock, e)),
        }
    }

    /// Reads the summary, dropping a torn last line (on disk too) with a warning on stderr.
    pub fn load_repaired(&self) -> Result<Summary, SweepError> {
        let _lock = self.locked()?;
        let summary = read(&self.path, &self.header)?;
        if let Some(torn) = &summary.torn {
            let bytes = std::fs::read(&self.path).map_err(|e| SweepError::io(&self.path, e))?;
            atomic_write(&self.path, &bytes[..summary.keep])
                .map_err(|e| SweepError::io(&self.path, e))?;
            eprintln!("{}", torn.warning(&self.path));
        }
        Ok(summary)
    }

    /// Appends a row, unless `skip_if_recorded` and the run's latest row is finished or
    /// diverged (a failed run may be retried, and its new row then supersedes the old one).
    /// Returns false when it skipped. A torn last line is dropped first, with a warning.
    pub fn append(&self, row: &[String], skip_if_recorded: bool) -> Result<bool, SweepError> {
        let _lock = self.locked()?;
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(SweepError::io(&self.path, e)),
        };
        let summary = parse(&self.path, &bytes, &self.header)?;
        let recorded = summary.statuses(&self.header).get(&row[0]).copied();
        if skip_if_recorded && matches!(recorded, Some(Status::Finished | Status::Diverged)) {
            return Ok(false);
        }
        if let Some(torn) = &summary.torn {
            eprintln!("{}", torn.warning(&self.path));
        }
        let mut out = bytes[..summary.keep].to_vec();
        let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
        if out.is_empty() {
            w.write_record(&self.header)
                .map_err(|e| SweepError::csv(&self.path, e))?;
        }
        w.write_record(row)
            .map_err(|e| SweepError::csv(&self.path, e))?;
        let new = w
            .into_inner()
            .map_err(|e| SweepError::io(&self.path, e.into_error()))?;
        out.extend_from_slice(&new);
        atomic_write(&self.path, &out).map_err(|e| SweepError::io(&self.path, e))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<String> {
        vec!["lambda".to_string()]
    }

    fn sample_row(id: &str) -> Vec<String> {
        let mut r = vec![
            id.to_string(),
            "0.09".into(),
            "1".into(),
            "finished".into(),
            "ok, fine".into(),
        ];
        r.extend(
            [
                "0.02", "4", "0.03", "6", "1.5", "1.2", "100.0", "abc1234", "avx2", "1",
            ]
            .map(String::from),
        );
        r
    }

    #[test]
    fn torn_last_line_is_dropped_with_a_warning_and_the_row_appended() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), "s");
        std::fs::create_dir_all(&layout.root).unwrap();
        let file = SummaryFile::new(&layout, &cols());
        assert!(file.append(&sample_row("aaaa"), true).unwrap());
        // Simulate a write cut short: half a row without its newline.
        let mut bytes = std::fs::read(&file.path).unwrap();
        bytes.extend_from_slice(b"bbbb,0.27,1,fini");
        std::fs::write(&file.path, &bytes).unwrap();

        let s = read(&file.path, &file.header).unwrap();
        let torn = s.torn.clone().expect("torn line detected");
        assert_eq!(torn.line, 3);
        assert_eq!(torn.text, "bbbb,0.27,1,fini");
        assert!(
            torn.warning(&file.path)
                .contains("dropped torn last line 3")
        );
        assert_eq!(s.rows.len(), 1);

        assert!(file.append(&sample_row("cccc"), true).unwrap());
        let s = read(&file.path, &file.header).unwrap();
        assert!(s.torn.is_none());
        let ids: Vec<&str> = s.rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(ids, ["aaaa", "cccc"]);
        // A run that already has a terminal row is not recorded twice.
        assert!(!file.append(&sample_row("aaaa"), true).unwrap());
    }

    #[test]
    fn complete_last_line_with_wrong_field_count_is_torn_too() {
        let h = header(&cols());
        let mut text = h.join(",") + "\n";
        text.push_str(&(sample_row("aaaa").join(",").replace("ok, fine", "ok") + "\n"));
        text.push_str("bbbb,0.27\n");
        let s = parse(Path::new("summary.csv"), text.as_bytes(), &h).unwrap();
        assert_eq!(s.rows.len(), 1);
        assert_eq!(s.torn.unwrap().text, "bbbb,0.27");
    }

    #[test]
    fn damage_before_the_last_line_and_foreign_headers_are_errors() {
        let h = header(&cols());
        let text = format!(
            "{}\nbbbb,0.27\n{}\n",
            h.join(","),
            sample_row("a").join(",").replace("ok, fine", "ok")
        );
        let e = parse(Path::new("summary.csv"), text.as_bytes(), &h).unwrap_err();
        assert!(e.to_string().contains("line 2 has 2 fields"), "{e}");
        let e = parse(Path::new("summary.csv"), b"run_id,other\n", &h).unwrap_err();
        assert!(e.to_string().contains("axes changed"), "{e}");
    }
}
