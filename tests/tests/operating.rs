//! Operating a cell (issue 17): cordon, drain within disruption budgets, remove; 3 Borglets on
//! loopback running real processes.

use borg_integration_tests::{alive, bin, TestCell};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn on(cell: &TestCell, machine: &str) -> Vec<Value> {
    ["svc", "batch", "fresh"]
        .iter()
        .flat_map(|j| {
            let out = cell.borgctl(&["tasks", j, "-o", "json"]);
            serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap_or_default()
        })
        .filter(|t| t["machine"] == machine && t["state"] != "dead")
        .collect()
}

fn state_of(cell: &TestCell, machine: &str) -> String {
    cell.machines()
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == machine)
        .map_or("gone".into(), |m| m["state"].as_str().unwrap().to_string())
}

/// Samples job `job`'s unavailable tasks (not running and ready) every 50 ms from another
/// thread until stopped; returns the worst sample.
struct Sampler {
    stop: Arc<AtomicBool>,
    worst: Arc<Mutex<(usize, String)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(master: &str, job: &str) -> Sampler {
        let (stop, worst) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new((0, String::new()))));
        let (s, w, master, job) = (stop.clone(), worst.clone(), master.to_string(), job.to_string());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let out = std::process::Command::new(bin("borgctl"))
                    .args(["--master", &master, "tasks", &job, "-o", "json"])
                    .output()
                    .expect("borgctl");
                if let Ok(Value::Array(ts)) = serde_json::from_slice::<Value>(&out.stdout) {
                    let down = ts.iter().filter(|t| !(t["state"] == "running" && t["ready"] == true)).count();
                    let mut w = w.lock().unwrap();
                    if down > w.0 {
                        *w = (down, serde_json::to_string(&ts).unwrap());
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Sampler { stop, worst, thread: Some(thread) }
    }

    fn finish(mut self) -> (usize, String) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.worst.lock().unwrap().clone()
    }
}

const SVC: &str = "name: svc\nuser: alice\npriority: production\nkind: service\ntasks: TASKS\n\
                   command: [/bin/sh, -c, 'sleep 1000']\nresources: {cpu: 100m, ram: 16Mi}\n\
                   grace_period: 1s\nupdate: {max_unavailable: 1}\n";

#[test]
fn drain_moves_tasks_within_the_budget_cordon_blocks_and_remove_refuses_a_busy_machine() {
    let mut cell = TestCell::start("drain", 1);
    // m1 gets two of svc's tasks and both batch tasks; the third svc task lands elsewhere
    cell.apply_yaml("svc", &SVC.replace("TASKS", "2"));
    cell.apply_yaml(
        "batch",
        "name: batch\nuser: alice\npriority: batch\nkind: service\ntasks: 2\n\
         command: [/bin/sh, -c, 'sleep 1000']\nresources: {cpu: 100m, ram: 16Mi}\ngrace_period: 1s\n",
    );
    cell.wait_tasks("svc", "running");
    cell.wait_tasks("batch", "running");
    cell.add_borglet();
    cell.add_borglet();
    cell.wait_for(Duration::from_secs(30), "3 machines up", |c| {
        c.machines().as_array().is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["state"] == "up"))
    });
    cell.apply_yaml("svc", &SVC.replace("TASKS", "3"));
    cell.wait_for(Duration::from_secs(30), "svc's third task running", |c| {
        let ts = c.tasks("svc");
        ts.len() == 3 && ts.iter().all(|t| t["state"] == "running" && t["ready"] == true)
    });
    assert_eq!(on(&cell, "drain-m1").len(), 4, "{:?} {:?}", cell.tasks("svc"), cell.tasks("batch"));
    let old: Vec<u64> = on(&cell, "drain-m1").iter().filter_map(|t| t["pid"].as_u64()).collect();

    // drain m1: never more than one svc task unavailable
    let sampler = Sampler::start(&cell.master_addr, "svc");
    let out = cell.borgctl(&["machines", "drain", "drain-m1", "--wait", "--timeout", "60"]);
    let (worst, sample) = sampler.finish();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("drained in"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(worst <= 1, "{worst} svc tasks unavailable at once: {sample}");
    assert_eq!(state_of(&cell, "drain-m1"), "drained");
    assert!(on(&cell, "drain-m1").is_empty());
    cell.wait_for(Duration::from_secs(30), "the batch tasks rescheduled elsewhere", |c| {
        c.tasks("batch").iter().all(|t| t["state"] == "running" && t["machine"] != "drain-m1")
    });
    let events = cell.json(&["events", "batch"]);
    assert!(
        events.as_array().unwrap().iter().any(|e| e["detail"].as_str().unwrap_or("").starts_with("evicted: drain")),
        "{events}"
    );
    cell.wait_for(Duration::from_secs(30), "the old processes on m1 are gone", |_| old.iter().all(|&p| !alive(p)));
    let m = cell.json(&["events"]);
    let kinds: Vec<&str> = m
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["machine"] == "drain-m1")
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"draining") && kinds.contains(&"drained"), "{kinds:?}");

    // cordon m2: a new job goes to m3 only; uncordon brings m2 back
    let out = cell.borgctl(&["machines", "cordon", "drain-m2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(state_of(&cell, "drain-m2"), "cordoned");
    cell.apply_yaml(
        "fresh",
        "name: fresh\nuser: alice\npriority: batch\nkind: service\ntasks: 3\n\
         command: [/bin/sh, -c, 'sleep 1000']\nresources: {cpu: 100m, ram: 16Mi}\ngrace_period: 1s\n",
    );
    let fresh = cell.wait_tasks("fresh", "running");
    assert!(fresh.iter().all(|t| t["machine"] == "drain-m3"), "{fresh:?}");
    assert!(cell.borgctl(&["machines", "uncordon", "drain-m2", "drain-m1"]).status.success());
    assert_eq!(state_of(&cell, "drain-m2"), "up");

    // drain m2 and m3 at once: every svc task moves to m1, one at a time
    let sampler = Sampler::start(&cell.master_addr, "svc");
    let out = cell.borgctl(&["machines", "drain", "drain-m2", "drain-m3", "--wait", "--timeout", "60"]);
    let (worst, sample) = sampler.finish();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(worst <= 1, "{worst} svc tasks unavailable at once draining two machines: {sample}");
    assert!(cell.tasks("svc").iter().all(|t| t["machine"] == "drain-m1"));

    // remove: refused while a machine holds tasks, and a drained one is gone
    assert!(cell.borgctl(&["machines", "uncordon", "drain-m3"]).status.success());
    cell.apply_yaml("svc", &SVC.replace("TASKS", "4"));
    cell.wait_for(Duration::from_secs(30), "a task on m3 again", |c| !on(c, "drain-m3").is_empty());
    let out = cell.borgctl(&["machines", "remove", "drain-m3"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still holds") && err.contains("borgctl machines drain drain-m3"), "{err}");
    let out = cell.borgctl(&["machines", "remove", "drain-m2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(state_of(&cell, "drain-m2"), "gone");
    // a rolling restart of one task: a new incarnation, the others untouched
    let before: Vec<Value> = cell.tasks("svc");
    let out = cell.borgctl(&["restart", "svc", "--index", "0"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("restarting 1 tasks"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cell.wait_for(Duration::from_secs(30), "task 0 restarted and running", |c| {
        let t = &c.tasks("svc")[0];
        t["state"] == "running" && t["incarnation"].as_u64() > before[0]["incarnation"].as_u64()
    });
    assert_eq!(cell.tasks("svc")[1]["incarnation"], before[1]["incarnation"]);
    // a typo names the machine and changes nothing
    let out = cell.borgctl(&["machines", "cordon", "drain-m1", "drain-mX"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no machine named \"drain-mX\""));
    assert_eq!(state_of(&cell, "drain-m1"), "up");
}

#[test]
fn events_watch_sees_new_applies_once_each_across_kill_9_of_the_leader() {
    use borg_integration_tests::group::MasterGroup;
    let mut g = MasterGroup::start(3, 0);
    g.wait_leader(Duration::from_secs(30));
    let dir = g.dir.path().to_path_buf();
    let apply = |g: &MasterGroup, name: &str| {
        let p = sleeper_spec(&dir, name);
        g.wait_for(Duration::from_secs(30), "the apply is acknowledged", |g| {
            g.borgctl(&["apply", "-f", p.to_str().unwrap()]).status.success()
        });
    };
    apply(&g, "before");
    let w = Output::start(&g.master_arg(), &["events", "--watch", "-o", "json"]);
    let submitted = |job: &'static str| move |e: &Value| e["job"] == job && e["kind"] == "submitted";
    g.wait_for(Duration::from_secs(30), "the recent events first", |_| w.count(submitted("before")) == 1);
    apply(&g, "a");
    g.wait_for(Duration::from_secs(30), "an apply made after the watch started", |_| w.count(submitted("a")) == 1);
    let leader = g.wait_leader(Duration::from_secs(30));
    g.kill9(leader);
    apply(&g, "b");
    g.wait_for(Duration::from_secs(60), "an apply through the new leader", |_| w.count(submitted("b")) == 1);
    apply(&g, "c");
    g.wait_for(Duration::from_secs(30), "and the next", |_| w.count(submitted("c")) == 1);
    // resumed from the last index: nothing seen twice
    for job in ["before", "a", "b"] {
        assert_eq!(w.count(|e| e["job"] == job && e["kind"] == "submitted"), 1, "{job}");
    }
    let indices: Vec<u64> = w.json_lines().iter().filter_map(|e| e["log_index"].as_u64()).collect();
    assert!(indices.windows(2).all(|p| p[0] <= p[1]), "in log order: {indices:?}");
}

/// Writes `<dir>/<name>.yaml`: a one-task batch-band service of alice's that sleeps; its path.
fn sleeper_spec(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: {name}\nuser: alice\npriority: batch\nkind: service\ntasks: 1\n\
             command: [/bin/sh, -c, 'sleep 1000']\nresources: {{cpu: 10m, ram: 1Mi}}\n"
        ),
    )
    .unwrap();
    p
}

/// The sandbox of run 1 of `job/index` on the cell's first Borglet.
fn sandbox(cell: &TestCell, job: &str, index: u32) -> std::path::PathBuf {
    cell.borglets[0].work_dir.join("tasks").join(format!("{job}.{index}.1"))
}

/// A borgctl process whose stdout is collected as it comes.
struct Output {
    child: std::process::Child,
    text: Arc<Mutex<String>>,
    /// The thread copying the child's stdout into `text`; joined once the child has ended, so
    /// `text` then holds everything it wrote.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Output {
    fn start(master: &str, args: &[&str]) -> Output {
        use std::io::Read;
        let mut child = std::process::Command::new(bin("borgctl"))
            .args(["--master", master])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start borgctl");
        let mut out = child.stdout.take().unwrap();
        let text = Arc::new(Mutex::new(String::new()));
        let t = text.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                t.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Output { child, text, reader: Some(reader) }
    }

    fn has(&self, s: &str) -> bool {
        self.text.lock().unwrap().contains(s)
    }

    /// The complete lines so far, each parsed as JSON (`-o json` streams).
    fn json_lines(&self) -> Vec<Value> {
        let text = self.text.lock().unwrap().clone();
        let complete = text.rsplit_once('\n').map_or("", |(done, _)| done).to_string();
        complete.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect()
    }

    fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.json_lines().iter().filter(|v| pred(v)).count()
    }

    /// Waits for the process to end by itself; its exit status.
    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = std::time::Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // the pipe may still hold its last lines: read them all before answering
                if let Some(r) = self.reader.take() {
                    r.join().expect("the stdout reader");
                }
                return s;
            }
            assert!(
                start.elapsed() < timeout,
                "borgctl still running after {timeout:?}: {}",
                self.text.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn logs_follow_shows_what_is_written_after_it_started_and_ends_with_the_task() {
    let cell = TestCell::start("follow", 1);
    // each task writes a line, waits for a file in its sandbox, writes another and ends
    cell.apply_yaml(
        "talker",
        "name: talker\nuser: alice\npriority: batch\nkind: batch\ntasks: 2\n\
         command: [/bin/sh, -c, 'echo before $BORG_TASK_INDEX; while [ ! -f go ]; do sleep 0.05; done; echo after $BORG_TASK_INDEX; echo partial']\n\
         resources: {cpu: 100m, ram: 16Mi}\n",
    );
    cell.wait_tasks("talker", "running");
    let mut one = Output::start(&cell.master_addr, &["logs", "talker", "0", "-f"]);
    let mut all = Output::start(&cell.master_addr, &["logs", "talker", "-f", "--all", "--tail", "5"]);
    cell.wait_for(Duration::from_secs(30), "the followers show the first lines", |_| {
        one.has("before 0") && all.has("[0] before 0") && all.has("[1] before 1")
    });
    assert!(!one.has("after"), "nothing is written before the go file");
    std::fs::write(sandbox(&cell, "talker", 0).join("go"), "").unwrap();
    std::fs::write(sandbox(&cell, "talker", 1).join("go"), "").unwrap();
    assert!(one.wait(Duration::from_secs(30)).success(), "logs -f ends when the task ends");
    assert!(all.wait(Duration::from_secs(30)).success());
    assert_eq!(*one.text.lock().unwrap(), "before 0\nafter 0\npartial\n");
    let text = all.text.lock().unwrap().clone();
    for line in ["[0] before 0\n", "[0] after 0\n", "[1] after 1\n", "[1] partial\n"] {
        assert!(text.contains(line), "{line:?} in {text:?}");
    }
    // --tail N: the last N lines
    let out = cell.borgctl(&["logs", "talker", "1", "--tail", "2"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "after 1\npartial\n");
}

#[test]
fn exec_runs_as_the_task_in_its_cgroup_with_stdin_and_returns_its_code() {
    let cell = TestCell::start("exec", 1);
    cell.apply_yaml(
        "box",
        "name: box\nuser: alice\npriority: batch\nkind: service\ntasks: 1\n\
         command: [/bin/sh, -c, 'echo ready; sleep 1000']\nresources: {cpu: 100m, ram: 16Mi}\n",
    );
    let t = cell.wait_tasks("box", "running");
    let pid = t[0]["pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap().split_whitespace().nth(1).unwrap().to_string();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let out = cell.borgctl(&[
        "exec",
        "box",
        "0",
        "--",
        "sh",
        "-c",
        "id -u; cat /proc/self/cgroup; pwd; echo $BORG_JOB; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "the command's exit code: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(uid.as_str()), "as the task's uid: {text}");
    // (on a machine without cgroup support the task has none: nothing to compare)
    let ours: Vec<&str> = cgroup.lines().filter(|l| l.contains("borg-")).collect();
    for l in ours {
        assert!(text.contains(l), "in the task's cgroup {l:?}: {text}");
    }
    assert!(text.contains(&format!("{}\n", sandbox(&cell, "box", 0).display())), "in its sandbox: {text}");
    assert!(text.ends_with("box\n"), "with its environment: {text}");
    // stdin streams through; stderr comes back as stderr
    let mut child = std::process::Command::new(bin("borgctl"))
        .args(["--master", &cell.master_addr, "exec", "box", "0", "--", "sh", "-c", "tr a-z A-Z; echo oops >&2"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello from stdin\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO FROM STDIN\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    // recorded: who ran what
    let events = cell.json(&["events", "box"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "exec" && e["detail"].as_str().unwrap().contains("\"tr a-z A-Z; echo oops >&2\"")),
        "{events}"
    );
    // a task that is not running says so
    let out = cell.borgctl(&["exec", "box", "7", "--", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no task box/7"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_borglet_upgraded_to_a_binary_at_another_path_adopts_its_tasks() {
    let mut cell = TestCell::start("upgrade", 1);
    cell.apply_yaml("svc", &SVC.replace("TASKS", "2"));
    let before = cell.wait_tasks("svc", "running");
    let pids: Vec<u64> = before.iter().filter_map(|t| t["pid"].as_u64()).collect();
    // "a new build": the binary installed under another path
    let new = cell.dir.path().join("borglet-v2");
    std::fs::copy(bin("borglet"), &new).unwrap();
    let dir = cell.borglets[0].work_dir.clone();
    cell.kill_borglet_process(0);
    cell.restart_borglet_from(0, &dir, &new);
    cell.wait_for(Duration::from_secs(30), "the new Borglet registered", |c| {
        c.machines()[0]["address"] == c.borglets[0].addr.as_str()
    });
    let exe = std::fs::read_link(format!("/proc/{}/exe", cell.borglet_pid(0).unwrap())).unwrap();
    assert_eq!(exe, new, "the running Borglet is the new binary");
    // a few polls later: the same processes, never restarted
    let seen = cell.machines()[0]["last_seen_ms"].as_i64().unwrap_or(0);
    cell.wait_for(Duration::from_secs(30), "the master polled the new Borglet", |c| {
        c.machines()[0]["last_seen_ms"].as_i64().unwrap_or(0) > seen
    });
    let after = cell.wait_tasks("svc", "running");
    assert_eq!(after.iter().filter_map(|t| t["pid"].as_u64()).collect::<Vec<_>>(), pids, "adopted, same pids");
    assert!(after.iter().all(|t| t["restarts"] == 0 && t["incarnation"] == 1), "{after:?}");
    assert!(pids.iter().all(|&p| alive(p)));
}

#[test]
fn a_rolling_restart_of_three_replicas_under_apply_load_loses_no_write_and_restarts_no_task() {
    use borg_integration_tests::group::MasterGroup;
    // snapshots every 20 entries: restarted replicas load one and replay the log after it
    let mut g = MasterGroup::start(3, 20);
    g.add_borglet();
    let master = g.master_arg();
    let dir = g.dir.path().to_path_buf();
    let apply = move |master: &str, name: &str| {
        let p = sleeper_spec(&dir, name);
        std::process::Command::new(bin("borgctl"))
            .args(["--master", master, "apply", "-f", p.to_str().unwrap()])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let apply2 = apply.clone();
    g.wait_for(Duration::from_secs(30), "svc applied", |_| apply2(&master, "svc"));
    let tasks = |g: &MasterGroup| g.json_at(&master, &["tasks", "svc"]).and_then(|v| v.as_array().cloned());
    g.wait_for(Duration::from_secs(30), "svc running", |g| {
        tasks(g).is_some_and(|ts| ts.iter().all(|t| t["state"] == "running"))
    });
    let pids: Vec<u64> = tasks(&g).unwrap().iter().filter_map(|t| t["pid"].as_u64()).collect();
    // a steady apply load through the whole group
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let load = {
        let (stop, acked, master) = (stop.clone(), acked.clone(), master.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("load-{i}");
                if apply(&master, &name) {
                    acked.lock().unwrap().push(name);
                }
                i += 1;
            }
        })
    };
    let has_all = |g: &MasterGroup, i: usize, want: &[String]| {
        g.jobs_at(i).is_some_and(|jobs| want.iter().all(|w| jobs.contains(w)))
    };
    for i in 0..3 {
        g.wait_for(Duration::from_secs(30), "some load acknowledged before this restart", |_| {
            acked.lock().unwrap().len() > 5 * (i + 1)
        });
        g.stop(i);
        g.start_replica(i);
        // caught up: it has every write acknowledged before it came back
        let want = acked.lock().unwrap().clone();
        g.wait_for(Duration::from_secs(60), "the restarted replica caught up", |g| has_all(g, i, &want));
    }
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let want = acked.lock().unwrap().clone();
    assert!(want.len() >= 15, "the load ran throughout: {} applies acknowledged", want.len());
    for i in 0..3 {
        g.wait_for(Duration::from_secs(60), "every acknowledged write on every replica", |g| has_all(g, i, &want));
    }
    let after = tasks(&g).unwrap();
    assert_eq!(after.iter().filter_map(|t| t["pid"].as_u64()).collect::<Vec<_>>(), pids, "no task restarted");
    assert!(after.iter().all(|t| t["restarts"] == 0 && t["incarnation"] == 1), "{after:?}");
}
