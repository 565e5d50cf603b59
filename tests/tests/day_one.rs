//! What a new user hit on the first day (issue 14): a second Borglet for a machine that killed the
//! first one's tasks, a Borglet restart that cost its machine its tasks.

use borg_integration_tests::{alive, TestCell};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn pids(tasks: &[serde_json::Value]) -> Vec<u64> {
    tasks.iter().map(|t| t["pid"].as_u64().expect("pid")).collect()
}

/// A second Borglet for the same machine (same --machine-id, other work dir; or the same work
/// dir) refuses to start, naming the pid of the one that runs, and kills nothing, even when it
/// points at a master that is not there.
#[test]
fn a_second_borglet_for_a_machine_refuses_to_start_and_kills_nothing() {
    let cell = TestCell::start("second", 1);
    cell.apply(Path::new("configs/jobs/web-service.yaml"));
    let before = pids(&cell.wait_tasks("web", "running"));
    let holder = cell.borglet_pid(0).expect("borglet runs");
    let other_dir = cell.dir.path().join("other-work-dir");
    let run = |machine: &str, work_dir: &Path, master: &str| {
        Command::new(borg_integration_tests::bin("borglet"))
            .args(["--master", master, "--listen", "127.0.0.1:0", "--machine-id", machine, "--insecure"])
            .arg("--work-dir")
            .arg(work_dir)
            .output()
            .expect("run borglet")
    };
    for (machine, dir, master) in [
        ("second-m1", other_dir.as_path(), "127.0.0.1:1"),
        ("second-m1", other_dir.as_path(), cell.master_addr.as_str()),
        ("another-machine", cell.borglets[0].work_dir.as_path(), "127.0.0.1:1"),
    ] {
        let out = run(machine, dir, master);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a second Borglet for {machine} in {} started", dir.display());
        assert!(err.contains(&format!("another Borglet (pid {holder})")), "names the holder: {err}");
        assert!(err.contains("stop it first"), "says what to do: {err}");
    }
    assert!(before.iter().all(|&p| alive(p)), "the running Borglet's tasks are untouched");
    let after = cell.wait_tasks("web", "running");
    assert_eq!(pids(&after), before);
    assert!(after.iter().all(|t| t["restarts"] == 0));
}

/// A Borglet that lost its state file and cannot reach its master does not reap the processes
/// it finds in its cgroups: only once the master tells it what to run.
#[test]
fn a_borglet_that_cannot_reach_its_master_reaps_nothing() {
    let mut cell = TestCell::start("noreap", 1);
    cell.apply(Path::new("configs/jobs/web-service.yaml"));
    let before = pids(&cell.wait_tasks("web", "running"));
    cell.kill_borglet_process(0);
    let dir = cell.borglets[0].work_dir.clone();
    std::fs::remove_file(dir.join("borglet-state.json")).expect("state file");
    let log = cell.dir.path().join("noreap-lost.log");
    let mut child = Command::new(borg_integration_tests::bin("borglet"))
        .args(["--master", "127.0.0.1:1", "--listen", "127.0.0.1:0", "--machine-id", "noreap-m1", "--insecure"])
        .arg("--work-dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("borglet");
    cell.wait_for(Duration::from_secs(20), "the Borglet tried its master twice", |_| {
        std::fs::read_to_string(&log).unwrap_or_default().matches("cannot register").count() >= 2
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(before.iter().all(|&p| alive(p)), "{}", std::fs::read_to_string(&log).unwrap_or_default());
}

/// Ten kill -9 + restart cycles of a Borglet while jobs are being applied to its machine: the
/// machine is never marked down, and its service tasks are the same processes with 0 restarts.
/// Runs at the production poll interval (1 s, so the down-grace is 5 s); each outage lasts about
/// a second, during which the applies wake the poller several times (the old rule, 5 failed
/// attempts, marked the machine down).
#[test]
fn a_borglet_restarted_under_apply_load_keeps_its_machine_and_tasks() {
    let mut cell = TestCell::start_polling("restarts", 1, "1s");
    cell.apply(Path::new("configs/jobs/web-service.yaml"));
    let before = pids(&cell.wait_tasks("web", "running"));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, master) = (stop.clone(), cell.master_addr.clone());
        let dir = cell.dir.path().to_path_buf();
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let spec = dir.join(format!("load-{n}.yaml"));
                std::fs::write(&spec, format!("name: load-{n}\nuser: u\npriority: batch\nkind: batch\ntasks: 1\ncommand: [true]\nresources: {{cpu: 10m, ram: 1Mi}}\n")).expect("spec");
                let _ = Command::new(borg_integration_tests::bin("borgctl"))
                    .args(["--master", &master, "apply", "-f"])
                    .arg(&spec)
                    .output();
                n += 1;
            }
            n
        })
    };
    let dir = cell.borglets[0].work_dir.clone();
    for cycle in 0..10 {
        cell.kill_borglet_process(0);
        // the length of the outage (a binary swapped in), not a synchronization: about a second,
        // in which the applies wake the machine's poller many times
        std::thread::sleep(Duration::from_millis(1000));
        cell.restart_borglet(0, &dir);
        let addr = cell.borglets[0].addr.clone();
        cell.wait_for(Duration::from_secs(20), &format!("cycle {cycle}: the restarted Borglet polled"), |c| {
            let m = &c.machines()[0];
            m["address"] == addr.as_str() && m["state"] == "up"
        });
        let seen = cell.machines()[0]["last_seen_ms"].as_i64().unwrap_or(0);
        cell.wait_for(Duration::from_secs(20), &format!("cycle {cycle}: a poll at the new address"), |c| {
            c.machines()[0]["last_seen_ms"].as_i64().unwrap_or(0) > seen
        });
    }
    stop.store(true, Ordering::Relaxed);
    let applied = load.join().expect("load thread");
    assert!(applied > 0, "jobs were applied during the restarts");
    let log = cell.master_log();
    assert!(!log.contains("marking machine down"), "the machine was marked down:\n{log}");
    let after = cell.wait_tasks("web", "running");
    assert_eq!(pids(&after), before, "same processes");
    assert!(after.iter().all(|t| t["restarts"] == 0 && t["incarnation"] == 1), "{after:?}");
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in metrics"))
}

/// Tasks inside allocs are not charged again: `cell usage`, `machines`, `top jobs`, /metrics
/// and the status page give the same allocation, and allocated + free = capacity in each.
#[test]
fn allocs_are_charged_once_and_every_view_adds_up() {
    let cell = TestCell::start_with("charge", 1, true);
    for f in ["pool-alloc-set", "pool-worker", "node-agent"] {
        cell.apply(Path::new(&format!("configs/jobs/{f}.yaml")));
    }
    cell.wait_tasks("pool-worker", "running");
    cell.wait_tasks("node-agent", "running");
    // 2 allocs of 1 core / 256 MiB, the node agent's 50m / 16 MiB; the workers run inside
    let (cpu, ram) = (2050u64, (512u64 + 16) << 20);
    let u = cell.json(&["cell", "usage"]);
    assert_eq!(u["allocated"]["cpu_millis"], cpu, "{u}");
    assert_eq!(u["allocated"]["ram_bytes"], ram, "{u}");
    for dim in ["cpu_millis", "ram_bytes", "disk_bytes"] {
        let (a, f, c) = (u["allocated"][dim].as_u64(), u["free"][dim].as_u64(), u["capacity"][dim].as_u64());
        assert_eq!(a.unwrap() + f.unwrap(), c.unwrap(), "{dim}: allocated + free = capacity: {u}");
    }
    let m = &cell.json(&["machines"])[0];
    assert_eq!(m["allocated"], u["allocated"], "machines agrees with cell usage");
    let jobs = cell.json(&["top", "jobs"]);
    let sum: u64 = jobs.as_array().unwrap().iter().map(|j| j["allocated"]["cpu_millis"].as_u64().unwrap()).sum();
    assert_eq!(sum, cpu, "top jobs adds up to the same: {jobs}");
    let (code, text) = borg_integration_tests::http_get(cell.master_http.as_ref().unwrap(), "/metrics");
    assert_eq!(code, 200);
    let alloc: f64 = ["free", "batch", "production", "monitoring"]
        .iter()
        .map(|b| metric(&text, &format!("borg_cell_allocated_cpu_cores{{band=\"{b}\"}}")))
        .sum();
    assert!((alloc - 2.05).abs() < 1e-9, "metrics allocated {alloc}");
    let free = metric(&text, "borg_cell_free_cpu_cores");
    assert!((alloc + free - metric(&text, "borg_cell_capacity_cpu_cores")).abs() < 1e-9);
}

/// `quota set` changes only the dimensions it names (the README's walk-through sets cpu and ram
/// and must leave disk as it was); a refusal says how to fix it; the status page shows the
/// limit, use and headroom.
#[test]
fn quota_set_keeps_unnamed_dimensions_and_the_status_page_shows_quotas() {
    let cell = TestCell::start_full("quota", 1, true, "zero");
    let out = cell.borgctl(&["quota", "set", "alice", "batch", "cpu=2", "ram=1Gi"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = cell.json(&["quota", "get", "alice"]);
    let batch = rows.as_array().unwrap().iter().find(|r| r["band"] == "batch").unwrap().clone();
    assert_eq!(batch["limit"]["cpu_millis"], 2000);
    assert_eq!(batch["limit"]["ram_bytes"], 1u64 << 30);
    assert_eq!(batch["limit"]["disk_bytes"], 0, "disk keeps the cell default (zero here)");
    // hello needs 3 x 100Mi of disk: refused, and the refusal gives the fix
    let spec = borg_integration_tests::workspace_root().join("configs/jobs/hello-batch.yaml");
    let out = cell.borgctl(&["apply", "-f", spec.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("borgctl quota set alice batch disk="), "{err}");
    let fix: Vec<&str> = err.split('`').nth(1).unwrap().split_whitespace().skip(1).collect();
    let out = cell.borgctl(&fix);
    assert!(out.status.success(), "the suggested fix {fix:?} runs: {}", String::from_utf8_lossy(&out.stderr));
    let out = cell.borgctl(&["apply", "-f", spec.to_str().unwrap()]);
    assert!(out.status.success(), "admitted after the fix: {}", String::from_utf8_lossy(&out.stderr));
    let rows = cell.json(&["quota", "get", "alice"]);
    let batch = rows.as_array().unwrap().iter().find(|r| r["band"] == "batch").unwrap().clone();
    assert_eq!(batch["limit"]["cpu_millis"], 2000, "cpu unchanged by a disk-only set: {batch}");
    let (_, page) = borg_integration_tests::http_get(cell.master_http.as_ref().unwrap(), "/");
    let quotas = page.split("<h2>Quotas</h2>").nth(1).unwrap().split("<h2>").next().unwrap();
    assert!(quotas.contains("<td>alice</td><td>batch</td><td class=num>2.00</td>"), "{quotas}");
    assert!(!quotas.contains("No quotas are set"), "{quotas}");
}

/// A task that goes over its RAM request is killed by the kernel (its cgroup's memory limit) and
/// dies with reason `oom: ...` naming the limit, not `killed by signal 9`; events and both
/// /metrics count it.
#[test]
fn an_oom_kill_reads_as_oom_with_the_limit() {
    let cell = TestCell::start_with("oom", 1, true);
    let log = std::fs::read_to_string(cell.dir.path().join("oom-m1.log")).unwrap_or_default();
    if log.contains("cgroups unavailable") {
        eprintln!("skipped: this host gives the Borglet no cgroups, so no memory limit is enforced");
        return;
    }
    // tail looks for the last line of an endless file with none: it buffers without bound
    cell.apply_yaml("hog", "name: hog\nuser: u\npriority: batch\nkind: batch\ntasks: 1\ncommand: [tail, /dev/zero]\nresources: {cpu: 100m, ram: 16Mi}\nrestart: {policy: never}\n");
    let t = &cell.wait_tasks("hog", "dead")[0];
    let reason = t["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("oom: exceeded its memory limit of 16Mi"), "{t}");
    let job = cell.json(&["job", "hog"]);
    let events = job["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["kind"] == "dead" && e["detail"].as_str().unwrap().starts_with("oom")), "{job}");
    let (_, m) = borg_integration_tests::http_get(cell.master_http.as_ref().unwrap(), "/metrics");
    assert_eq!(metric(&m, "borg_task_oom_kills_total"), 1.0);
    let (_, b) = borg_integration_tests::http_get(cell.borglets[0].http.as_ref().unwrap(), "/metrics");
    assert_eq!(metric(&b, "borg_borglet_oom_kills_total{job=\"hog\"}"), 1.0);
}

/// borgctl pointed at the wrong port says which port it reached and what to use instead.
#[test]
fn borgctl_at_a_borglet_or_http_port_says_so() {
    let cell = TestCell::start_with("ports", 1, true);
    let http = cell.master_http.clone().unwrap();
    let borglet = cell.borglets[0].addr.clone();
    let ctl = |master: &str, extra: &[&str]| {
        let out = Command::new(borg_integration_tests::bin("borgctl"))
            .args(["--master", master])
            .args(extra)
            .arg("jobs")
            .output()
            .expect("borgctl");
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = ctl(&borglet, &[]);
    assert!(err.contains("probably a Borglet's --listen port"), "{err}");
    assert!(err.contains("borgmaster listening on ADDR"), "{err}");
    let err = ctl(&http, &[]);
    assert!(err.contains("probably the master's --http port"), "{err}");
    // with credentials, TLS meets plain HTTP
    let ca = cell.dir.path().join("ca");
    let creds = cell.dir.path().join("creds");
    let bin = borg_integration_tests::bin("borgctl");
    let run = |args: &[&str]| assert!(Command::new(&bin).args(args).output().unwrap().status.success());
    run(&["certs", "init", "--ca", ca.to_str().unwrap()]);
    run(&[
        "certs",
        "issue",
        "--ca",
        ca.to_str().unwrap(),
        "--role",
        "admin",
        "--name",
        "a",
        "--out",
        creds.to_str().unwrap(),
    ]);
    let err = ctl(&http, &["--credentials", creds.to_str().unwrap()]);
    assert!(err.contains("answers without TLS") && err.contains("--listen address"), "{err}");
}

/// `apply -f -` reads the spec from stdin; its problems are labelled `<stdin>` with line and
/// field, and a bad count says what is allowed.
#[test]
fn apply_reads_a_spec_from_stdin() {
    use std::io::Write;
    let cell = TestCell::start("stdin", 1);
    let apply = |yaml: &str| {
        let mut child = Command::new(borg_integration_tests::bin("borgctl"))
            .args(["--master", &cell.master_addr, "apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("borgctl");
        child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let good = "name: piped\nuser: u\npriority: batch\nkind: batch\ntasks: 1\ncommand: [true]\nresources: {cpu: 10m, ram: 1Mi}\n";
    let out = apply(good);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    cell.wait_tasks("piped", "dead");
    let out = apply(&good.replace("tasks: 1", "tasks: three"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("<stdin>:5:8: tasks: \"three\" is not a number"), "{err}");
}

/// Jobs go away: `kill` of a finished job changes nothing and says so, `delete` removes dead
/// jobs and refuses live ones; `events` of an unknown job is an error like other verbs.
#[test]
fn finished_jobs_are_deleted_and_kill_leaves_them_done() {
    let cell = TestCell::start("delete", 1);
    cell.apply(Path::new("configs/jobs/hello-batch.yaml"));
    cell.apply(Path::new("configs/jobs/web-service.yaml"));
    cell.wait_tasks("hello", "dead");
    cell.wait_tasks("web", "running");
    let out = cell.borgctl(&["kill", "hello"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("had already finished"), "{out:?}");
    let job = |name: &str| cell.json(&["jobs"]).as_array().unwrap().iter().find(|j| j["name"] == name).cloned();
    assert_eq!(job("hello").unwrap()["state"], "done", "a kill does not turn done into killed");
    let out = cell.borgctl(&["delete", "web"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kill it first (`borgctl kill web`)"));
    let out = cell.borgctl(&["kill", "web"]);
    assert!(out.status.success());
    let out = cell.borgctl(&["delete", "hello", "web"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(job("hello").is_none() && job("web").is_none(), "{}", cell.json(&["jobs"]));
    let out = cell.borgctl(&["delete", "hello"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job named \"hello\""));
    let out = cell.borgctl(&["events", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job named \"nope\""));
}

/// A daemon that cannot bind its port says so in one line and why, with no backtrace, even with
/// RUST_BACKTRACE set.
#[test]
fn a_taken_port_is_a_clear_error_without_a_backtrace() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(borg_integration_tests::bin("borgmaster"))
        .args(["--listen", &addr, "--insecure", "--data-dir"])
        .arg(dir.path())
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains(&format!("borgmaster: binding --listen {addr}: Address already in use")), "{err}");
    assert!(err.contains("still running (or still shutting down)"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");
}
