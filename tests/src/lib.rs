//! A test cell: the real `borgmaster`, `borglet` and `borgctl` binaries on loopback with
//! ephemeral ports, in temporary directories, torn down (tasks included) when dropped.
//!
//! The binaries are taken from the same target directory as the test executable; build them
//! first (`cargo test --workspace` does).

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Poll interval the test cells use (the default is 1 s).
pub const POLL: &str = "200ms";

/// Path of a workspace binary next to the running test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(p.exists(), "{} not built: run `cargo build --workspace` (or `cargo test --workspace`)", p.display());
    p
}

/// The workspace root (for configs/).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Starts `cmd`, waits for the stdout line `<prefix> listening on ADDR`, returns (child, ADDR,
/// the HTTP address if it printed `<prefix> http on ADDR` before).
fn start_listening(cmd: Command, what: &str, log: &Path) -> (Child, String) {
    let (child, addr, _) = start_listening_http(cmd, what, log);
    (child, addr)
}

pub(crate) fn start_listening_http(cmd: Command, what: &str, log: &Path) -> (Child, String, Option<String>) {
    let (child, addr, http, _) = start_listening_all(cmd, what, log);
    (child, addr, http)
}

/// Like [`start_listening_http`], also returning the DNS address it printed
/// (`<what> dns on ADDR`), if any.
pub(crate) fn start_listening_all(
    cmd: Command,
    what: &str,
    log: &Path,
) -> (Child, String, Option<String>, Option<String>) {
    try_start_listening_all(cmd, what, log).unwrap_or_else(|_| {
        panic!("{what} exited before listening; log: {}", std::fs::read_to_string(log).unwrap_or_default())
    })
}

/// Like [`start_listening_all`], but a process that exits (or closes its stdout) before it
/// listens is returned as `Err` with its child (killed, if it still ran), not a panic: for
/// starts where an early exit is what a test injects.
pub(crate) fn try_start_listening_all(
    mut cmd: Command,
    what: &str,
    log: &Path,
) -> Result<(Child, String, Option<String>, Option<String>), Child> {
    let stderr = std::fs::File::create(log).expect("log file");
    let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let prefix = format!("{what} listening on ");
    let http_prefix = format!("{what} http on ");
    let dns_prefix = format!("{what} dns on ");
    let mut http = None;
    let mut dns = None;
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with(&prefix) => {
                let addr = l[prefix.len()..].trim().to_string();
                std::thread::spawn(move || for _ in lines {});
                return Ok((child, addr, http, dns));
            }
            Some(Ok(l)) if l.starts_with(&http_prefix) => http = Some(l[http_prefix.len()..].trim().to_string()),
            Some(Ok(l)) if l.starts_with(&dns_prefix) => dns = Some(l[dns_prefix.len()..].trim().to_string()),
            Some(Ok(_)) => continue,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(child);
            }
        }
    }
}

/// One Borglet of a test cell.
pub struct TestBorglet {
    /// Machine id.
    pub id: String,
    /// Work dir.
    pub work_dir: PathBuf,
    child: Option<Child>,
    /// Address it serves on.
    pub addr: String,
    /// Its HTTP address, when started with HTTP.
    pub http: Option<String>,
    /// Its `--port-range` (first-last), kept across restarts.
    pub port_range: Option<String>,
}

/// A running test cell.
pub struct TestCell {
    /// Temporary root of every data and work dir.
    pub dir: tempfile::TempDir,
    /// Master address.
    pub master_addr: String,
    master: Option<Child>,
    /// Borglets by start order.
    pub borglets: Vec<TestBorglet>,
    name: String,
    /// The master's HTTP address (/metrics, /, /healthz), when started with HTTP.
    pub master_http: Option<String>,
    /// The master's DNS address (UDP and TCP; every test master serves DNS).
    pub master_dns: Option<String>,
    http: bool,
    default_quota: String,
    /// Auth on: the cell has a CA in `<dir>/ca`, and borgctl runs as admin (`<dir>/admin`).
    pub secure: bool,
    /// The master's `--poll-interval` (default [`POLL`]).
    pub poll_interval: String,
    /// The master's log files, one per start, in start order.
    pub master_logs: Vec<PathBuf>,
    /// More flags for every start of the master.
    pub master_extra: Vec<String>,
}

impl TestCell {
    /// A master (poll interval [`POLL`]) and `n` Borglets of 4 cores / 8 GiB, machine ids
    /// `<name>-m<i>`.
    pub fn start(name: &str, n: usize) -> TestCell {
        Self::start_with(name, n, false)
    }

    /// Like [`TestCell::start`]; with `http`, the master and every Borglet also serve HTTP
    /// (`/metrics`) on an ephemeral port. The cell's default quota is unlimited.
    pub fn start_with(name: &str, n: usize, http: bool) -> TestCell {
        Self::start_full(name, n, http, "unlimited")
    }

    /// Like [`TestCell::start_with`], with the master's `--default-quota` given.
    pub fn start_full(name: &str, n: usize, http: bool, default_quota: &str) -> TestCell {
        Self::launch(name, n, http, default_quota, false)
    }

    /// A cell with auth on (mutual TLS, authorization): its own CA, a replica certificate for
    /// the master, a machine certificate per Borglet, and an admin certificate borgctl uses
    /// (`<dir>/admin-root`); `n` Borglets.
    pub fn start_secure(name: &str, n: usize) -> TestCell {
        Self::launch(name, n, false, "unlimited", true)
    }

    /// Starts the master and `n` Borglets and waits until all are registered; with `secure`,
    /// first makes the cell's CA and the master's and admin's credentials.
    fn launch(name: &str, n: usize, http: bool, default_quota: &str, secure: bool) -> TestCell {
        Self::launch_custom(name, n, http, default_quota, secure, POLL, &[], &[])
    }

    /// Like [`TestCell::start`] with the master polling every `poll_interval` (e.g. "1s", the
    /// production default) instead of [`POLL`].
    pub fn start_polling(name: &str, n: usize, poll_interval: &str) -> TestCell {
        Self::launch_custom(name, n, false, "unlimited", false, poll_interval, &[], &[])
    }

    /// A cell (HTTP on, default quota unlimited, poll interval [`POLL`]) whose master gets
    /// `master_extra` flags and whose `n` Borglets get `borglet_extra` (a `--cpu`, `--ram` or
    /// `--disk` there replaces the default 4 cores / 8 GiB / 100 GiB).
    pub fn start_custom(name: &str, n: usize, master_extra: &[&str], borglet_extra: &[&str]) -> TestCell {
        Self::launch_custom(name, n, true, "unlimited", false, POLL, master_extra, borglet_extra)
    }

    #[allow(clippy::too_many_arguments)]
    fn launch_custom(
        name: &str,
        n: usize,
        http: bool,
        default_quota: &str,
        secure: bool,
        poll_interval: &str,
        master_extra: &[&str],
        borglet_extra: &[&str],
    ) -> TestCell {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cell = TestCell {
            dir,
            master_addr: String::new(),
            master: None,
            borglets: Vec::new(),
            name: name.into(),
            master_http: None,
            master_dns: None,
            http,
            default_quota: default_quota.to_string(),
            secure,
            poll_interval: POLL.to_string(),
            master_logs: Vec::new(),
            master_extra: master_extra.iter().map(|s| s.to_string()).collect(),
        };
        cell.poll_interval = poll_interval.to_string();
        if secure {
            let ca = cell.dir.path().join("ca");
            let out =
                Command::new(bin("borgctl")).arg("certs").arg("init").arg("--ca").arg(&ca).output().expect("borgctl");
            assert!(out.status.success(), "certs init: {}", String::from_utf8_lossy(&out.stderr));
            cell.issue("replica", "1");
            cell.issue("admin", "root");
        }
        cell.start_master("127.0.0.1:0");
        for _ in 0..n {
            cell.add_borglet_with(borglet_extra);
        }
        cell.wait_for(Duration::from_secs(30), "all machines registered", |c| {
            c.machines().as_array().is_some_and(|a| a.len() == n)
        });
        cell
    }

    /// Issues credentials for `role`/`name` from this cell's CA into `<dir>/<role>-<name>`;
    /// returns that directory.
    pub fn issue(&self, role: &str, name: &str) -> PathBuf {
        let out_dir = self.dir.path().join(format!("{role}-{name}"));
        let out = Command::new(bin("borgctl"))
            .args(["certs", "issue", "--role", role, "--name", name, "--ca"])
            .arg(self.dir.path().join("ca"))
            .arg("--out")
            .arg(&out_dir)
            .output()
            .expect("borgctl");
        assert!(out.status.success(), "certs issue: {}", String::from_utf8_lossy(&out.stderr));
        out_dir
    }

    /// Runs borgctl with the credentials in `creds` (None: plain, no certificate).
    pub fn borgctl_as(&self, creds: Option<&Path>, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin("borgctl"));
        cmd.arg("--master").arg(&self.master_addr);
        if let Some(c) = creds {
            cmd.arg("--credentials").arg(c);
        }
        cmd.args(args).output().expect("run borgctl")
    }

    /// (Re)starts the master on `listen` with the cell's data dir.
    pub fn start_master(&mut self, listen: &str) {
        let mut cmd = Command::new(bin("borgmaster"));
        cmd.args([
            "--listen",
            listen,
            "--poll-interval",
            &self.poll_interval,
            "--cell",
            "test",
            "--default-quota",
            &self.default_quota,
        ])
        .arg("--data-dir")
        .arg(self.dir.path().join("master"))
        .args(&self.master_extra);
        if self.secure {
            cmd.arg("--credentials").arg(self.dir.path().join("replica-1"));
        } else {
            cmd.arg("--insecure");
        }
        if self.http {
            cmd.args(["--http", "127.0.0.1:0"]);
        }
        cmd.args(["--dns", "127.0.0.1:0"]);
        let log = self.dir.path().join(format!("master-{}.log", self.master_logs.len()));
        let (child, addr, http, dns) = start_listening_all(cmd, "borgmaster", &log);
        self.master_dns = dns;
        self.master_logs.push(log);
        self.master = Some(child);
        self.master_addr = addr;
        self.master_http = http;
    }

    /// Kills the master with SIGKILL (no shutdown of any kind).
    pub fn kill9_master(&mut self) {
        if let Some(mut m) = self.master.take() {
            m.kill().expect("kill -9 master");
            let _ = m.wait();
        }
    }

    /// Starts one more Borglet; returns its index in [`TestCell::borglets`].
    pub fn add_borglet(&mut self) -> usize {
        self.add_borglet_with(&[])
    }

    /// Starts one more Borglet with `extra` flags (`--port-range 20000-20009`, `--attr k=v`);
    /// returns its index in [`TestCell::borglets`].
    pub fn add_borglet_with(&mut self, extra: &[&str]) -> usize {
        let i = self.borglets.len() + 1;
        let id = format!("{}-m{i}", self.name);
        let work_dir = self.dir.path().join(&id);
        // Borglets of every test share this host's ports: each gets a block of its own unless the
        // test names one.
        let port_range = match extra.iter().position(|a| *a == "--port-range") {
            Some(i) => extra.get(i + 1).map(|r| r.to_string()),
            None => {
                let (first, last) = free_port_range(16);
                Some(format!("{first}-{last}"))
            }
        };
        let mut cmd = Command::new(bin("borglet"));
        cmd.args(["--master", &self.master_addr, "--listen", "127.0.0.1:0", "--machine-id", &id])
            .args(
                [("--cpu", "4000"), ("--ram", "8Gi"), ("--disk", "100Gi")]
                    .into_iter()
                    .filter(|(flag, _)| !extra.contains(flag))
                    .flat_map(|(flag, value)| [flag, value]),
            )
            .args(extra)
            .arg("--work-dir")
            .arg(&work_dir);
        if !extra.contains(&"--port-range") {
            cmd.args(["--port-range", port_range.as_deref().unwrap_or("none")]);
        }
        if self.secure {
            cmd.arg("--credentials").arg(self.issue("machine", &id));
        } else {
            cmd.arg("--insecure");
        }
        if self.http {
            cmd.args(["--http", "127.0.0.1:0"]);
        }
        let (child, addr, http) = start_listening_http(cmd, "borglet", &self.dir.path().join(format!("{id}.log")));
        self.borglets.push(TestBorglet { id, work_dir, child: Some(child), addr, http, port_range });
        i - 1
    }

    /// Stops Borglet `i` for good, as if its machine died: SIGKILL to the Borglet and to every
    /// task process it started.
    pub fn kill_machine(&mut self, i: usize) {
        let b = &mut self.borglets[i];
        if let Some(mut c) = b.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_tasks_of(&b.work_dir);
    }

    /// Runs borgctl against this cell's master.
    pub fn borgctl(&self, args: &[&str]) -> Output {
        let admin = self.dir.path().join("admin-root");
        self.borgctl_as(self.secure.then_some(admin.as_path()), args)
    }

    /// Runs borgctl with `-o json`, asserting success, and parses its stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.borgctl(&a);
        assert!(out.status.success(), "borgctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("borgctl {args:?} printed no JSON ({e})"))
    }

    /// `borgctl machines -o json` (Null if the master is unreachable).
    pub fn machines(&self) -> Value {
        let out = self.borgctl(&["machines", "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// `borgctl tasks JOB -o json`.
    pub fn tasks(&self, job: &str) -> Vec<Value> {
        self.json(&["tasks", job]).as_array().cloned().unwrap_or_default()
    }

    /// Applies a spec file (path relative to the workspace root, or absolute), asserting success.
    pub fn apply(&self, spec: &Path) {
        let path = workspace_root().join(spec);
        let out = self.borgctl(&["apply", "-f", path.to_str().expect("utf-8 path")]);
        assert!(out.status.success(), "apply {}: {}", spec.display(), String::from_utf8_lossy(&out.stderr));
    }

    /// Writes `yaml` to a file in the cell's dir and applies it.
    pub fn apply_yaml(&self, name: &str, yaml: &str) {
        let p = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&p, yaml).expect("write spec");
        self.apply(&p);
    }

    /// Waits (polling every 50 ms) until `cond` holds; panics with `what` after `timeout`.
    pub fn wait_for(&self, timeout: Duration, what: &str, mut cond: impl FnMut(&TestCell) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every task of `job` is in `state`; returns the tasks.
    pub fn wait_tasks(&self, job: &str, state: &str) -> Vec<Value> {
        let mut last = Vec::new();
        self.wait_for(Duration::from_secs(30), &format!("every task of {job} {state}"), |c| {
            last = c.tasks(job);
            !last.is_empty() && last.iter().all(|t| t["state"] == state)
        });
        last
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// SIGKILLs the process group of every task recorded in a Borglet work dir's state file.
pub(crate) fn kill_tasks_of(work_dir: &Path) {
    let Ok(bytes) = std::fs::read(work_dir.join("borglet-state.json")) else { return };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else { return };
    for run in v["runs"].as_array().into_iter().flatten() {
        if let Some(pid) = run["pid"].as_i64() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Kills every process left in the cgroups a Borglet with machine id `id` made (a task the state
/// file did not name yet, or one caught mid-stop), then removes the cgroups.
pub(crate) fn remove_cgroups(id: &str) {
    for base in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup"] {
        let parent = Path::new(base).join(format!("borg-{id}"));
        let Ok(entries) = std::fs::read_dir(&parent) else { continue };
        for e in entries.flatten().filter(|e| e.path().is_dir()) {
            // killed processes may take a moment to be reaped before the cgroup can go
            for _ in 0..40 {
                let procs = std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
                if std::fs::remove_dir(e.path()).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        let _ = std::fs::remove_dir(&parent);
    }
}

impl Drop for TestCell {
    fn drop(&mut self) {
        for b in &mut self.borglets {
            if let Some(mut c) = b.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            kill_tasks_of(&b.work_dir);
            remove_cgroups(&b.id);
        }
        self.kill9_master();
        if std::thread::panicking() {
            // keep the logs of a failed test
            let kept = self.dir.path().to_path_buf();
            eprintln!("test cell logs kept in {}", kept.display());
            let _ = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir")).keep();
        }
    }
}

impl TestCell {
    /// SIGKILLs Borglet `i`'s process only; its tasks keep running.
    pub fn kill_borglet_process(&mut self, i: usize) {
        if let Some(mut c) = self.borglets[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The pid of Borglet `i`'s process, while it runs.
    pub fn borglet_pid(&self, i: usize) -> Option<u32> {
        self.borglets[i].child.as_ref().map(Child::id)
    }

    /// Everything the master's processes logged so far, all starts.
    pub fn master_log(&self) -> String {
        self.master_logs.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).collect()
    }

    /// Starts Borglet `i` again with the same machine id and work dir.
    pub fn restart_borglet(&mut self, i: usize, work_dir: &Path) {
        self.restart_borglet_from(i, work_dir, &bin("borglet"));
    }

    /// Like [`TestCell::restart_borglet`], running the Borglet binary at `binary` (a new
    /// build installed at another path).
    pub fn restart_borglet_from(&mut self, i: usize, work_dir: &Path, binary: &Path) {
        let id = self.borglets[i].id.clone();
        let mut cmd = Command::new(binary);
        cmd.args(["--master", &self.master_addr, "--listen", "127.0.0.1:0", "--machine-id", &id])
            .args(["--cpu", "4000", "--ram", "8Gi", "--disk", "100Gi"])
            .arg("--insecure")
            .arg("--work-dir")
            .arg(work_dir);
        if let Some(r) = &self.borglets[i].port_range {
            cmd.args(["--port-range", r]);
        }
        let (child, addr) = start_listening(cmd, "borglet", &self.dir.path().join(format!("{id}-2.log")));
        self.borglets[i].child = Some(child);
        self.borglets[i].addr = addr;
    }
}

/// `n` consecutive TCP ports on 127.0.0.1 below the kernel's ephemeral range that are free now
/// and reserved for this test process: (first, last). Each port is reserved by an exclusive lock
/// on `<tmp>/borg-test-ports/<port>`, held until the process exits, so no other test (a thread of
/// this process or another test binary) is handed it too: picking by probing alone let two tests
/// pick the same port between one's probe and its bind ("Address already in use"). A process
/// outside the tests may still take one; the start is random to make that unlikely.
pub fn free_port_range(n: u16) -> (u16, u16) {
    use std::hash::{BuildHasher, Hasher};
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("borg-test-ports");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for _ in 0..200 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let first = 10_000 + (h.finish() % 22_000) as u16;
        // (a lock file that cannot be opened counts as taken)
        let locks: Vec<std::fs::File> = (first..first + n)
            .map_while(|p| {
                let f =
                    std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(p.to_string()));
                f.ok().filter(|f| f.try_lock().is_ok())
            })
            .collect();
        if locks.len() < n as usize {
            continue;
        }
        let free = (first..first + n).filter_map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok()).count();
        if free == n as usize {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).extend(locks);
            return (first, first + n - 1);
        }
    }
    panic!("no {n} free consecutive ports in 10000-32000");
}

/// `GET path` from `addr` over plain HTTP/1.1; returns (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("write request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read response");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, body.to_string())
}

/// The path of `program` on PATH, if any.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(program)).find(|f| f.is_file()))
}

impl TestCell {
    /// Starts a hollow Borglet serving `n` fake machines (`<name>-hollow-h<i>`, 4 cores, 32 GiB
    /// each); returns its index in [`TestCell::borglets`].
    pub fn add_hollow_borglet(&mut self, n: usize) -> usize {
        let id = format!("{}-hollow", self.name);
        let work_dir = self.dir.path().join(&id);
        let mut cmd = Command::new(bin("borglet"));
        cmd.args(["--master", &self.master_addr, "--listen", "127.0.0.1:0", "--machine-id", &id])
            .args(["--hollow", &n.to_string()])
            .arg("--insecure")
            .arg("--work-dir")
            .arg(&work_dir);
        let (child, addr) = start_listening(cmd, "borglet", &self.dir.path().join(format!("{id}.log")));
        self.borglets.push(TestBorglet { id, work_dir, child: Some(child), addr, http: None, port_range: None });
        self.borglets.len() - 1
    }
}

pub mod group;
pub mod linearizability;
pub mod netns;

/// The value of the Prometheus series `series` (name with its labels, as rendered) in the
/// exposition `text`; `None` when it is absent.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_reserved_port_is_never_handed_out_again() {
        let (first, last) = super::free_port_range(16);
        // another process (or thread) cannot take its lock
        let f = std::fs::File::open(std::env::temp_dir().join("borg-test-ports").join(first.to_string())).unwrap();
        assert!(f.try_lock().is_err(), "port {first} is reserved by this process");
        for _ in 0..50 {
            let (a, b) = super::free_port_range(16);
            assert!(b < first || a > last, "{a}-{b} overlaps {first}-{last}");
        }
    }
}
