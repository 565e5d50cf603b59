//! The batch user's bargain (issue 19): dependencies between jobs (`after`); real cell, real
//! processes.

use borg_integration_tests::TestCell;
use serde_json::Value;

fn batch(name: &str, after: &[&str], command: &str) -> String {
    let after = if after.is_empty() { String::new() } else { format!("after: [{}]\n", after.join(", ")) };
    format!(
        "name: {name}\nuser: alice\npriority: batch\nkind: batch\ntasks: 1\n{after}\
         command: [/bin/sh, -c, '{command}']\nresources: {{cpu: 100m, ram: 16Mi}}\n"
    )
}

/// ms of job `job`'s first event of `kind`.
fn at(events: &Value, job: &str, kind: &str) -> i64 {
    events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["job"] == job && e["kind"] == kind)
        .and_then(|e| e["time_ms"].as_i64())
        .unwrap_or_else(|| panic!("no {kind} event of {job}: {events}"))
}

#[test]
fn a_chain_of_jobs_runs_in_order_and_a_failure_fails_the_rest_with_reasons() {
    let cell = TestCell::start("deps", 1);
    cell.apply_yaml("a", &batch("a", &[], "while [ ! -f go ]; do sleep 0.05; done"));
    cell.apply_yaml("b", &batch("b", &["a"], "true"));
    cell.apply_yaml("c", &batch("c", &["b"], "true"));
    cell.wait_tasks("a", "running");
    let b = cell.json(&["job", "b"]);
    assert_eq!(b["why_pending"], "waiting for job a (after)", "{b}");
    assert_eq!(cell.tasks("b")[0]["state"], "pending");
    let sandbox = cell.borglets[0].work_dir.join("tasks").join("a.0.1");
    std::fs::write(sandbox.join("go"), "").unwrap();
    for j in ["a", "b", "c"] {
        let t = cell.wait_tasks(j, "dead");
        assert_eq!(t[0]["exit_code"], 0, "{j}: {t:?}");
    }
    let ev = cell.json(&["events", "--limit", "1000"]);
    assert!(at(&ev, "a", "dead") <= at(&ev, "b", "running"), "b ran after a finished: {ev}");
    assert!(at(&ev, "b", "dead") <= at(&ev, "c", "running"), "c ran after b finished: {ev}");
    assert!(at(&ev, "b", "released") >= at(&ev, "a", "dead"));

    // x fails: y and z, which wait for it, fail with the reason and never run
    cell.apply_yaml("x", &batch("x", &[], "exit 3"));
    cell.apply_yaml("y", &batch("y", &["x"], "true"));
    cell.apply_yaml("z", &batch("z", &["y"], "true"));
    let y = cell.wait_tasks("y", "dead");
    let z = cell.wait_tasks("z", "dead");
    assert!(y[0]["reason"].as_str().unwrap().starts_with("dependency failed: job x failed (task 0: "), "{y:?}");
    assert!(z[0]["reason"].as_str().unwrap().starts_with("dependency failed: job y failed"), "{z:?}");
    assert!(y[0]["pid"].is_null() && z[0]["pid"].is_null(), "never started");
}

#[test]
fn an_unknown_job_or_a_cycle_in_after_is_refused_with_the_line_and_nothing_changes() {
    let cell = TestCell::start("cycle", 1);
    let write = |name: &str, text: &str| {
        let p = cell.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&p, text).unwrap();
        p
    };
    let p = write("lost", &batch("lost", &["nope"], "true"));
    let out = cell.borgctl(&["apply", "-f", p.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{}:6:8: after: job \"nope\" does not exist", p.display())), "{err}");
    assert!(cell.borgctl(&["job", "lost"]).status.code() != Some(0), "nothing was submitted");
    cell.apply_yaml("p", &batch("p", &[], "sleep 100"));
    cell.apply_yaml("q", &batch("q", &["p"], "true"));
    let p = write("p2", &batch("p", &["q"], "sleep 100"));
    let out = cell.borgctl(&["apply", "-f", p.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("after: p -> q -> p is a cycle"), "{err}");
    // a service cannot wait: refused locally with the line
    let p = write("svc", &batch("svc", &["p"], "true").replace("kind: batch", "kind: service"));
    let out = cell.borgctl(&["apply", "-f", p.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("after: only batch jobs wait"), "{out:?}");
}

#[test]
fn a_finished_job_past_its_ttl_is_gone_and_so_is_its_sandbox() {
    let mut cell = TestCell::start("ttl", 0);
    cell.add_borglet_with(&["--sandbox-retention", "1s"]);
    cell.wait_for(std::time::Duration::from_secs(30), "the machine registers", |c| {
        c.machines().as_array().is_some_and(|m| m.len() == 1)
    });
    let short = batch("short", &[], "echo done").replace("tasks: 1\n", "tasks: 1\nttl_after_finished: 1s\n");
    cell.apply_yaml("short", &short);
    // the default (24 h) keeps the other one
    cell.apply_yaml("kept", &batch("kept", &[], "echo done"));
    cell.wait_tasks("short", "dead");
    cell.wait_tasks("kept", "dead");
    let tasks = cell.borglets[0].work_dir.join("tasks");
    assert!(tasks.join("short.0.1").exists(), "the sandbox is there while the job is");
    cell.wait_for(std::time::Duration::from_secs(30), "the job is removed after its ttl", |c| {
        c.json(&["jobs"]).as_array().is_some_and(|js| js.iter().all(|j| j["name"] != "short"))
    });
    cell.wait_for(std::time::Duration::from_secs(30), "its sandbox is removed", |_| !tasks.join("short.0.1").exists());
    let events = cell.json(&["events", "short"]);
    assert!(
        events.is_null() || events.as_array().is_some_and(|e| e.iter().any(|e| e["kind"] == "deleted")),
        "{events}"
    );
    assert!(cell.json(&["jobs"]).as_array().unwrap().iter().any(|j| j["name"] == "kept"));
}

#[test]
fn a_gang_that_does_not_fit_whole_holds_nothing_and_starts_in_one_pass() {
    let cell = TestCell::start("gang", 1); // one machine of 4 cores
    cell.apply_yaml(
        "blocker",
        "name: blocker\nuser: bob\npriority: batch\nkind: service\ntasks: 1\n\
         command: [/bin/sh, -c, 'sleep 1000']\nresources: {cpu: 1000m, ram: 16Mi}\ngrace_period: 1s\n",
    );
    cell.wait_tasks("blocker", "running");
    // 4 tasks of a core: only 3 fit beside the blocker (2 once small runs too)
    let gang = batch("mpi", &[], "sleep 1000")
        .replace("tasks: 1\n", "tasks: 4\ngang: true\n")
        .replace("cpu: 100m", "cpu: 1000m");
    cell.apply_yaml("mpi", &gang);
    // another job that fits is placed meanwhile: the gang holds no room
    cell.apply_yaml("small", &batch("small", &[], "sleep 1000"));
    cell.wait_tasks("small", "running");
    cell.wait_for(std::time::Duration::from_secs(30), "why-pending names the gang's shortfall", |c| {
        c.json(&["job", "mpi"])["why_pending"].as_str().is_some_and(|w| w.starts_with("gang: 2 of 4 tasks fit now"))
    });
    let tasks = cell.tasks("mpi");
    assert!(tasks.iter().all(|t| t["state"] == "pending" && t["machine"].is_null()), "none placed: {tasks:?}");
    // the cores free: all 4 start, bound in the same pass
    assert!(cell.borgctl(&["kill", "blocker"]).status.success());
    assert!(cell.borgctl(&["kill", "small"]).status.success());
    let tasks = cell.wait_tasks("mpi", "running");
    let at: Vec<i64> = tasks.iter().filter_map(|t| t["scheduled_ms"].as_i64()).collect();
    assert_eq!(at.len(), 4);
    assert!(at.iter().all(|&t| t == at[0]), "one pass, one Bind entry: {at:?}");
}

#[test]
fn a_small_job_of_another_user_is_not_stuck_behind_a_huge_backlog() {
    let cell = TestCell::start("fair", 1); // room for 10 tasks of 400m
    let job = |name: &str, user: &str, n: u32| {
        format!(
            "name: {name}\nuser: {user}\npriority: batch\nkind: batch\ntasks: {n}\n\
             command: [/bin/sh, -c, 'sleep 1']\nresources: {{cpu: 400m, ram: 16Mi}}\n"
        )
    };
    // alice's backlog is applied first, and her job name sorts first too
    cell.apply_yaml("a-backlog", &job("a-backlog", "alice", 100));
    cell.wait_for(std::time::Duration::from_secs(30), "alice fills the machine", |c| {
        c.tasks("a-backlog").iter().filter(|t| t["state"] == "running").count() == 10
    });
    cell.apply_yaml("b-small", &job("b-small", "bob", 5));
    cell.wait_for(std::time::Duration::from_secs(60), "bob's tasks all started", |c| {
        c.tasks("b-small").iter().all(|t| t["state"] != "pending")
    });
    let ev = cell.json(&["events", "--limit", "10000"]);
    let starts = |job: &str| -> Vec<i64> {
        let mut v: Vec<i64> = ev
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["job"] == job && e["kind"] == "running")
            .filter_map(|e| e["time_ms"].as_i64())
            .collect();
        v.sort();
        v
    };
    let bob_last = *starts("b-small").last().expect("bob's tasks ran");
    let alice_before = starts("a-backlog").iter().filter(|&&t| t < bob_last).count();
    // 10 at first, then bob goes first as capacity frees: at most one more round of alice's
    assert!(alice_before <= 20, "{alice_before} of alice's tasks started before bob's last one");
    let alice_pending = cell.tasks("a-backlog").iter().filter(|t| t["state"] != "dead").count();
    assert!(alice_pending > 50, "long before alice's backlog drains ({alice_pending} left)");
}

#[test]
fn the_queue_lists_pending_jobs_in_fair_share_order() {
    let cell = TestCell::start("queue", 1); // 4 cores
    let job = |name: &str, user: &str, cpu: &str, after: &str| {
        format!(
            "name: {name}\nuser: {user}\npriority: batch\nkind: batch\ntasks: 2\n{after}\
             command: [/bin/sh, -c, 'sleep 100']\nresources: {{cpu: {cpu}, ram: 16Mi}}\n"
        )
    };
    // alice runs something (her share > 0); both then ask for more than any machine has, so
    // the queue stays as it is
    cell.apply_yaml("a-run", &job("a-run", "alice", "500m", ""));
    cell.wait_tasks("a-run", "running");
    cell.apply_yaml("a-big", &job("a-big", "alice", "5", ""));
    cell.apply_yaml("b-big", &job("b-big", "bob", "5", ""));
    cell.apply_yaml("b-next", &job("b-next", "bob", "100m", "after: [b-big]\n"));
    let q = cell.json(&["queue"]);
    let order: Vec<&str> = q.as_array().unwrap().iter().filter_map(|e| e["job"].as_str()).collect();
    assert_eq!(order, ["b-big", "a-big", "b-next"], "bob (share 0) before alice; the held job last: {q}");
    assert_eq!(q[2]["waiting_for"], "b-big");
    assert!(q[1]["share"].as_f64().unwrap() > 0.0 && q[0]["share"] == 0.0, "{q}");
    assert_eq!(q[0]["pending"], 2);
    let out = cell.borgctl(&["queue", "--band", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("band: \"nope\" is not"), "{out:?}");
}

#[test]
fn a_fair_share_weight_divides_a_users_share() {
    let cell = TestCell::start("weight", 1); // 4 cores
    let job = |name: &str, user: &str, cpu: &str| {
        format!(
            "name: {name}\nuser: {user}\npriority: batch\nkind: batch\ntasks: 2\n\
             command: [/bin/sh, -c, 'sleep 100']\nresources: {{cpu: {cpu}, ram: 16Mi}}\n"
        )
    };
    cell.apply_yaml("a-run", &job("a-run", "alice", "500m")); // alice: 25 % of the cell
    cell.apply_yaml("b-run", &job("b-run", "bob", "250m")); // bob: 12.5 %
    cell.wait_tasks("a-run", "running");
    cell.wait_tasks("b-run", "running");
    cell.apply_yaml("a-big", &job("a-big", "alice", "5"));
    cell.apply_yaml("b-big", &job("b-big", "bob", "5"));
    let order = |c: &TestCell| -> Vec<String> {
        c.json(&["queue"]).as_array().unwrap().iter().filter_map(|e| e["job"].as_str().map(String::from)).collect()
    };
    assert_eq!(order(&cell), ["b-big", "a-big"], "bob's share is smaller");
    let out = cell.borgctl(&["quota", "set", "alice", "batch", "weight=4"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(order(&cell), ["a-big", "b-big"], "alice's 25 % counts as 6.25 % at weight 4");
    let q = cell.json(&["quota", "get", "alice"]);
    let batch = q.as_array().unwrap().iter().find(|r| r["band"] == "batch").unwrap().clone();
    assert_eq!(batch["weight"], 4, "{q}");
    assert_eq!(batch["limit"], serde_json::Value::Null, "the weight alone leaves the limit as it was: {q}");
    let out = cell.borgctl(&["quota", "set", "alice", "batch", "weight=0"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("the weight is a whole number, at least 1"), "{out:?}");
}

#[test]
fn a_cron_job_starts_runs_forbid_skips_ticks_and_history_trims_old_runs() {
    let cell = TestCell::start("cron", 1);
    // every 2 seconds (6 fields: seconds first); each run takes 3 s, so with forbid every
    // other tick finds the last run still going
    let spec = "name: tick\nuser: alice\npriority: batch\nkind: batch\ntasks: 1\n\
                schedule: '*/2 * * * * *'\nconcurrency: forbid\nhistory: 2\n\
                command: [/bin/sh, -c, 'sleep 3']\nresources: {cpu: 100m, ram: 16Mi}\n";
    cell.apply_yaml("tick", spec);
    let crons = |c: &TestCell| c.json(&["cron", "list"]);
    cell.wait_for(std::time::Duration::from_secs(60), "three runs finished, at most two kept", |c| {
        let events = c.json(&["events", "tick", "--limit", "1000"]);
        let started = events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["detail"].as_str().unwrap_or("").starts_with("tick: started run"))
            .count();
        started >= 4
    });
    let events = cell.json(&["events", "tick", "--limit", "1000"]);
    let details: Vec<&str> = events.as_array().unwrap().iter().filter_map(|e| e["detail"].as_str()).collect();
    assert!(details.iter().any(|d| d.starts_with("tick skipped:") && d.contains("concurrency forbid")), "{details:?}");
    let c = crons(&cell);
    let runs = c[0]["runs"].as_array().unwrap().len();
    let live = c[0]["live"].as_u64().unwrap() as usize;
    assert!(runs - live <= 2, "history 2 keeps at most 2 finished runs: {c}");
    assert!(live <= 1, "forbid: never two runs at once: {c}");
    assert_eq!(c[0]["schedule"], "*/2 * * * * *");
    // suspended: no run starts any more
    assert!(cell.borgctl(&["cron", "suspend", "tick"]).status.success());
    let before = crons(&cell)[0]["last_tick_ms"].as_i64().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3)); // longer than a tick: none may come
    assert_eq!(crons(&cell)[0]["last_tick_ms"].as_i64().unwrap(), before, "no tick while suspended");
    assert!(cell.borgctl(&["cron", "resume", "tick"]).status.success());
    // a bad schedule is refused with its line
    let p = cell.dir.path().join("bad.yaml");
    std::fs::write(&p, spec.replace("'*/2 * * * * *'", "'every day'").replace("name: tick", "name: bad")).unwrap();
    let out = cell.borgctl(&["apply", "-f", p.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(":6:11: schedule: \"every day\" is not a cron schedule"),
        "{out:?}"
    );
}
