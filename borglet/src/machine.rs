//! What this machine offers: capacity detected from the OS (overridable by flags) and attributes.

use scheduler_core::{Attributes, Resources};
use std::path::Path;

/// Capacity detected from the OS: CPUs x 1000 millicores, MemTotal bytes, and the bytes
/// available on the filesystem holding `work_dir`. A dimension that cannot be read is 0 and a
/// warning is logged.
pub fn detect_capacity(work_dir: &Path) -> Resources {
    let cpu = std::thread::available_parallelism().map_or(0, |n| n.get() as u64 * 1000);
    let ram = <procfs::Meminfo as procfs::Current>::current().map(|m| m.mem_total).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read /proc/meminfo; RAM capacity 0 (set --ram)");
        0
    });
    // the statvfs field types differ between platforms
    #[allow(clippy::unnecessary_cast)]
    let disk = nix::sys::statvfs::statvfs(work_dir)
        .map(|s| s.blocks_available() as u64 * s.fragment_size() as u64)
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, dir = %work_dir.display(), "cannot statvfs the work dir; disk capacity 0 (set --disk)");
            0
        });
    Resources::new(cpu, ram, disk)
}

/// The disk capacity to offer: the work dir's free space when a Borglet first ran there, kept in
/// `<work-dir>/disk-capacity` so that it does not change with every restart (tasks' own files
/// would otherwise shrink it, and the machine's capacity would move under its tasks). A file
/// that does not parse is replaced by `detected`.
pub fn stable_disk_capacity(work_dir: &Path, detected: u64) -> u64 {
    let file = work_dir.join("disk-capacity");
    if let Some(n) = std::fs::read_to_string(&file).ok().and_then(|s| s.trim().parse::<u64>().ok()) {
        return n;
    }
    if let Err(e) = std::fs::write(&file, format!("{detected}\n")) {
        tracing::warn!(file = %file.display(), error = %e, "cannot record the disk capacity; it may change at the next start");
    }
    detected
}

/// Built-in attributes: `arch` (e.g. x86_64), `os` (linux), `hostname`; then `extra` (from
/// `--attr k=v`), which may override them.
pub fn attributes(extra: &[(String, String)]) -> Attributes {
    let mut a = Attributes::new();
    a.insert("arch".into(), std::env::consts::ARCH.into());
    a.insert("os".into(), std::env::consts::OS.into());
    if let Ok(h) = nix::unistd::gethostname() {
        a.insert("hostname".into(), h.to_string_lossy().into_owned());
    }
    for (k, v) in extra {
        a.insert(k.clone(), v.clone());
    }
    a
}

/// This machine's hostname, or `localhost` if it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "localhost".into())
}

/// The (uid, gid) tasks run as, for `--task-user NAME`: None when the Borglet is not root (it
/// cannot switch users; tasks run as the Borglet's user) or NAME is `root`. A missing user is
/// created as a system user without a home or login shell (`useradd --system`).
///
/// Errors: the user does not exist and cannot be created.
pub fn task_user(name: &str) -> Result<Option<(u32, u32)>, String> {
    if !nix::unistd::geteuid().is_root() {
        tracing::warn!("the Borglet is not root: tasks run as its own user");
        return Ok(None);
    }
    if name == "root" {
        tracing::warn!("--task-user root: tasks run as root");
        return Ok(None);
    }
    let lookup = |n: &str| nix::unistd::User::from_name(n).map_err(|e| format!("looking up user {n:?}: {e}"));
    let user = match lookup(name)? {
        Some(u) => u,
        None => {
            let out = std::process::Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ])
                .output()
                .map_err(|e| format!("user {name:?} does not exist and useradd could not run: {e}"))?;
            // another Borglet may have created it meanwhile (exit 9: already exists)
            if !out.status.success() && out.status.code() != Some(9) {
                return Err(format!(
                    "user {name:?} does not exist and useradd failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            tracing::info!(user = name, "created the system user tasks run as");
            lookup(name)?.ok_or_else(|| format!("user {name:?} still missing after useradd"))?
        }
    };
    if user.uid.is_root() {
        return Err(format!("user {name:?} has uid 0; pass --task-user root to run tasks as root"));
    }
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_capacity_is_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stable_disk_capacity(dir.path(), 1000), 1000);
        assert_eq!(stable_disk_capacity(dir.path(), 900), 1000, "the first detection stays");
        std::fs::write(dir.path().join("disk-capacity"), "junk").unwrap();
        assert_eq!(stable_disk_capacity(dir.path(), 800), 800);
    }

    #[test]
    fn detects_something_and_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        let c = detect_capacity(dir.path());
        assert!(c.cpu_millis >= 1000 && c.ram_bytes > 0 && c.disk_bytes > 0, "{c:?}");
        let a = attributes(&[("rack".into(), "r1".into()), ("os".into(), "plan9".into())]);
        assert_eq!(a["arch"], std::env::consts::ARCH);
        assert_eq!(a["rack"], "r1");
        assert_eq!(a["os"], "plan9");
    }
}
