//! fauxmaster end to end: the binary on a planner's CSV workload, on a synthetic cell, and on the
//! real Google 2011 trace when it is present (../shared/traces/google-2011).

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_fauxmaster")).args(args).arg("--json").output().expect("run fauxmaster");
    assert!(out.status.success(), "fauxmaster {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn trace_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces/google-2011");
    d.join("task_events").is_dir().then_some(d)
}

const FIELDS: [&str; 10] = [
    "machines",
    "tasks",
    "placed",
    "unschedulable",
    "preempted",
    "seconds",
    "tasks_per_second",
    "pass_p50_ms",
    "pass_p99_ms",
    "utilization",
];

fn write_csv_workload(dir: &Path) -> (PathBuf, PathBuf) {
    let m = dir.join("machines.csv");
    let t = dir.join("tasks.csv");
    let mut machines = String::from("id,cpu_millis,ram_bytes,disk_bytes,attrs\n");
    for i in 0..20 {
        machines.push_str(&format!(
            "m{i},{},{},0,rack=r{}\n",
            4000 + (i % 3) * 4000,
            (8u64 << 30) * (1 + i % 2),
            i / 5
        ));
    }
    std::fs::write(&m, machines).unwrap();
    let mut tasks =
        String::from("job,index,priority,cpu_millis,ram_bytes,disk_bytes,different_machine,submit_time_s,duration_s\n");
    for j in 0..10 {
        for i in 0..8 {
            let dm = if j == 0 { "true" } else { "false" };
            let submit = if j >= 8 { "30" } else { "" };
            tasks.push_str(&format!(
                "job{j},{i},{},{},{},0,{dm},{submit},{}\n",
                50 + j * 20,
                500 + j * 50,
                512u64 << 20,
                60 + j
            ));
        }
    }
    std::fs::write(&t, tasks).unwrap();
    (m, t)
}

#[test]
fn repack_of_a_csv_workload_places_everything_within_capacity() {
    let d = tempfile::tempdir().unwrap();
    let (m, t) = write_csv_workload(d.path());
    let placements = d.path().join("placements.csv");
    let r = run(&[
        "repack",
        "--machines",
        m.to_str().unwrap(),
        "--tasks",
        t.to_str().unwrap(),
        "--placements",
        placements.to_str().unwrap(),
    ]);
    for f in FIELDS {
        assert!(!r[f].is_null(), "report has {f}: {r}");
    }
    assert_eq!(r["tasks"], 64, "8 of 10 jobs are present at time 0");
    assert_eq!(r["placed"], 64);
    assert_eq!(r["unschedulable"], 0);
    // check the placement file against the inputs: capacity and different_machine
    let text = std::fs::read_to_string(&placements).unwrap();
    let rows: Vec<(String, String)> = text
        .lines()
        .skip(1)
        .map(|l| {
            let v: Vec<&str> = l.split(',').collect();
            (v[0].to_string(), v[2].to_string())
        })
        .collect();
    assert_eq!(rows.len(), 64);
    let mut cpu: HashMap<String, u64> = HashMap::new();
    for (job, machine) in &rows {
        let j: u64 = job.trim_start_matches("job").parse().unwrap();
        *cpu.entry(machine.clone()).or_default() += 500 + j * 50;
    }
    for (machine, used) in cpu {
        let i: u64 = machine.trim_start_matches('m').parse().unwrap();
        assert!(used <= 4000 + (i % 3) * 4000, "{machine} over capacity: {used}");
    }
    let job0: Vec<&String> = rows.iter().filter(|(j, _)| j == "job0").map(|(_, m)| m).collect();
    let uniq: std::collections::HashSet<&&String> = job0.iter().collect();
    assert_eq!(uniq.len(), job0.len(), "different_machine held");
}

#[test]
fn replay_of_a_csv_workload_runs_submissions_and_ends() {
    let d = tempfile::tempdir().unwrap();
    let (m, t) = write_csv_workload(d.path());
    let r = run(&["replay", "--machines", m.to_str().unwrap(), "--tasks", t.to_str().unwrap()]);
    assert_eq!(r["submitted"], 16, "jobs 8 and 9 arrive at 30 s");
    assert_eq!(r["ended"], 80, "every task has a duration");
    assert_eq!(r["running_at_end"], 0);
    assert_eq!(r["unschedulable"], 0);
    assert!(r["passes"].as_u64().unwrap() >= 2);
}

#[test]
fn replay_fair_share_lets_a_small_user_past_a_big_backlog_and_reports_waits_per_user() {
    // one machine with room for 10 tasks, full until 20 s (user c); at 1 s user a submits 100
    // long tasks, at 2 s user b submits 5; a tiny task of c's each second keeps passes coming
    // (a replay passes only at events). Durations count from submission (the CSV's meaning).
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("m.csv");
    let t = d.path().join("t.csv");
    std::fs::write(&m, "id,cpu_millis,ram_bytes,disk_bytes,attrs\nm0,10100,10737418240,0,\n").unwrap();
    let mut tasks = String::from(
        "job,index,priority,cpu_millis,ram_bytes,disk_bytes,different_machine,submit_time_s,duration_s,user\n",
    );
    for i in 0..10 {
        tasks.push_str(&format!("filler,{i},100,1000,1048576,0,false,,20,c\n"));
    }
    for i in 0..60 {
        tasks.push_str(&format!("tick,{i},100,1,1,0,false,{},1,c\n", i + 1));
    }
    for i in 0..100 {
        tasks.push_str(&format!("big,{i},100,1000,1048576,0,false,1,1000,a\n"));
    }
    for i in 0..5 {
        tasks.push_str(&format!("small,{i},100,1000,1048576,0,false,2,1000,b\n"));
    }
    std::fs::write(&t, tasks).unwrap();
    let args = ["replay", "--machines", m.to_str().unwrap(), "--tasks", t.to_str().unwrap()];
    let wait_of = |r: &Value, user: &str| -> (u64, f64, f64) {
        let by_user = r["wait"]["by_user"].as_array().unwrap();
        let u = by_user.iter().find(|u| u["user"] == user).cloned().unwrap_or_else(|| panic!("{user}: {}", r["wait"]));
        (u["tasks"].as_u64().unwrap(), u["p50_s"].as_f64().unwrap(), u["p99_s"].as_f64().unwrap())
    };
    let fair = run(&args);
    assert_eq!(fair["fair_share"], true);
    assert_eq!(fair["placed"], fair["wait"]["tasks"], "every placement here followed a submission");
    assert_eq!(fair["wait"]["users"], 3, "{}", fair["wait"]);
    let (n, _, p99) = wait_of(&fair, "b");
    assert_eq!(n, 5, "{}", fair["wait"]);
    // c's filler ends at 20 s; the pass at the next event (21 s) takes all of b's
    assert!(p99 <= 25.0, "b waits one round with fair share: {}", fair["wait"]);
    assert_eq!(wait_of(&fair, "a").0, 5, "a gets the rest of that round");
    let fifo = run(&[&args[..], &["--no-fair-share"]].concat());
    assert_eq!(fifo["fair_share"], false);
    let (n, p50, _) = wait_of(&fifo, "b");
    assert_eq!(n, 5);
    assert!(p50 >= 900.0, "in arrival order b waits behind a's whole backlog: {}", fifo["wait"]);
}

#[test]
fn compact_finds_a_smaller_cell_above_the_lower_bound() {
    let d = tempfile::tempdir().unwrap();
    let (m, t) = write_csv_workload(d.path());
    let r = run(&[
        "compact",
        "--machines",
        m.to_str().unwrap(),
        "--tasks",
        t.to_str().unwrap(),
        "--seeds",
        "3",
        "--workload",
        "fitting",
    ]);
    let min = r["min_machines_median"].as_f64().unwrap();
    let lb = r["lower_bound_machines"].as_f64().unwrap();
    assert!(lb <= min && min < 20.0, "lower bound {lb} <= smallest cell {min} < 20: {r}");
    assert!(r["best_fit_min_machines_median"].as_f64().unwrap() >= lb);
    assert!(!r["min_machines_p90"].is_null());
}

/// The heterogeneous cell for validating scoring on other shapes than the trace's: deterministic
/// for a seed, of the asked size, and compaction of it reports both scorings above the bound.
#[test]
fn hetero_cells_are_deterministic_and_compact_above_the_lower_bound() {
    let d = tempfile::tempdir().unwrap();
    let export = |name: &str, seed: &str| {
        let (m, t) = (d.path().join(format!("{name}-m.csv")), d.path().join(format!("{name}-t.csv")));
        let out = Command::new(env!("CARGO_BIN_EXE_fauxmaster"))
            .args(["export", "--hetero", seed, "--hetero-machines", "300", "--hetero-tasks", "900"])
            .args(["--machines-out", m.to_str().unwrap(), "--tasks-out", t.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (std::fs::read_to_string(m).unwrap(), std::fs::read_to_string(t).unwrap())
    };
    let (a, b, c) = (export("a", "7"), export("b", "7"), export("c", "8"));
    assert_eq!(a, b, "same seed, same cell and workload");
    assert_ne!(a, c, "another seed, another cell");
    assert_eq!(a.0.lines().count(), 301, "300 machines and a header");
    assert_eq!(a.1.lines().count(), 901, "900 tasks and a header");
    let r = run(&["compact", "--hetero", "7", "--hetero-machines", "300", "--hetero-tasks", "900", "--seeds", "2"]);
    assert_eq!(r["machines"], 300);
    assert_eq!(r["tasks"], 900, "every task is production");
    let lb = r["lower_bound_machines"].as_f64().unwrap();
    for key in ["min_machines_median", "best_fit_min_machines_median"] {
        let n = r[key].as_f64().unwrap();
        assert!(lb > 0.0 && lb <= n && n <= 300.0, "{key}: lower bound {lb} <= {n} <= 300: {r}");
    }
    assert_eq!(r["scheduler"]["candidates"], 32, "compaction runs the live defaults: {r}");
}

/// Several synthetic cells in one compaction: each cell's sums are what a run of that cell
/// alone reports, and the totals add up.
/// Synthetic cell 15 (100 machines, 300 tasks) holds one class of 177 tasks of 12 cores and one
/// task of 82 cores / 590 GiB that only an empty 96-core machine can hold. Spreading the class
/// used to take every empty machine first: compaction needed 81 machines against best fit's 53.
/// The scheduler now keeps empty machines back for the pass's large tasks.
#[test]
fn spreading_does_not_cost_the_machines_a_large_task_needs_on_a_small_cell() {
    let r = run(&["compact", "--hetero", "15", "--hetero-machines", "100", "--hetero-tasks", "300", "--seeds", "1"]);
    let runs = r["per_seed"].as_array().expect("per_seed");
    let (hybrid, best_fit) = (runs[0]["hybrid_min_machines"].as_u64(), runs[0]["best_fit_min_machines"].as_u64());
    assert!(hybrid.is_some() && hybrid <= best_fit, "hybrid {hybrid:?}, best fit {best_fit:?}: {r}");
}

#[test]
fn compaction_over_several_hetero_cells_sums_each_cells_runs() {
    let shape = ["--hetero-machines", "100", "--hetero-tasks", "300", "--seeds", "2"];
    let many = run(&[&["compact", "--hetero", "7", "--hetero-cells", "3"][..], &shape[..]].concat());
    let cells = many["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 3);
    let total = |k: &str| cells.iter().map(|c| c[k].as_u64().unwrap()).sum::<u64>();
    for (i, c) in cells.iter().enumerate() {
        let seed = 7 + i as u64;
        assert_eq!(c["hetero_seed"], seed);
        let one = run(&[&["compact", "--hetero", &seed.to_string()][..], &shape[..]].concat());
        let runs = one["per_seed"].as_array().unwrap();
        for (cell_key, run_key) in [
            ("hybrid_machines", "hybrid_min_machines"),
            ("best_fit_machines", "best_fit_min_machines"),
            ("lower_bound_machines", "lower_bound_machines"),
        ] {
            let alone: u64 = runs.iter().map(|r| r[run_key].as_u64().unwrap()).sum();
            assert_eq!(c[cell_key].as_u64(), Some(alone), "cell {seed} {cell_key}: {c} vs {one}");
        }
        assert!(c["lower_bound_machines"].as_u64() <= c["hybrid_machines"].as_u64(), "{c}");
    }
    let sum = &many["summed"];
    assert_eq!(sum["cells"], 3);
    for k in ["hybrid_machines", "best_fit_machines", "lower_bound_machines"] {
        assert_eq!(sum[k].as_u64(), Some(total(k)), "{k}: {sum}");
    }
    let differ = cells.iter().filter(|c| c["hybrid_machines"] != c["best_fit_machines"]).count() as u64;
    assert_eq!(sum["cells_hybrid_better"].as_u64().unwrap() + sum["cells_hybrid_worse"].as_u64().unwrap(), differ);
    // the rest of the report is the first cell's
    assert_eq!(many["per_seed"], run(&[&["compact", "--hetero", "7"][..], &shape[..]].concat())["per_seed"]);
    // a single cell reports no sums; several cells need a synthetic cell to start from
    assert!(run(&[&["compact", "--hetero", "7"][..], &shape[..]].concat()).get("summed").is_none());
    let out = Command::new(env!("CARGO_BIN_EXE_fauxmaster"))
        .args(["compact", "--machines", "m.csv", "--tasks", "t.csv", "--hetero-cells", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--hetero-cells 2 needs --hetero SEED"));
    let out = Command::new(env!("CARGO_BIN_EXE_fauxmaster"))
        .args(["repack", "--hetero", "7", "--hetero-cells", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--hetero-cells is for compact only"));
}

#[test]
fn synth_places_a_small_c1m_shape_deterministically() {
    let args = ["synth", "--machines", "200", "--jobs", "20", "--tasks-per-job", "100"];
    let a = run(&args);
    assert_eq!(a["tasks"], 2000);
    assert_eq!(a["placed"], 2000);
    let d = tempfile::tempdir().unwrap();
    let p1 = d.path().join("a.csv");
    let p2 = d.path().join("b.csv");
    run(&[&args[..], &["--placements", p1.to_str().unwrap()]].concat());
    run(&[&args[..], &["--placements", p2.to_str().unwrap()]].concat());
    assert_eq!(std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap(), "same seed, same placement");
}

#[test]
fn google_trace_repack_places_every_production_task() {
    let Some(dir) = trace_dir() else {
        eprintln!("skipped: the Google 2011 trace is not at ../shared/traces/google-2011");
        return;
    };
    let r = run(&["repack", "--trace", dir.to_str().unwrap()]);
    assert_eq!(r["machines"], 12477);
    assert_eq!(r["tasks"], 132982);
    assert_eq!(r["unschedulable_by_band"]["production"], 0, "{r}");
    assert!(r["placed"].as_u64().unwrap() > 80_000, "{r}");
    assert!(r["utilization"]["cpu"]["total"].as_f64().unwrap() <= 1.0);
}

/// The README's reclamation figure: with `--reclaim` (modeled usage: the trace has none here),
/// the repack places the whole time-0 workload, as many tasks as the real cell ran, and every
/// production task as without.
#[test]
fn google_trace_repack_with_reclaim_places_the_whole_time0_workload() {
    let Some(dir) = trace_dir() else {
        eprintln!("skipped: the Google 2011 trace is not at ../shared/traces/google-2011");
        return;
    };
    let r = run(&["repack", "--trace", dir.to_str().unwrap(), "--reclaim"]);
    let rc = &r["reclaim"];
    eprintln!("fauxmaster repack --reclaim: {rc}");
    assert_eq!(r["placed"], 132982, "{r}");
    assert_eq!(rc["usage"], "modeled");
    assert_eq!(rc["production_placed"], rc["production_placed_without_reclaim"], "{rc}");
    assert!(rc["more_non_production_placed"].as_i64().unwrap() > 30_000, "{rc}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("m.csv");
    std::fs::write(&m, "m1,notanumber,1,0,\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fauxmaster"))
        .args(["repack", "--machines", m.to_str().unwrap(), "--tasks", m.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("m.csv:1: cpu_millis"), "{err}");
}

#[test]
fn replay_writes_a_utilization_report() {
    let d = tempfile::tempdir().unwrap();
    let (m, t) = write_csv_workload(d.path());
    let dir = d.path().join("report");
    let r = run(&[
        "replay",
        "--machines",
        m.to_str().unwrap(),
        "--tasks",
        t.to_str().unwrap(),
        "--report",
        dir.to_str().unwrap(),
        "--sample-every",
        "10",
    ]);
    assert_eq!(r["report_dir"], dir.to_str().unwrap());
    let csv = std::fs::read_to_string(dir.join("utilization.csv")).unwrap();
    assert!(csv.starts_with("time_s,cpu_capacity_cores,"));
    assert!(csv.lines().count() >= 4, "header and samples every 10 s over ~90 s: {csv}");
    let first: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(first[1], "156.0", "20 machines: 7 x 4 + 7 x 8 + 6 x 12 cores");
    let svg = std::fs::read_to_string(dir.join("utilization.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("production"));
}

#[test]
fn export_keeps_the_workload_in_proportion_to_the_machines_it_keeps() {
    let d = tempfile::tempdir().unwrap();
    let (m, t) = write_csv_workload(d.path());
    let export = |extra: &[&str]| {
        let (mo, to) = (d.path().join("m-out.csv"), d.path().join("t-out.csv"));
        let out = Command::new(env!("CARGO_BIN_EXE_fauxmaster"))
            .args(["export", "--machines", m.to_str().unwrap(), "--tasks", t.to_str().unwrap()])
            .args(["--machines-out", mo.to_str().unwrap(), "--tasks-out", to.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count() - 1;
        (lines(&mo), lines(&to))
    };
    // 20 machines and 64 time-0 tasks (8 jobs of 8; two more jobs arrive later)
    assert_eq!(export(&[]), (20, 64));
    assert_eq!(export(&["--limit-machines", "10"]), (10, 32), "half the machines, half the tasks, whole jobs");
    assert_eq!(export(&["--limit-machines", "10", "--all-tasks"]), (10, 64));
}

#[test]
fn compact_says_what_it_measured_without_a_placement_rate() {
    let d = tempfile::tempdir().unwrap();
    let (m, t) = write_csv_workload(d.path());
    let out = Command::new(env!("CARGO_BIN_EXE_fauxmaster"))
        .args(["compact", "--machines", m.to_str().unwrap(), "--tasks", t.to_str().unwrap(), "--seeds", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("tasks/s") && !text.contains("unschedulable"), "{text}");
    assert!(text.contains("smallest cell (hybrid)") && text.contains("of the 64 tasks at time 0"), "{text}");
}

/// `--reclaim` (Borg §5.5): on 4 machines of 4 cores, production asks for 3 cores per machine
/// and uses 0.3 (the CSV's usage columns); batch tasks of 2 cores do not fit against requests
/// and do in reclaimed resources; production is placed exactly as without; replay reclaims
/// only after the warmup; compaction needs fewer machines for the same tasks.
#[test]
fn reclaim_places_batch_in_what_production_does_not_use() {
    let d = tempfile::tempdir().unwrap();
    let (m, t) = (d.path().join("m.csv"), d.path().join("t.csv"));
    let mut machines = String::from("id,cpu_millis,ram_bytes,disk_bytes,attrs\n");
    for i in 0..4 {
        machines.push_str(&format!("m{i},4000,{},0,\n", 16u64 << 30));
    }
    std::fs::write(&m, machines).unwrap();
    let mut tasks = String::from("job,index,priority,cpu_millis,ram_bytes,disk_bytes,different_machine,submit_time_s,duration_s,user,cpu_used_millis,ram_used_bytes\n");
    for i in 0..4 {
        tasks.push_str(&format!("web,{i},200,3000,{},0,true,,,alice,300,{}\n", 4u64 << 30, 1u64 << 30));
    }
    for i in 0..4 {
        tasks.push_str(&format!("crunch,{i},100,2000,{},0,false,,,bob,1900,{}\n", 2u64 << 30, 1u64 << 30));
    }
    std::fs::write(&t, tasks).unwrap();
    let (ms, ts) = (m.to_str().unwrap(), t.to_str().unwrap());
    let plain = run(&["repack", "--machines", ms, "--tasks", ts]);
    assert_eq!(plain["placed_by_band"]["batch"], 0, "2 cores do not fit beside 3 on 4: {plain}");
    let r = run(&["repack", "--machines", ms, "--tasks", ts, "--reclaim"]);
    assert_eq!(r["placed"], 8, "{r}");
    let rc = &r["reclaim"];
    assert_eq!(rc["usage"], "given");
    assert_eq!(
        (rc["production_placed"].clone(), rc["production_placed_without_reclaim"].clone()),
        (4.into(), 4.into())
    );
    assert_eq!(rc["more_non_production_placed"], 4);
    // each machine: 3 + 2 cores requested on 4: 1 of batch's 2 cores runs in reclaimed CPU
    assert_eq!(rc["non_production_in_reclaimed_share"]["cpu"], 0.5, "{rc}");
    // replay: batch submitted at 400 s fits once production (placed at 1 s) is past its 300 s
    // warmup; submitted at 200 s, not yet
    let t2 = d.path().join("t2.csv");
    for (at, running) in [(400, 9), (200, 5)] {
        let later = std::fs::read_to_string(&t).unwrap().replace("false,,,bob", &format!("false,{at},,bob"));
        std::fs::write(&t2, format!("{later}tiny,0,10,10,1024,0,false,1,,carol,,\n")).unwrap();
        let rp = run(&["replay", "--machines", ms, "--tasks", t2.to_str().unwrap(), "--reclaim"]);
        assert_eq!(rp["running_at_end"], running, "batch at {at} s: {rp}");
    }
    let rp = run(&["replay", "--machines", ms, "--tasks", t2.to_str().unwrap()]);
    assert_eq!(rp["running_at_end"], 5, "without reclamation: {rp}");
    let c = run(&["compact", "--machines", ms, "--tasks", ts, "--workload", "production", "--seeds", "1"]);
    let cr = run(&["compact", "--machines", ms, "--tasks", ts, "--workload", "all", "--seeds", "1", "--reclaim"]);
    assert_eq!(c["min_machines_median"], 4.0, "one production task per machine (different_machine)");
    assert_eq!(cr["min_machines_median"], 4.0, "and batch fits beside them: {cr}");
}

/// `--openb`: a pod list in the layout of Alibaba's 2023 GPU cluster trace (rows made up here)
/// on the node list beside it; every pod a production task, memory MiB -> bytes, GPUs left out.
/// A malformed row is named by file, line and column.
#[test]
fn an_openb_pod_list_loads_on_its_node_list() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("openb_node_list_all_node.csv"),
        "sn,cpu_milli,memory_mib,gpu,model\nn0,32000,131072,0,\nn1,96000,393216,8,V100M32\n",
    )
    .unwrap();
    let pods = d.path().join("openb_pod_list_test.csv");
    std::fs::write(
        &pods,
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n\
         p0,8000,32768,1,1000,,LS,Running,0,100,0\np1,64000,262144,0,0,,BE,Running,0,100,0\np2,0,0,0,0,,BE,Running,0,100,0\n",
    )
    .unwrap();
    let r = run(&["repack", "--openb", pods.to_str().unwrap()]);
    assert_eq!(r["machines"], 2);
    assert_eq!(r["tasks"], 3);
    assert_eq!(r["placed"], 3, "{r}");
    // the large pod fits only on n1; the three together ask 72,001 of 128,000 millicores
    let cpu = r["utilization"]["cpu"]["production"].as_f64().unwrap();
    assert!((cpu - 72_001.0 / 128_000.0).abs() < 1e-3, "{r}");
    std::fs::write(&pods, "name,cpu_milli,memory_mib\np0,8000,32768\np1,lots,1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fauxmaster"))
        .args(["repack", "--openb", pods.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("openb_pod_list_test.csv:3: cpu_milli"), "{err}");
}
