//! Starting, signalling and watching one task process.

use crate::cgroup::{join_in_child, raw, TaskCgroup};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

/// PATH given to tasks.
pub const TASK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Starts `argv` as a task process: in its own process group (so the whole tree can be
/// signalled), in `sandbox` as working directory, with exactly `env` (nothing inherited from the
/// Borglet), stdin from /dev/null, stdout and stderr appended to `sandbox/stdout` and
/// `sandbox/stderr`, and inside `cgroup` before it execs.
///
/// With `user` (uid, gid) the process drops to that user (supplementary groups: only gid)
/// after joining its cgroup and before it execs.
///
/// Errors: the log files cannot be opened, the cgroup cannot be joined, the user cannot be
/// taken, or the program cannot be executed (not found, not executable); the error names the
/// program.
pub fn spawn(
    argv: &[String],
    sandbox: &Path,
    env: &[(String, String)],
    cgroup: Option<&TaskCgroup>,
    user: Option<(u32, u32)>,
) -> io::Result<Child> {
    let log = |name: &str| OpenOptions::new().create(true).append(true).open(sandbox.join(name));
    let io = Io { stdin: Stdio::null(), stdout: log("stdout")?.into(), stderr: log("stderr")?.into() };
    spawn_with(argv, sandbox, env, cgroup, user, io)
}

/// Like [`spawn`], with stdin, stdout and stderr piped to the caller (`borgctl exec`).
///
/// Errors: as [`spawn`].
pub fn spawn_piped(
    argv: &[String],
    sandbox: &Path,
    env: &[(String, String)],
    cgroup: Option<&TaskCgroup>,
    user: Option<(u32, u32)>,
) -> io::Result<Child> {
    let io = Io { stdin: Stdio::piped(), stdout: Stdio::piped(), stderr: Stdio::piped() };
    spawn_with(argv, sandbox, env, cgroup, user, io)
}

/// A process's standard streams.
struct Io {
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
}

fn spawn_with(
    argv: &[String],
    sandbox: &Path,
    env: &[(String, String)],
    cgroup: Option<&TaskCgroup>,
    user: Option<(u32, u32)>,
    io: Io,
) -> io::Result<Child> {
    let (program, args) =
        argv.split_first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let fds = match cgroup {
        Some(cg) => cg.procs_fds()?,
        None => Vec::new(),
    };
    let raw_fds = raw(&fds);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(sandbox)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(io.stdin)
        .stdout(io.stdout)
        .stderr(io.stderr)
        .process_group(0);
    // SAFETY: the closure only calls write(2) on fds opened above, setgroups(2), setgid(2) and
    // setuid(2) (all async-signal-safe) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            join_in_child(&raw_fds)?;
            if let Some((uid, gid)) = user {
                let groups = [gid as libc::gid_t];
                if libc::setgroups(1, groups.as_ptr()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("cannot start {program:?}: {e}")))?;
    drop(fds);
    Ok(child)
}

/// Gives `sandbox` (and its `stdout`/`stderr`) to `user` (uid, gid) with mode 0700, so that
/// only the task and the Borglet (root) can write (or read) it. Nothing to do without a user.
///
/// Errors: chown or chmod failed (the error names the path).
pub fn own_sandbox(sandbox: &Path, user: Option<(u32, u32)>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some((uid, gid)) = user else { return Ok(()) };
    let name = |p: &Path, e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    for f in ["stdout", "stderr"] {
        let p = sandbox.join(f);
        OpenOptions::new().create(true).append(true).open(&p).map_err(|e| name(&p, e))?;
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(|e| name(&p, e))?;
    }
    std::os::unix::fs::chown(sandbox, Some(uid), Some(gid)).map_err(|e| name(sandbox, e))?;
    std::fs::set_permissions(sandbox, std::fs::Permissions::from_mode(0o700)).map_err(|e| name(sandbox, e))
}

/// Sends `sig` to the process group `pgid` (a task's leader pid). A group that no longer exists
/// is not an error.
pub fn signal_group(pgid: u32, sig: Signal) {
    match killpg(Pid::from_raw(pgid as i32), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, signal = %sig, error = %e, "cannot signal process group"),
    }
}

/// SIGKILLs every process still in `cgroup` (processes that left the task's process group).
pub fn kill_cgroup(cgroup: &TaskCgroup) {
    for pid in cgroup.pids() {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat), to tell a process
/// from a later one that reuses its pid. `None` if it does not exist or is a zombie.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = procfs::process::Process::new(pid as i32).ok()?.stat().ok()?;
    (stat.state != 'Z' && stat.state != 'X').then_some(stat.starttime)
}

/// CPU seconds and resident bytes of one process, from /proc (used when there is no cgroup).
pub fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = procfs::process::Process::new(pid as i32).ok()?.stat().ok()?;
    let tps = procfs::ticks_per_second() as f64;
    Some(((stat.utime + stat.stime) as f64 / tps, stat.rss * procfs::page_size()))
}

/// (exit code, signal) of an exit status: exactly one is set.
pub fn exit_parts(status: ExitStatus) -> (Option<i32>, Option<i32>) {
    (status.code(), status.signal())
}
