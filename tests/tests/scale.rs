//! The master at (small) scale: a hollow Borglet serving many fake machines and the load driver
//! `borgctl bench`, kept working in CI. The big runs are in the README ("The master at cell
//! scale").

use borg_integration_tests::TestCell;
use std::time::Duration;

#[test]
fn hollow_machines_run_a_bench_load() {
    let mut cell = TestCell::start("scale", 0);
    cell.add_hollow_borglet(50);
    cell.wait_for(Duration::from_secs(30), "50 hollow machines registered and polled", |c| {
        c.machines()
            .as_array()
            .is_some_and(|ms| ms.len() == 50 && ms.iter().all(|m| m["last_seen_ms"].as_i64() > Some(0)))
    });
    let r = cell.json(&["bench", "--jobs", "100", "--tasks-per-job", "2", "--concurrency", "50", "--timeout", "60"]);
    assert_eq!(r["tasks"], 200);
    assert_eq!(r["running"], 200, "{r}");
    assert!(r["tasks_per_second"].as_f64().unwrap() > 0.0);
    for k in ["p50_ms", "p90_ms", "p99_ms"] {
        assert!(r["apply_to_running"][k].as_f64().is_some(), "{r}");
    }
    // hollow tasks look real to the master: pids, usage, machines
    let tasks = cell.tasks("bench-7");
    assert!(tasks.iter().all(|t| t["state"] == "running"
        && t["pid"].as_u64().is_some()
        && t["machine"].as_str().unwrap().starts_with("scale-hollow-h")));
    cell.wait_for(Duration::from_secs(10), "hollow usage reported", |c| {
        c.json(&["top", "jobs"]).as_array().unwrap().iter().any(|j| j["used"]["cpu_millis"].as_u64() > Some(0))
    });
    // a kill goes through to the hollow machines
    assert!(cell.borgctl(&["kill", "bench-7"]).status.success());
    cell.wait_tasks("bench-7", "dead");
}

/// The watch fan-out benchmark's short run: every watcher sees every new task ready.
#[test]
fn the_watch_fanout_bench_sees_each_change_on_every_watcher() {
    let mut cell = TestCell::start("fanout", 0);
    cell.add_hollow_borglet(10);
    cell.wait_for(Duration::from_secs(30), "10 hollow machines registered", |c| {
        c.machines().as_array().is_some_and(|ms| ms.len() == 10)
    });
    let r = cell.json(&[
        "bench",
        "--prefix",
        "fan",
        "--jobs",
        "1",
        "--tasks-per-job",
        "20",
        "--watchers",
        "150",
        "--watch-changes",
        "3",
        "--timeout",
        "60",
    ]);
    assert_eq!(r["running"], 20, "{r}");
    assert_eq!(r["watch"]["watchers"], 150, "{r}");
    assert!(r["watch"]["ready_to_seen"]["p99_ms"].as_f64().is_some(), "{r}");
    assert_eq!(cell.tasks("fan-0").len(), 23, "three tasks added, one per change");
}
