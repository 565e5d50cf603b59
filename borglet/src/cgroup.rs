//! Per-task cgroups with CPU and memory limits, on cgroup v2 or v1 (detected once).
//!
//! Hand-rolled on purpose: the `cgroups-rs` crate (0.5) pulls in zbus (a D-Bus stack with its
//! own async executor) and a second `nix`, for what here is a handful of file writes.
//!
//! Layout: `<mount>/borg-<machine>/<job>.<index>.<incarnation>` in each controller hierarchy
//! (v1: memory, cpu, cpuacct; v2: the unified tree). The process joins its cgroup before it
//! execs: the Borglet opens each `cgroup.procs` file and the child writes "0" to it between fork
//! and exec (see [`TaskCgroup::procs_fds`]), so no child process can escape the limits.
//!
//! Limits: memory = the task's RAM request (hard); CPU = a CFS quota of the request
//! (`cpu_millis * period / 1000`), period 100 ms.

use scheduler_core::Resources;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const CFS_PERIOD_US: u64 = 100_000;

/// Which cgroup hierarchy this host offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupSupport {
    /// cgroup v2: the unified hierarchy mounted here.
    V2(PathBuf),
    /// cgroup v1: mount points of the memory, cpu and cpuacct controllers.
    V1 {
        /// memory controller mount.
        memory: PathBuf,
        /// cpu controller mount.
        cpu: PathBuf,
        /// cpuacct controller mount (may equal `cpu` when co-mounted).
        cpuacct: PathBuf,
    },
    /// Neither is usable; tasks run without limits. The reason is logged once at start.
    None(String),
}

/// Parses /proc/self/mountinfo lines into (mount point, fs type, super options).
fn mounts(mountinfo: &str) -> Vec<(PathBuf, String, String)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            let mut r = right.split_whitespace();
            let fstype = r.next()?;
            let _source = r.next();
            let opts = r.next().unwrap_or("");
            Some((PathBuf::from(mount_point), fstype.to_string(), opts.to_string()))
        })
        .collect()
}

fn writable(p: &Path) -> bool {
    nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok()
}

impl CgroupSupport {
    /// Detects the host's cgroups from /proc/self/mountinfo: v1 when the memory and cpu
    /// controllers are mounted as v1 hierarchies (hybrid hosts included), otherwise v2 when the
    /// unified hierarchy offers the memory and cpu controllers, otherwise none.
    pub fn detect() -> CgroupSupport {
        let info = match fs::read_to_string("/proc/self/mountinfo") {
            Ok(s) => s,
            Err(e) => return CgroupSupport::None(format!("cannot read /proc/self/mountinfo: {e}")),
        };
        let ms = mounts(&info);
        let v1 = |ctrl: &str| {
            ms.iter().find(|(_, t, o)| t == "cgroup" && o.split(',').any(|x| x == ctrl)).map(|(p, _, _)| p.clone())
        };
        if let (Some(memory), Some(cpu), Some(cpuacct)) = (v1("memory"), v1("cpu"), v1("cpuacct")) {
            if writable(&memory) && writable(&cpu) {
                return CgroupSupport::V1 { memory, cpu, cpuacct };
            }
            return CgroupSupport::None(format!("cgroup v1 at {} is not writable", memory.display()));
        }
        if let Some((root, _, _)) = ms.iter().find(|(_, t, _)| t == "cgroup2") {
            let ctrls = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| ctrls.split_whitespace().any(|x| x == c);
            if has("memory") && has("cpu") && writable(root) {
                return CgroupSupport::V2(root.clone());
            }
            return CgroupSupport::None(format!(
                "cgroup v2 at {} lacks the memory and cpu controllers or is not writable (has: {})",
                root.display(),
                ctrls.trim()
            ));
        }
        CgroupSupport::None("no cgroup filesystem mounted".into())
    }

    /// Creates the Borglet's parent cgroup `borg-<machine>` (and, on v2, enables the cpu and
    /// memory controllers for its children).
    ///
    /// Errors: the directories or control files cannot be written.
    pub fn prepare(&self, machine: &str) -> io::Result<()> {
        let name = parent_name(machine);
        match self {
            CgroupSupport::V2(root) => {
                let _ = fs::write(root.join("cgroup.subtree_control"), "+cpu +memory");
                let parent = root.join(&name);
                fs::create_dir_all(&parent)?;
                fs::write(parent.join("cgroup.subtree_control"), "+cpu +memory")
            }
            CgroupSupport::V1 { memory, cpu, cpuacct } => {
                for d in [memory, cpu, cpuacct] {
                    fs::create_dir_all(d.join(&name))?;
                }
                Ok(())
            }
            CgroupSupport::None(_) => Ok(()),
        }
    }

    /// Creates the cgroup for one task run with `limits` (a CPU quota and a memory limit) and
    /// the CPU weight of `priority`'s band ([`cpu_weight`]); `None` when cgroups are
    /// unavailable.
    ///
    /// Errors: a directory or limit file cannot be written.
    pub fn create(
        &self,
        machine: &str,
        task: &str,
        limits: Resources,
        priority: i32,
    ) -> io::Result<Option<TaskCgroup>> {
        let sub = Path::new(&parent_name(machine)).join(task);
        let quota = (limits.cpu_millis * CFS_PERIOD_US / 1000).max(1000);
        let (weight, shares) = cpu_weight(priority);
        let dirs = match self {
            CgroupSupport::None(_) => return Ok(None),
            CgroupSupport::V2(root) => {
                let d = root.join(&sub);
                fs::create_dir_all(&d)?;
                fs::write(d.join("memory.max"), limits.ram_bytes.to_string())?;
                fs::write(d.join("cpu.max"), format!("{quota} {CFS_PERIOD_US}"))?;
                fs::write(d.join("cpu.weight"), weight.to_string())?;
                vec![d]
            }
            CgroupSupport::V1 { memory, cpu, cpuacct } => {
                let (m, c, a) = (memory.join(&sub), cpu.join(&sub), cpuacct.join(&sub));
                for d in [&m, &c, &a] {
                    fs::create_dir_all(d)?;
                }
                fs::write(m.join("memory.limit_in_bytes"), limits.ram_bytes.to_string())?;
                fs::write(c.join("cpu.cfs_period_us"), CFS_PERIOD_US.to_string())?;
                fs::write(c.join("cpu.cfs_quota_us"), quota.to_string())?;
                fs::write(c.join("cpu.shares"), shares.to_string())?;
                let mut dirs = vec![m, c];
                if !dirs.contains(&a) {
                    dirs.push(a);
                }
                dirs
            }
        };
        Ok(Some(TaskCgroup { v2: matches!(self, CgroupSupport::V2(_)), dirs }))
    }

    /// Names of the task cgroups under this machine's parent cgroup (from the first hierarchy).
    pub fn task_cgroup_names(&self, machine: &str) -> Vec<String> {
        let base = match self {
            CgroupSupport::None(_) => return Vec::new(),
            CgroupSupport::V2(root) => root.join(parent_name(machine)),
            CgroupSupport::V1 { memory, .. } => memory.join(parent_name(machine)),
        };
        fs::read_dir(base)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The cgroup of a task run that already exists (after a Borglet restart), if any.
    pub fn existing(&self, machine: &str, task: &str) -> Option<TaskCgroup> {
        let sub = Path::new(&parent_name(machine)).join(task);
        let dirs: Vec<PathBuf> = match self {
            CgroupSupport::None(_) => return None,
            CgroupSupport::V2(root) => vec![root.join(&sub)],
            CgroupSupport::V1 { memory, cpu, cpuacct } => {
                let mut v = vec![memory.join(&sub), cpu.join(&sub)];
                if !v.contains(&cpuacct.join(&sub)) {
                    v.push(cpuacct.join(&sub));
                }
                v
            }
        };
        dirs.iter().all(|d| d.is_dir()).then_some(TaskCgroup { v2: matches!(self, CgroupSupport::V2(_)), dirs })
    }
}

/// A task's CPU weight under contention by band, as (cgroup v2 `cpu.weight`, v1 `cpu.shares`):
/// monitoring and production 10000 / 262144 (the maxima), batch 100 / 1024 (the defaults),
/// free 1 / 2 (the minima). Each task is still capped at its request by its CPU quota; the
/// weights decide who yields when tasks placed in reclaimed resources (Borg §5.5) compete with
/// production for the same cores: a busy batch task cannot slow a production one below its
/// request (Borg §6.2: latency-sensitive tasks get priority over batch on a shared core).
pub fn cpu_weight(priority: i32) -> (u32, u32) {
    match scheduler_core::Priority(priority).band() {
        Some(scheduler_core::Band::Production | scheduler_core::Band::Monitoring) => (10_000, 262_144),
        Some(scheduler_core::Band::Batch) => (100, 1024),
        Some(scheduler_core::Band::Free) | None => (1, 2),
    }
}

fn parent_name(machine: &str) -> String {
    let safe: String = machine.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("borg-{safe}")
}

/// One task run's cgroup (one directory per hierarchy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCgroup {
    v2: bool,
    /// v2: [dir]; v1: [memory, cpu, cpuacct (if separate)].
    dirs: Vec<PathBuf>,
}

/// A usage sample of a task's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupUsage {
    /// CPU time since the cgroup was created, seconds.
    pub cpu_seconds: f64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
}

impl TaskCgroup {
    /// Opens every `cgroup.procs` for writing, for the child to join between fork and exec.
    /// The fds are close-on-exec, so the task never sees them.
    ///
    /// Errors: a file cannot be opened.
    pub fn procs_fds(&self) -> io::Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .map(|d| fs::OpenOptions::new().write(true).open(d.join("cgroup.procs")).map(OwnedFd::from))
            .collect()
    }

    /// Pids in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dirs[0].join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Reads CPU time and memory use; zero for what cannot be read. Memory is the working set,
    /// as the kubelet counts it: usage minus the inactive file cache (page cache the kernel
    /// reclaims first), so that a task that wrote big files does not look like one using memory.
    pub fn usage(&self) -> CgroupUsage {
        let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
        let stat = |key: &str| {
            read(self.dirs[0].join("memory.stat"))
                .lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse::<u64>().ok()))
                .unwrap_or(0)
        };
        if self.v2 {
            let d = &self.dirs[0];
            let usec = read(d.join("cpu.stat"))
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec ").and_then(|v| v.trim().parse::<u64>().ok()))
                .unwrap_or(0);
            let mem: u64 = read(d.join("memory.current")).trim().parse().unwrap_or(0);
            CgroupUsage { cpu_seconds: usec as f64 / 1e6, memory_bytes: mem.saturating_sub(stat("inactive_file ")) }
        } else {
            let mem: u64 = read(self.dirs[0].join("memory.usage_in_bytes")).trim().parse().unwrap_or(0);
            let acct = self.dirs.last().map(|d| d.join("cpuacct.usage")).unwrap_or_default();
            let ns: u64 = read(acct).trim().parse().unwrap_or(0);
            CgroupUsage { cpu_seconds: ns as f64 / 1e9, memory_bytes: mem.saturating_sub(stat("total_inactive_file ")) }
        }
    }

    /// How many processes of this cgroup the kernel's OOM killer has killed: v2 `memory.events`
    /// `oom_kill`; v1 `memory.oom_control` `oom_kill` (kernels >= 4.13), else 1 when
    /// `memory.failcnt` shows the limit was hit (older v1 kernels count no kills). 0 when
    /// unreadable.
    pub fn oom_kills(&self) -> u64 {
        let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse::<u64>().ok()))
        };
        let d = &self.dirs[0];
        if self.v2 {
            return field(&read(d.join("memory.events")), "oom_kill ").unwrap_or(0);
        }
        match field(&read(d.join("memory.oom_control")), "oom_kill ") {
            Some(n) => n,
            None => read(d.join("memory.failcnt")).trim().parse::<u64>().map_or(0, |f| u64::from(f > 0)),
        }
    }

    /// Removes the cgroup directories (after every process in it is gone). Errors are logged:
    /// a leftover empty cgroup costs nothing.
    pub fn remove(&self) {
        for d in &self.dirs {
            if let Err(e) = fs::remove_dir(d) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::debug!(dir = %d.display(), error = %e, "cgroup not removed");
                }
            }
        }
    }
}

/// Writes "0" to each fd: moves the calling process into those cgroups. Async-signal-safe, for
/// use between fork and exec.
pub fn join_in_child(fds: &[i32]) -> io::Result<()> {
    for &fd in fds {
        // SAFETY: write(2) on an fd we own with a valid 1-byte buffer; async-signal-safe.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raw fds of `fds` (borrowed for the child).
pub fn raw(fds: &[OwnedFd]) -> Vec<i32> {
    fds.iter().map(|f| f.as_raw_fd()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parsing_finds_v1_controllers_and_v2() {
        let info = "\
35 25 0:30 / /sys/fs/cgroup/memory rw,relatime shared:13 - cgroup cgroup rw,memory
36 25 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
37 25 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate";
        let ms = mounts(info);
        assert_eq!(ms.len(), 3);
        assert_eq!(ms[1].0, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(ms[1].2, "rw,cpu,cpuacct");
        assert_eq!(ms[2].1, "cgroup2");
    }

    #[test]
    fn a_task_cgroup_gets_its_limits_and_its_bands_cpu_weight() {
        let root = tempfile::tempdir().unwrap();
        let v2 = CgroupSupport::V2(root.path().to_path_buf());
        for (prio, weight) in [(250, "10000"), (150, "100"), (5, "1")] {
            let task = format!("t{prio}");
            v2.create("m1", &task, Resources::new(500, 64 << 20, 0), prio).unwrap();
            let d = root.path().join(parent_name("m1")).join(&task);
            assert_eq!(fs::read_to_string(d.join("cpu.weight")).unwrap(), weight, "priority {prio}");
            assert_eq!(fs::read_to_string(d.join("cpu.max")).unwrap(), "50000 100000");
            assert_eq!(fs::read_to_string(d.join("memory.max")).unwrap(), (64u64 << 20).to_string());
        }
        let dirs = tempfile::tempdir().unwrap();
        let (m, c, a) = (dirs.path().join("memory"), dirs.path().join("cpu"), dirs.path().join("cpuacct"));
        let v1 = CgroupSupport::V1 { memory: m, cpu: c.clone(), cpuacct: a };
        v1.create("m1", "prod", Resources::new(1000, 1 << 20, 0), 200).unwrap();
        v1.create("m1", "batch", Resources::new(1000, 1 << 20, 0), 100).unwrap();
        let shares = |t: &str| fs::read_to_string(c.join(parent_name("m1")).join(t).join("cpu.shares")).unwrap();
        assert_eq!((shares("prod"), shares("batch")), ("262144".to_string(), "1024".to_string()));
    }

    #[test]
    fn parent_names_are_safe() {
        assert_eq!(parent_name("m1.example/x"), "borg-m1_example_x");
    }
}
