//! Lock files: `create_new` with the holder's pid and host inside, so that a crashed holder's
//! lock can be recognised as stale (its pid no longer runs on this host) and taken over.
//!
//! `flock` would be released by the kernel on crash, but it is unreliable on NFS, where
//! cluster results folders often live; a file created with `O_EXCL` works there, and its
//! content tells a person who holds it.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// A held lock; dropping it removes the file.
#[derive(Debug)]
pub struct LockFile {
    path: PathBuf,
}

/// Who holds a lock, as written in the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's process id (0 if the file could not be read).
    pub pid: u32,
    /// The holder's host name.
    pub host: String,
}

/// A lock file whose content never became readable is stale after this long: writing a
/// dozen bytes takes microseconds, so only a holder that died mid-creation leaves one.
const UNREADABLE_STALE_AFTER: Duration = Duration::from_secs(10);

impl LockFile {
    /// Takes the lock if it is free or stale; otherwise returns who holds it.
    pub fn try_acquire(path: &Path) -> io::Result<Result<LockFile, Holder>> {
        // A few rounds: each failed `create_new` either finds a live holder (done) or removes
        // a stale/vanished lock, after which creating can be tried again.
        for _ in 0..8 {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut f) => {
                    let content = format!("pid={}\nhost={}\n", std::process::id(), hostname());
                    f.write_all(content.as_bytes())?;
                    f.sync_all()?;
                    return Ok(Ok(LockFile {
                        path: path.to_path_buf(),
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read_holder(path) {
                    // Removed between our create and our read: try again.
                    None => continue,
                    Some(h) if is_stale(path, &h) => take_over_stale(path, &h)?,
                    Some(h) => return Ok(Err(h)),
                },
                Err(e) => return Err(e),
            }
        }
        Ok(Err(read_holder(path).unwrap_or(Holder {
            pid: 0,
            host: String::new(),
        })))
    }

    /// Takes the lock, waiting up to `timeout` for a live holder to release it.
    pub fn acquire_wait(path: &Path, timeout: Duration) -> io::Result<Result<LockFile, Holder>> {
        let start = Instant::now();
        loop {
            match LockFile::try_acquire(path)? {
                Ok(l) => return Ok(Ok(l)),
                Err(h) if start.elapsed() >= timeout => return Ok(Err(h)),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Reads the holder; `None` if the file has vanished.
fn read_holder(path: &Path) -> Option<Holder> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(_) => String::new(),
    };
    let mut holder = Holder {
        pid: 0,
        host: String::new(),
    };
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("pid=") {
            holder.pid = p.trim().parse().unwrap_or(0);
        } else if let Some(h) = line.strip_prefix("host=") {
            holder.host = h.trim().to_string();
        }
    }
    Some(holder)
}

fn is_stale(path: &Path, h: &Holder) -> bool {
    if h.pid == 0 {
        // Unreadable content: stale only once it is clearly not a lock being written now.
        let age = fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        return age.is_some_and(|a| a > UNREADABLE_STALE_AFTER);
    }
    // A pid on another host cannot be checked from here; such a lock stays until removed.
    h.host == hostname() && !pid_alive(h.pid)
}

/// Removes a stale lock without ever removing a fresh one: the file is first renamed to a
/// name only we use, then checked again. If a new holder's lock was renamed by mistake (it
/// replaced the stale one between our read and our rename), it is put back with `hard_link`,
/// which, unlike rename, refuses to overwrite a lock created in the meantime.
fn take_over_stale(path: &Path, stale: &Holder) -> io::Result<()> {
    let aside = path.with_extension(format!("stale.{}", std::process::id()));
    match fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    if read_holder(&aside).as_ref() != Some(stale) {
        let _ = fs::hard_link(&aside, path);
    } else {
        eprintln!(
            "warning: removed stale lock {} (pid {} on {} is no longer running)",
            path.display(),
            stale.pid,
            stale.host
        );
    }
    let _ = fs::remove_file(&aside);
    Ok(())
}

/// Whether a process runs on this host: `/proc/<pid>` exists and is not a zombie. Without a
/// `/proc` (not Linux) every pid counts as alive, so a lock is never taken away wrongly.
pub fn pid_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !stat[i + 1..].trim_start().starts_with('Z'),
            None => true,
        },
        Err(_) => false,
    }
}

/// This machine's host name, from the kernel (no libc call needed on Linux).
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_reports_the_live_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".lock");
        let held = LockFile::try_acquire(&p).unwrap().unwrap();
        let holder = LockFile::try_acquire(&p).unwrap().unwrap_err();
        assert_eq!(holder.pid, std::process::id());
        drop(held);
        assert!(!p.exists());
        assert!(LockFile::try_acquire(&p).unwrap().is_ok());
    }

    #[test]
    fn lock_of_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".lock");
        // A pid that has certainly exited: a child we started and reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        fs::write(&p, format!("pid={dead}\nhost={}\n", hostname())).unwrap();
        let lock = LockFile::try_acquire(&p)
            .unwrap()
            .expect("stale lock taken over");
        let text = fs::read_to_string(lock.path()).unwrap();
        assert!(text.contains(&format!("pid={}", std::process::id())));
    }
}
