//! End-to-end tests of a working cell: real binaries, real processes, real RocksDB, gRPC on
//! loopback.

use borg_integration_tests::{alive, bin, http_get, workspace_root, TestCell};
use std::path::Path;
use std::time::{Duration, Instant};

fn pids(tasks: &[serde_json::Value]) -> Vec<u64> {
    tasks.iter().map(|t| t["pid"].as_u64().expect("running task has a pid")).collect()
}

/// `borgctl ... | head`: a reader that goes away ends borgctl quietly, not with a panic.
#[test]
fn borgctl_ends_quietly_when_the_reader_of_its_output_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let mut child = std::process::Command::new(bin("borgctl"))
        .args(["certs", "init", "--ca"])
        .arg(&ca)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // the reader goes away before borgctl has made its CA and printed that it did
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(ca.join("ca.pem").exists(), "the work is done even though nobody reads the output");
}

#[test]
fn a_batch_job_runs_to_completion_with_exit_codes_recorded() {
    let cell = TestCell::start("batch", 1);
    cell.apply_yaml(
        "exits",
        "name: exits\nuser: alice\npriority: batch\nkind: batch\ntasks: 3\n\
         command: [/bin/sh, -c, 'echo out $BORG_TASK_INDEX; exit $BORG_TASK_INDEX']\n\
         resources: {cpu: 100m, ram: 16Mi}\nrestart: {policy: never}\n",
    );
    let tasks = cell.wait_tasks("exits", "dead");
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(t["index"], i as u64);
        assert_eq!(t["exit_code"], i as i64, "task {i}: {t}");
        assert_eq!(t["machine"], "batch-m1");
        assert_eq!(t["restarts"], 0);
    }
    let logs = cell.borgctl(&["logs", "exits", "2"]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "out 2\n");
    let jobs = cell.json(&["jobs"]);
    assert_eq!(jobs[0]["name"], "exits");
    let yaml = cell.borgctl(&["jobs", "-o", "yaml"]);
    let yaml = String::from_utf8_lossy(&yaml.stdout);
    assert!(yaml.contains("name: exits") && yaml.contains("state: done"), "{yaml}");
    assert_eq!(jobs[0]["state"], "done");
    assert_eq!(jobs[0]["tasks"], 3);
    assert_eq!(jobs[0]["kind"], "batch");
    assert_eq!(jobs[0]["priority"], 100);
}

#[test]
fn the_example_batch_job_from_configs_succeeds() {
    let cell = TestCell::start("example", 1);
    cell.apply(Path::new("configs/jobs/hello-batch.yaml"));
    let tasks = cell.wait_tasks("hello", "dead");
    assert!(tasks.iter().all(|t| t["exit_code"] == 0), "{tasks:?}");
    let out = cell.borgctl(&["logs", "hello", "1"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hello from task 1 of hello in cell test"));
}

#[test]
fn killed_service_tasks_are_gone_within_the_grace_period() {
    let cell = TestCell::start("kill", 1);
    cell.apply(Path::new("configs/jobs/web-service.yaml"));
    let running = cell.wait_tasks("web", "running");
    let pids = pids(&running);
    assert!(pids.iter().all(|&p| alive(p)), "task processes exist");
    // the example is a real HTTP service: each task answers on its own port once ready
    cell.wait_for(Duration::from_secs(30), "both web tasks ready", |c| {
        c.tasks("web").iter().all(|t| t["ready"] == true)
    });
    let ports: Vec<u64> =
        cell.tasks("web").iter().map(|t| t["ports"]["http"].as_u64().expect("an http port")).collect();
    assert_ne!(ports[0], ports[1], "two tasks on one machine listen on different ports");
    for p in ports {
        assert_eq!(http_get(&format!("127.0.0.1:{p}"), "/").0, 200);
    }
    let out = cell.borgctl(&["kill", "web"]);
    assert!(out.status.success());
    let killed_at = Instant::now();
    // grace_period in the spec is 5 s; the task exits on SIGTERM
    cell.wait_for(Duration::from_secs(5), "task processes gone within the grace period", |_| {
        pids.iter().all(|&p| !alive(p))
    });
    assert!(killed_at.elapsed() < Duration::from_secs(5));
    let tasks = cell.wait_tasks("web", "dead");
    assert!(tasks.iter().all(|t| t["reason"] == "killed"));
    let out = cell.borgctl(&["logs", "web", "0"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopping"), "task saw SIGTERM and logged it");
}

#[test]
fn kill_9_of_the_master_loses_nothing_and_disturbs_no_task() {
    let mut cell = TestCell::start("restart", 1);
    cell.apply(Path::new("configs/jobs/web-service.yaml"));
    cell.apply(Path::new("configs/jobs/hello-batch.yaml"));
    let before = pids(&cell.wait_tasks("web", "running"));
    let addr = cell.master_addr.clone();
    cell.kill9_master();
    assert!(before.iter().all(|&p| alive(p)), "tasks keep running while the master is down");
    cell.start_master(&addr);
    let jobs = cell.json(&["jobs"]);
    let names: Vec<&str> = jobs.as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hello", "web"]);
    // the batch job finishes across the restart
    cell.wait_tasks("hello", "dead");
    // a few polls later the service tasks are still the same processes, never restarted
    cell.wait_for(Duration::from_secs(10), "the new master polled the Borglet", |c| {
        c.machines()[0]["last_seen_ms"].as_i64().unwrap_or(0) > 0
    });
    let after = cell.wait_tasks("web", "running");
    assert_eq!(pids(&after), before);
    assert!(after.iter().all(|t| t["restarts"] == 0 && t["incarnation"] == 1), "{after:?}");
    assert!(before.iter().all(|&p| alive(p)));
}

#[test]
fn a_restarted_borglet_adopts_its_tasks() {
    let mut cell = TestCell::start("adopt", 1);
    cell.apply(Path::new("configs/jobs/web-service.yaml"));
    let before = pids(&cell.wait_tasks("web", "running"));
    // stop only the Borglet process, not its tasks
    let b = &mut cell.borglets[0];
    let dir = b.work_dir.clone();
    cell.kill_borglet_process(0);
    assert!(before.iter().all(|&p| alive(p)));
    cell.restart_borglet(0, &dir);
    cell.wait_for(Duration::from_secs(10), "the restarted Borglet registered", |c| {
        c.machines()[0]["address"] != serde_json::Value::Null
            && c.machines()[0]["address"] == c.borglets[0].addr.as_str()
    });
    let after = cell.wait_tasks("web", "running");
    assert_eq!(pids(&after), before, "adopted, not restarted");
}

#[test]
fn a_lost_machine_has_its_service_tasks_rescheduled_elsewhere() {
    let mut cell = TestCell::start("lost", 1);
    cell.apply(Path::new("configs/jobs/web-service.yaml"));
    let first = cell.wait_tasks("web", "running");
    assert!(first.iter().all(|t| t["machine"] == "lost-m1"));
    cell.add_borglet();
    cell.wait_for(Duration::from_secs(10), "second machine registered", |c| {
        c.machines().as_array().is_some_and(|a| a.len() == 2)
    });
    cell.kill_machine(0);
    cell.wait_for(Duration::from_secs(30), "tasks running on the other machine", |c| {
        let ts = c.tasks("web");
        ts.iter().all(|t| t["state"] == "running" && t["machine"] == "lost-m2")
    });
    let ms = cell.machines();
    assert_eq!(ms[0]["state"], "down");
    assert_eq!(ms[1]["state"], "up");
    let tasks = cell.tasks("web");
    assert!(tasks.iter().all(|t| t["incarnation"] == 2), "{tasks:?}");
    assert!(pids(&tasks).iter().all(|&p| alive(p)));
    let job = cell.json(&["job", "web"]);
    let kinds: Vec<&str> = job["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"pending"), "eviction events recorded: {kinds:?}");
}

#[test]
fn a_malformed_spec_is_rejected_with_its_line_and_nothing_is_submitted() {
    let cell = TestCell::start("malformed", 1);
    let bad = cell.dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: fine\nuser: alice\npriority: batch\nkind: batch\ntasks: -2\ncommand: [true]\nresources: {cpu: 1, ram: 1Mi}\n").unwrap();
    let out = cell.borgctl(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:5:"), "names the file and line 5: {err}");
    std::fs::write(&bad, "name: Fine\nuser: alice\npriority: batch\nkind: batch\ntasks: 1\ncommand: [true]\nresources: {cpu: 1, ram: 1Mi}\n").unwrap();
    let out = cell.borgctl(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.yaml:1:7: name:"));
    assert_eq!(cell.json(&["jobs"]), serde_json::json!([]));
}

#[test]
fn an_unreachable_master_is_a_one_line_error() {
    let out = std::process::Command::new(borg_integration_tests::bin("borgctl"))
        .args(["--master", "127.0.0.1:1", "jobs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("borgctl: cannot reach the Borgmaster at 127.0.0.1:1"), "{err}");
}

#[test]
fn dry_run_reports_unplaceable_tasks_and_submits_nothing() {
    let cell = TestCell::start("dryrun", 1);
    // 2 of the machine's 4 cores taken by a running service
    cell.apply_yaml("fits", "name: fits\nuser: a\npriority: 100\nkind: service\ntasks: 2\ncommand: [sleep, '60']\nresources: {cpu: 1, ram: 1Mi}\n");
    cell.wait_tasks("fits", "running");
    let spec = cell.dir.path().join("huge.yaml");
    std::fs::write(
        &spec,
        // the two that fit keep running, so the third stays pending (a task that ended would
        // free its core for it at once)
        "name: huge\nuser: a\npriority: 100\nkind: batch\ntasks: 3\ncommand: [sleep, '60']\nresources: {cpu: 1, ram: 1Mi}\n",
    )
    .unwrap();
    let out = cell.borgctl(&["apply", "-f", spec.to_str().unwrap(), "--dry-run", "-o", "json"]);
    assert_eq!(out.status.code(), Some(2), "exit 2 when tasks would stay pending");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["placeable"].as_u64(), v["unplaceable"].as_u64()), (Some(2), Some(1)), "{v}");
    assert!(v["why_pending"].as_str().unwrap().contains("insufficient cpu"), "{v}");
    assert_eq!(v["why_pending_reasons"]["insufficient cpu"], 1, "the reasons as data: {v}");
    // applied for real, why-pending -o json gives the counts too
    cell.apply(&spec);
    // the two that fit are pending too until their Borglet reports them running
    cell.wait_for(Duration::from_secs(20), "huge's placeable tasks running and the rest explained", |c| {
        let w = c.json(&["why-pending", "huge"]);
        w["reasons"]["insufficient cpu"] == 1 && w["pending"] == 1
    });
    let w = cell.json(&["why-pending", "huge"]);
    assert_eq!((w["pending"].as_u64(), w["machines"].as_u64()), (Some(1), Some(1)), "{w}");
    cell.borgctl(&["kill", "huge"]);
    cell.borgctl(&["delete", "huge"]);
    let names: Vec<String> = cell.json(&["jobs"]).as_array().unwrap().iter().map(|j| j["name"].to_string()).collect();
    assert_eq!(names, ["\"fits\""]);
}

#[test]
fn every_config_file_loads() {
    let dir = workspace_root().join("configs/jobs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        borg_jobspec::parse_job_spec(&p.display().to_string(), &text).unwrap_or_else(|e| panic!("{e}"));
        n += 1;
    }
    assert!(n >= 3, "configs/jobs has the batch, service and constrained examples");
}

#[test]
fn a_borglet_that_lost_its_state_file_leaves_no_orphan_processes() {
    let mut cell = TestCell::start("orphan", 1);
    let log = std::fs::read_to_string(cell.dir.path().join("orphan-m1.log")).unwrap_or_default();
    if log.contains("cgroups unavailable") {
        eprintln!("skipped: this host gives the Borglet no cgroups, so unknown processes cannot be found");
        return;
    }
    cell.apply(Path::new("configs/jobs/web-service.yaml"));
    let before = pids(&cell.wait_tasks("web", "running"));
    cell.kill_borglet_process(0);
    let dir = cell.borglets[0].work_dir.clone();
    std::fs::remove_file(dir.join("borglet-state.json")).unwrap();
    cell.restart_borglet(0, &dir);
    cell.wait_for(Duration::from_secs(10), "orphans of the unknown runs killed", |_| before.iter().all(|&p| !alive(p)));
    // the master's desired set brings the tasks back as new processes
    cell.wait_for(Duration::from_secs(20), "tasks running again", |c| {
        let ts = c.tasks("web");
        ts.iter().all(|t| t["state"] == "running" && t["pid"].as_u64().is_some_and(|p| !before.contains(&p)))
    });
}

#[test]
fn a_production_job_preempts_batch_tasks_which_return_to_pending() {
    let cell = TestCell::start("preempt", 1);
    // batch fills the 4-core machine
    cell.apply_yaml("filler", "name: filler\nuser: b\npriority: batch\nkind: service\ntasks: 4\ncommand: [sleep, '600']\nresources: {cpu: 1, ram: 16Mi}\ngrace_period: 1s\n");
    let batch_pids = pids(&cell.wait_tasks("filler", "running"));
    cell.apply_yaml("prod", "name: prod\nuser: p\npriority: production\nkind: service\ntasks: 2\ncommand: [sleep, '600']\nresources: {cpu: 1, ram: 16Mi}\n");
    cell.wait_tasks("prod", "running");
    let filler = cell.tasks("filler");
    let preempted: Vec<&serde_json::Value> = filler.iter().filter(|t| t["state"] == "pending").collect();
    assert_eq!(preempted.len(), 2, "{filler:?}");
    assert!(preempted.iter().all(|t| t["reason"] == "preempted"));
    let victims: Vec<u64> = preempted.iter().map(|t| batch_pids[t["index"].as_u64().unwrap() as usize]).collect();
    cell.wait_for(Duration::from_secs(10), "preempted processes gone", |_| victims.iter().all(|&p| !alive(p)));
    // production never preempts production: a third production job waits
    cell.apply_yaml("prod2", "name: prod2\nuser: p\npriority: 250\nkind: service\ntasks: 3\ncommand: [sleep, '600']\nresources: {cpu: 1, ram: 16Mi}\n");
    cell.wait_for(Duration::from_secs(10), "prod2 placed what it may", |c| {
        c.tasks("prod2").iter().filter(|t| t["state"] == "running").count() == 2
    });
    assert!(cell.tasks("prod").iter().all(|t| t["state"] == "running"));
    let job = cell.json(&["job", "prod2"]);
    assert!(job["why_pending"].as_str().unwrap().contains("insufficient cpu"), "{job}");
}
