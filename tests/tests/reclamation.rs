//! Resource reclamation in a live cell (Borg §5.5; issue 20): a master with a short reservation
//! warmup and one real Borglet of 2 cores / 1 GiB running real processes. A production service
//! asks for 1.5 cores and 600 MiB and uses almost none; after the warmup its reservation falls,
//! and a batch job of 1 core, which does not fit against requests, runs in what was reclaimed.
//! When the service starts using its memory, the Borglet stops the batch task (reason
//! `reclaimed`, back to pending) and touches no production task. With reclamation off the batch
//! job waits. Under CPU contention the production task keeps its CPU while batch spins.

use borg_integration_tests::{metric_value, TestCell};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The tests of this file take turns ([`one_at_a_time`]): CPU weights divide CPU only among the
/// Borglet's own tasks, and another test's cell beside the contention test (its master, Borglet
/// and tasks, outside those cgroups) took about 750 millicores of the 2 cores from it in CI
/// (production 785 millicores, batch 451: a failed ratio that said nothing about the weights).
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds this file's turn until dropped (a test that panicked while holding it passes it on).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// A short warmup and window, committed often, so that a test sees reservations move.
const FAST: [&str; 6] = ["--reservation-warmup", "2s", "--reservation-window", "2s", "--reservation-interval", "300ms"];

/// A program that waits for the file named by its first argument, then allocates (and touches)
/// the number of MiB given second, then sleeps; it allocates at once when no file is named.
const HOLDER: &str = "import os, sys, time\n\
p, mib = sys.argv[1], int(sys.argv[2])\n\
while p != '-' and not os.path.exists(p):\n    time.sleep(0.05)\n\
b = bytearray(mib << 20)\n\
for i in range(0, len(b), 4096):\n    b[i] = 1\n\
time.sleep(3600)\n";

fn job(name: &str, band: &str, cpu: &str, ram: &str, command: &str) -> String {
    format!(
        "name: {name}\nuser: u{name}\npriority: {band}\nkind: service\ntasks: 1\ncommand: {command}\n\
         resources: {{cpu: {cpu}, ram: {ram}}}\ngrace_period: 1s\n"
    )
}

fn holder(cell: &TestCell, trigger: &str, mib: u32) -> String {
    let prog = cell.dir.path().join("holder.py");
    std::fs::write(&prog, HOLDER).expect("write the holder program");
    format!("[python3, {}, '{trigger}', '{mib}']", prog.display())
}

fn cgroups_missing(cell: &TestCell) -> bool {
    let log = std::fs::read_to_string(cell.dir.path().join(format!("{}.log", cell.borglets[0].id))).unwrap_or_default();
    log.contains("cgroups unavailable")
}

fn task(cell: &TestCell, job: &str) -> Value {
    cell.tasks(job).into_iter().next().unwrap_or(Value::Null)
}

fn master_metric(cell: &TestCell, series: &str) -> f64 {
    let (_, m) = borg_integration_tests::http_get(cell.master_http.as_ref().expect("master http"), "/metrics");
    metric_value(&m, series).unwrap_or(0.0)
}

#[test]
fn batch_runs_in_what_production_does_not_use_and_gives_it_back() {
    let _turn = one_at_a_time();
    let cell =
        TestCell::start_custom("reclaim", 1, &FAST, &["--cpu", "2000", "--ram", "1Gi", "--reclaim-memory-at", "90"]);
    let trigger = cell.dir.path().join("use-memory");
    let svc = holder(&cell, trigger.to_str().unwrap(), 550);
    cell.apply_yaml("svc", &job("svc", "production", "1500m", "600Mi", &svc));
    let before = cell.wait_tasks("svc", "running")[0].clone();
    // 1 core does not fit against requests (0.5 left), only in what the service leaves unused
    let filler = holder(&cell, "-", 450);
    cell.apply_yaml("filler", &job("filler", "batch", "1", "500Mi", &filler));
    let waited = Instant::now();
    cell.wait_for(Duration::from_secs(60), "the batch task runs in reclaimed resources", |c| {
        task(c, "filler")["state"] == "running"
    });
    eprintln!("reclamation: the batch task ran {:.1} s after it was submitted", waited.elapsed().as_secs_f64());
    // the filler fits only once the service's reservation is at most 2000m - 1000m; the peak
    // it follows may still hold the service's (python's) start for one window, so lower than
    // that is waited for, not assumed (CI red at 1f707e9: 569m when the filler ran)
    let s = task(&cell, "svc");
    let reserved = s["reservation"]["cpu_millis"].as_u64().unwrap_or(u64::MAX);
    assert!(reserved <= 1000, "the service's CPU reservation fell from its 1500m request: {s}");
    cell.wait_for(Duration::from_secs(60), "the service's CPU reservation follows its idle usage", |c| {
        task(c, "svc")["reservation"]["cpu_millis"].as_u64().is_some_and(|r| r < 500)
    });
    // the views agree: reserved + reclaimed = allocated, by band and for the cell
    let u = cell.json(&["cell", "usage"]);
    let prod = u["bands"].as_array().unwrap().iter().find(|b| b["band"] == "production").unwrap().clone();
    for r in ["cpu_millis", "ram_bytes"] {
        let (a, rv, rc) = (prod["allocated"][r].as_u64(), prod["reserved"][r].as_u64(), prod["reclaimed"][r].as_u64());
        assert_eq!(a, rv.zip(rc).map(|(x, y)| x + y), "{r}: {prod}");
        let (a, rv, rc) = (u["allocated"][r].as_u64(), u["reserved"][r].as_u64(), u["reclaimed"][r].as_u64());
        assert_eq!(a, rv.zip(rc).map(|(x, y)| x + y), "{r}: {u}");
    }
    assert!(prod["reclaimed"]["cpu_millis"].as_u64().unwrap_or(0) > 1000, "{prod}");
    let reclaimed_cores = master_metric(&cell, "borg_cell_reclaimed_cpu_cores{band=\"production\"}");
    assert!(
        (reclaimed_cores - prod["reclaimed"]["cpu_millis"].as_u64().unwrap() as f64 / 1000.0).abs() < 0.2,
        "{reclaimed_cores}"
    );
    let top = cell.borgctl(&["top", "jobs"]);
    assert!(String::from_utf8_lossy(&top.stdout).contains("CPU RESV"), "top jobs shows reservations");

    // the service starts using its memory: the batch task gives it back
    std::fs::write(&trigger, b"").unwrap();
    cell.wait_for(Duration::from_secs(60), "the batch task is stopped with reason reclaimed", |c| {
        let events = c.json(&["events", "filler"]);
        events.as_array().is_some_and(|e| {
            e.iter().any(|e| e["kind"] == "pending" && e["detail"].as_str().unwrap_or("").starts_with("reclaimed"))
        })
    });
    cell.wait_for(Duration::from_secs(60), "the batch task waits: no room even counting reclaimed resources", |c| {
        let j = c.json(&["job", "filler"]);
        j["pending"] == 1 && j["why_pending"].as_str().unwrap_or("").contains("even counting reclaimed resources")
    });
    let after = task(&cell, "svc");
    assert_eq!((after["pid"].clone(), after["restarts"].clone()), (before["pid"].clone(), before["restarts"].clone()));
    assert_eq!(after["state"], "running", "no production task was stopped: {after}");
    assert!(master_metric(&cell, "borg_evictions_total{reason=\"reclaimed\"}") >= 1.0);
    let (_, b) = borg_integration_tests::http_get(cell.borglets[0].http.as_ref().unwrap(), "/metrics");
    assert!(metric_value(&b, "borg_borglet_reclaimed_total{job=\"filler\"}").unwrap_or(0.0) >= 1.0, "{b}");
}

#[test]
fn without_reclamation_batch_waits_for_requests() {
    let _turn = one_at_a_time();
    let mut master = FAST.to_vec();
    master.extend(["--reclaim", "false"]);
    let cell = TestCell::start_custom("noreclaim", 1, &master, &["--cpu", "2000", "--ram", "1Gi"]);
    let svc = holder(&cell, "/nonexistent/never", 1);
    cell.apply_yaml("svc", &job("svc", "production", "1500m", "600Mi", &svc));
    cell.wait_tasks("svc", "running");
    cell.apply_yaml("filler", &job("filler", "batch", "1", "200Mi", &holder(&cell, "-", 1)));
    // three warmups later (the reclaiming cell runs it after about one), still pending for CPU
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let j = cell.json(&["job", "filler"]);
        assert_eq!(j["running"], 0, "placed without reclamation: {j}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let j = cell.json(&["job", "filler"]);
    let why = j["why_pending"].as_str().unwrap_or("");
    assert!(why.contains("insufficient cpu") && !why.contains("reclaimed"), "{j}");
    let u = cell.json(&["cell", "usage"]);
    assert_eq!(u["reclaimed"]["cpu_millis"], 0, "{u}");
}

/// Average CPU (millicores) of `job`'s task over `samples` polls of the master, 300 ms apart.
fn cpu_over(cell: &TestCell, job: &str, samples: u32) -> f64 {
    let mut sum = 0.0;
    for _ in 0..samples {
        sum += task(cell, job)["used"]["cpu_millis"].as_f64().unwrap_or(0.0);
        std::thread::sleep(Duration::from_millis(300));
    }
    sum / f64::from(samples)
}

#[test]
fn production_keeps_its_cpu_while_batch_spins_in_reclaimed_cpu() {
    let _turn = one_at_a_time();
    let cell = TestCell::start_custom("spin", 1, &FAST, &["--cpu", "2000", "--ram", "2Gi"]);
    if cgroups_missing(&cell) {
        eprintln!("skipped: this host gives the Borglet no cgroups, so no CPU weight is set");
        return;
    }
    let go = cell.dir.path().join("spin");
    let spin2 = "(while :; do :; done) & while :; do :; done";
    let prod = format!("[/bin/sh, -c, 'while [ ! -e {} ]; do sleep 0.1; done; {spin2}']", go.display());
    cell.apply_yaml("busy", &job("busy", "production", "1500m", "64Mi", &prod));
    cell.wait_tasks("busy", "running");
    cell.apply_yaml("spinner", &job("spinner", "batch", "1", "64Mi", &format!("[/bin/sh, -c, '{spin2}']")));
    cell.wait_for(Duration::from_secs(60), "the spinning batch task runs in reclaimed CPU", |c| {
        task(c, "spinner")["state"] == "running"
    });
    std::fs::write(&go, b"").unwrap();
    // both spin: 2.5 cores of demand on 2; the CPU weights (production 10000 / shares 262144,
    // batch 100 / 1024) give production what it asked for first
    cell.wait_for(Duration::from_secs(30), "the production task spins", |c| {
        task(c, "busy")["used"]["cpu_millis"].as_u64().unwrap_or(0) > 500
    });
    let (prod, batch) = (cpu_over(&cell, "busy", 10), cpu_over(&cell, "spinner", 10));
    eprintln!("reclamation: under contention production used {prod:.0} millicores (request 1500), batch {batch:.0} (request 1000)");
    assert!(prod > 2.0 * batch, "production {prod:.0} millicores, batch {batch:.0}: the weights did not hold");
}
