//! A replicated master group on loopback: N `borgmaster` replicas (`--id i --peers ...`), real
//! Borglets registered with all of them, and borgctl given every replica's address. Replicas
//! can be killed with SIGKILL, restarted, or restarted with a wiped data dir.

use crate::{bin, kill_tasks_of, remove_cgroups, start_listening_http, POLL};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A free loopback port (probed by binding it; the replica binds it again right after, and
/// again after each restart). Below the kernel's ephemeral range, so that no outgoing
/// connection (borgctl, polls, Raft) can take it in between, as one did on a busy CI run.
pub fn free_port() -> u16 {
    crate::free_port_range(1).0
}

/// A running master group.
pub struct MasterGroup {
    /// Temporary root of every data dir and log.
    pub dir: tempfile::TempDir,
    /// Replica i+1's address.
    pub addrs: Vec<String>,
    replicas: Vec<Option<Child>>,
    snapshot_every: u64,
    starts: usize,
    borglets: Vec<(String, PathBuf, Child)>,
    /// Flags added to every replica's command line (e.g. `--election-timeout 2s`).
    extra_args: Vec<String>,
    /// When the replicas run in network namespaces of their own (one host each, so that they
    /// can be partitioned); dropped last.
    net: Option<crate::netns::Network>,
}

impl MasterGroup {
    /// Starts `n` replicas (ids 1..=n) that snapshot every `snapshot_every` entries, and waits
    /// until one leads.
    pub fn start(n: usize, snapshot_every: u64) -> MasterGroup {
        Self::start_on(None, n, snapshot_every)
    }

    /// Like [`MasterGroup::start`], every replica also given `extra_args` (on every restart too).
    pub fn start_with_args(n: usize, snapshot_every: u64, extra_args: &[&str]) -> MasterGroup {
        Self::start_with_args_env(n, snapshot_every, extra_args, &[])
    }

    /// Like [`MasterGroup::start_with_args`], every replica's first start also given the
    /// environment variables `env` (e.g. `FAILPOINTS`).
    pub fn start_with_args_env(
        n: usize,
        snapshot_every: u64,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> MasterGroup {
        let mut g = Self::unstarted(n, snapshot_every);
        g.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        for i in 0..n {
            g.start_replica_env(i, env);
        }
        g.wait_leader(Duration::from_secs(20));
        g
    }

    /// Like [`MasterGroup::start`], replica i in host i of `net` when given (listening on its
    /// address, port 9000; Borglets listen on the network's outside address), else on loopback.
    pub fn start_on(net: Option<crate::netns::Network>, n: usize, snapshot_every: u64) -> MasterGroup {
        let addrs = match &net {
            Some(net) => (0..n).map(|i| format!("{}:9000", net.ip(i))).collect(),
            None => (0..n).map(|_| format!("127.0.0.1:{}", free_port())).collect(),
        };
        let mut g = MasterGroup {
            dir: tempfile::tempdir().expect("tempdir"),
            addrs,
            replicas: (0..n).map(|_| None).collect(),
            snapshot_every,
            starts: 0,
            borglets: Vec::new(),
            extra_args: Vec::new(),
            net,
        };
        for i in 0..n {
            g.start_replica(i);
        }
        g.wait_leader(Duration::from_secs(20));
        g
    }

    /// A group of `n` replicas on loopback of which none is started yet (start them with
    /// [`MasterGroup::start_replica`], in any order).
    pub fn unstarted(n: usize, snapshot_every: u64) -> MasterGroup {
        MasterGroup {
            dir: tempfile::tempdir().expect("tempdir"),
            addrs: (0..n).map(|_| format!("127.0.0.1:{}", free_port())).collect(),
            replicas: (0..n).map(|_| None).collect(),
            snapshot_every,
            starts: 0,
            borglets: Vec::new(),
            extra_args: Vec::new(),
            net: None,
        }
    }

    /// `--peers` of this group.
    pub fn peers(&self) -> String {
        self.addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",")
    }

    /// Data dir of replica `i` (0-based).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("master{}", i + 1))
    }

    /// Log of the latest start of replica `i`.
    pub fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("master{}.log", i + 1))
    }

    /// The command that starts replica `i` (0-based) with its data dir.
    fn replica_command(&self, i: usize) -> Command {
        let mut cmd = match &self.net {
            Some(net) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &net.ns(i)]).arg(bin("borgmaster"));
                c
            }
            None => Command::new(bin("borgmaster")),
        };
        cmd.args(["--id", &(i + 1).to_string(), "--peers", &self.peers(), "--listen", &self.addrs[i]])
            .args(["--poll-interval", POLL, "--cell", "test", "--default-quota", "unlimited"])
            .args(["--snapshot-every", &self.snapshot_every.to_string()])
            .arg("--insecure")
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .args(&self.extra_args);
        cmd
    }

    /// (Re)starts replica `i` (0-based) with its data dir.
    pub fn start_replica(&mut self, i: usize) {
        self.start_replica_env(i, &[]);
    }

    /// (Re)starts replica `i` with these environment variables added (e.g. `FAILPOINTS`).
    pub fn start_replica_env(&mut self, i: usize, env: &[(&str, &str)]) {
        if !self.start_replica_env_may_exit(i, env) {
            panic!(
                "borgmaster exited before listening; log: {}",
                std::fs::read_to_string(self.log(i)).unwrap_or_default()
            )
        }
    }

    /// Like [`MasterGroup::start_replica_env`], for a start the test expects may end before the
    /// replica listens (a failpoint that crashes it in the snapshot it may write at start-up):
    /// returns whether it listens. A replica that exited counts as [`MasterGroup::exited`].
    pub fn start_replica_env_may_exit(&mut self, i: usize, env: &[(&str, &str)]) -> bool {
        self.starts += 1;
        let mut cmd = self.replica_command(i);
        cmd.envs(env.iter().copied());
        // keep every start's log: append the start number
        let log = self.dir.path().join(format!("master{}-{}.log", i + 1, self.starts));
        let started = crate::try_start_listening_all(cmd, "borgmaster", &log);
        let _ = std::fs::remove_file(self.log(i));
        let _ = std::os::unix::fs::symlink(&log, self.log(i));
        let listens = started.is_ok();
        self.replicas[i] = Some(started.map_or_else(|child| child, |(child, ..)| child));
        listens
    }

    /// Starts replica `i` expecting it to refuse: waits (at most `timeout`) for it to exit and
    /// returns its exit code and its stderr.
    pub fn start_replica_expecting_exit(&mut self, i: usize, timeout: Duration) -> (Option<i32>, String) {
        self.starts += 1;
        let log = self.dir.path().join(format!("master{}-{}.log", i + 1, self.starts));
        let mut child = self
            .replica_command(i)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start borgmaster");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "replica {} still running after {timeout:?}: {}",
                    i + 1,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (status.code(), std::fs::read_to_string(&log).unwrap_or_default())
    }

    /// Process id of replica `i`, when running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.replicas[i].as_ref().map(|c| c.id())
    }

    /// Whether replica `i` was started and has exited since (reaping it); `false` while it runs
    /// or when it was never started or was killed through this group.
    pub fn exited(&mut self, i: usize) -> bool {
        let done = self.replicas[i].as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some());
        if done {
            self.replicas[i] = None;
        }
        done
    }

    /// Whether replica `i` is running (started and not killed through this group).
    pub fn running(&self, i: usize) -> bool {
        self.replicas[i].is_some()
    }

    /// The network the replicas run in, if any.
    pub fn net(&self) -> Option<&crate::netns::Network> {
        self.net.as_ref()
    }

    /// Starts one more replica (id = its index + 1) on a new port, with `--peers` naming every
    /// replica so far and itself; it waits to be added (`borgctl replicas add`). Returns its
    /// index.
    pub fn start_new_replica(&mut self) -> usize {
        self.addrs.push(format!("127.0.0.1:{}", free_port()));
        self.replicas.push(None);
        let i = self.addrs.len() - 1;
        self.start_replica(i);
        i
    }

    /// Stops replica `i` the polite way (SIGTERM) and waits until it has exited.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.replicas[i].take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }

    /// SIGKILLs replica `i` (and reaps it).
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.replicas[i].take() {
            c.kill().expect("kill -9 replica");
            let _ = c.wait();
        }
    }

    /// Every replica's address, comma-separated (what borgctl and Borglets are given).
    pub fn master_arg(&self) -> String {
        self.addrs.join(",")
    }

    /// Runs borgctl against the whole group.
    pub fn borgctl(&self, args: &[&str]) -> Output {
        self.borgctl_at(&self.master_arg(), args)
    }

    /// Runs borgctl against `master` (one replica, or a list).
    pub fn borgctl_at(&self, master: &str, args: &[&str]) -> Output {
        Command::new(bin("borgctl")).arg("--master").arg(master).args(args).output().expect("run borgctl")
    }

    /// borgctl with `-o json` against `master`, or None when it failed.
    pub fn json_at(&self, master: &str, args: &[&str]) -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.borgctl_at(master, &a);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `replicas -o json` as answered by replica `i`.
    pub fn replicas_seen_by(&self, i: usize) -> Option<Vec<Value>> {
        self.json_at(&self.addrs[i], &["replicas"]).and_then(|v| v.as_array().cloned())
    }

    /// Index (0-based) of the replica that says it leads, among the running ones.
    pub fn leader(&self) -> Option<usize> {
        (0..self.addrs.len()).filter(|i| self.replicas[*i].is_some()).find(|i| {
            self.replicas_seen_by(*i)
                .is_some_and(|rs| rs.iter().any(|r| r["id"] == (*i as u64 + 1) && r["role"] == "leader"))
        })
    }

    /// Waits until some running replica leads; returns it.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return l;
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}; logs in {}", self.dir.path().display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `cond` holds.
    pub fn wait_for(&self, timeout: Duration, what: &str, mut cond: impl FnMut(&MasterGroup) -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}; logs in {}", self.dir.path().display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Job names replica `i` knows, or None when it does not answer.
    pub fn jobs_at(&self, i: usize) -> Option<Vec<String>> {
        let v = self.json_at(&self.addrs[i], &["jobs"])?;
        Some(v.as_array()?.iter().filter_map(|j| j["name"].as_str().map(String::from)).collect())
    }

    /// Starts a real Borglet (4 cores, 8 GiB) registered with every replica; returns its
    /// machine id.
    pub fn add_borglet(&mut self) -> String {
        // unique in this process: tests run several groups at once
        static GROUPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let g = GROUPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("group-m{}-{}-{g}", self.borglets.len() + 1, std::process::id());
        let work_dir = self.dir.path().join(&id);
        let ports = crate::free_port_range(16);
        let mut cmd = Command::new(bin("borglet"));
        let listen = self.net.as_ref().map_or("127.0.0.1:0".to_string(), |n| format!("{}:0", n.outside_ip()));
        cmd.args(["--master", &self.master_arg(), "--listen", &listen, "--machine-id", &id])
            .args(["--cpu", "4000", "--ram", "8Gi", "--disk", "100Gi"])
            .args(["--port-range", &format!("{}-{}", ports.0, ports.1)])
            .arg("--insecure")
            .arg("--work-dir")
            .arg(&work_dir);
        let (child, _, _) = start_listening_http(cmd, "borglet", &self.dir.path().join(format!("{id}.log")));
        self.borglets.push((id.clone(), work_dir, child));
        id
    }
}

impl Drop for MasterGroup {
    fn drop(&mut self) {
        for (id, work_dir, child) in &mut self.borglets {
            let _ = child.kill();
            let _ = child.wait();
            kill_tasks_of(work_dir);
            remove_cgroups(id);
        }
        for i in 0..self.replicas.len() {
            self.kill9(i);
        }
        if std::thread::panicking() {
            let kept = self.dir.path().to_path_buf();
            eprintln!("master group logs kept in {}", kept.display());
            let _ = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir")).keep();
        }
    }
}
