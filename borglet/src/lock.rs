//! The Borglet's exclusive hold on its machine: one Borglet per machine id and per work dir.
//!
//! A second Borglet started by mistake for the same machine (same `--machine-id`, or the same
//! `--work-dir`) would otherwise see the first one's task cgroups as orphans and kill them. Each
//! Borglet takes two `flock(2)` locks before it touches anything and keeps them for its life:
//! - `<work-dir>/borglet.lock`: the work dir (sandboxes and the state file);
//! - `<lock dir>/borglet-<machine id>.lock`: the machine's cgroup tree (`borg-<machine id>`),
//!   shared by every work dir. The lock dir is `/run/lock/borg` when it can be made, else
//!   `$TMPDIR/borg-locks`.
//!
//! They are POSIX record locks (`fcntl(F_SETLK)`), which belong to the process: the kernel
//! releases them the moment the Borglet dies (kill -9 included), so a crashed Borglet never
//! leaves a stale lock behind, and unlike `flock(2)` a task process forked by the Borglet never
//! holds them (a Borglet killed while forking a task would otherwise keep its successor out). A
//! refusal names the holder's pid (from `F_GETLK`). Two opens in one process do not conflict:
//! the locks keep Borglet *processes* apart.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
/// Why the machine could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds the lock.
    #[error(
        "another Borglet (pid {holder}) already runs {what}: it holds {path}; stop it first (a second Borglet would \
         fight it over the machine's tasks), or give this one another --machine-id and --work-dir"
    )]
    Held {
        /// What the lock guards ("machine \"m1\"", "work dir /x").
        what: String,
        /// The lock file.
        path: PathBuf,
        /// The holder's pid as it wrote it ("unknown" if unreadable).
        holder: String,
    },
    /// The lock file could not be opened or written.
    #[error("lock file {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The locks a running Borglet holds; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct MachineLock {
    _held: Vec<std::fs::File>,
}

/// The directory for machine locks: `/run/lock/borg` if it exists or can be made, else
/// `$TMPDIR/borg-locks`.
pub fn lock_dir() -> PathBuf {
    let run = Path::new("/run/lock/borg");
    if std::fs::create_dir_all(run).is_ok() {
        return run.to_path_buf();
    }
    let tmp = std::env::temp_dir().join("borg-locks");
    let _ = std::fs::create_dir_all(&tmp);
    tmp
}

/// Takes the locks for machine `machine_id` (in [`lock_dir`]) and for `work_dir` (which must
/// exist). With `machine_id` None (a hollow Borglet, which makes no cgroups) only the work dir is
/// locked.
///
/// Errors: [`LockError::Held`] naming the holder's pid when another process holds either lock;
/// [`LockError::Io`] when a lock file cannot be opened.
pub fn lock_machine(machine_id: Option<&str>, work_dir: &Path) -> Result<MachineLock, LockError> {
    let mut held = vec![take(&work_dir.join("borglet.lock"), &format!("work dir {}", work_dir.display()))?];
    if let Some(id) = machine_id {
        let path = lock_dir().join(format!("borglet-{}.lock", id.replace('/', "_")));
        held.push(take(&path, &format!("machine {id:?}"))?);
    }
    Ok(MachineLock { _held: held })
}

fn take(path: &Path, what: &str) -> Result<std::fs::File, LockError> {
    let io = |source| LockError::Io { path: path.to_path_buf(), source };
    let mut file =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
    // SAFETY: a zeroed flock is valid; the fd is open for the duration of both calls.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) } == 0 {
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        return Ok(file);
    }
    let err = std::io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::EACCES) | Some(libc::EAGAIN)) {
        return Err(io(err));
    }
    let mut probe: libc::flock = unsafe { std::mem::zeroed() };
    probe.l_type = libc::F_WRLCK as libc::c_short;
    probe.l_whence = libc::SEEK_SET as libc::c_short;
    let holder = if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut probe) } == 0
        && probe.l_type != libc::F_UNLCK as libc::c_short
    {
        probe.l_pid.to_string()
    } else {
        let mut written = String::new();
        let _ = file.read_to_string(&mut written);
        match written.trim() {
            "" => "unknown".to_string(),
            pid => pid.to_string(),
        }
    };
    Err(LockError::Held { what: what.to_string(), path: path.to_path_buf(), holder })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let id = format!("lock-test-{}", std::process::id());
        let held = lock_machine(Some(&id), dir.path()).unwrap();
        let pid = std::fs::read_to_string(dir.path().join("borglet.lock")).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        assert_eq!(held._held.len(), 2);
        // a second process is refused: tests/tests/day_one.rs starts real Borglets for that
    }
}
