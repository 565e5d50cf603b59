//! `fauxmaster`: runs the real scheduler-core over a cell and a workload and reports.
//!
//! ```text
//! fauxmaster repack  --trace ../shared/traces/google-2011 [--json] [--placements FILE]
//! fauxmaster replay  --trace DIR [--pass-interval 1]
//! fauxmaster compact --trace DIR --seeds 11
//! fauxmaster synth   --machines 10000 --jobs 1000 --tasks-per-job 1000
//! fauxmaster repack  --machines cell.csv --tasks tasks.csv
//! ```

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use fauxmaster::sim::{self, Outcome};
use fauxmaster::trace::Units;
use fauxmaster::workload::Workload;
use indicatif::{ProgressBar, ProgressStyle};
use scheduler_core::{Params, Weights};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    version,
    about = "Borg's simulator: the real scheduler on real traces, for benchmarks and capacity planning."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    #[command(flatten)]
    sched: SchedArgs,
    /// Print one JSON object instead of the human summary.
    #[arg(long, global = true)]
    json: bool,
    /// Write the final placement as CSV `job,index,machine`.
    #[arg(long, global = true)]
    placements: Option<PathBuf>,
}

#[derive(Args)]
struct SchedArgs {
    /// Scheduler seed (random machine order).
    #[arg(long, global = true, default_value_t = 1)]
    seed: u64,
    /// Feasible machines examined per choice (relaxed randomization); 0 = every machine
    /// (exhaustive). Default: the live master's (scheduler_core::Params::default, 32).
    #[arg(long, global = true)]
    candidates: Option<usize>,
    /// Candidates per task of a production or monitoring class, at least (0 = only
    /// --candidates). Default: the live master's (4).
    #[arg(long, global = true)]
    per_task: Option<usize>,
    /// Find candidates in random order only, without first walking the machines from the
    /// fullest that could fit (the live master walks).
    #[arg(long, global = true)]
    no_fit_walk: bool,
    /// Score with plain best fit instead of the hybrid.
    #[arg(long, global = true)]
    best_fit: bool,
    /// Weight of the hybrid's imbalance (stranded resources) term; default the live master's
    /// (scheduler_core::Weights::default, 0.5).
    #[arg(long, global = true)]
    strand: Option<f64>,
    /// Weight of the hybrid's crowding (failure-domain spreading) term; default the live
    /// master's (0.25).
    #[arg(long, global = true)]
    spread: Option<f64>,
    /// Never preempt.
    #[arg(long, global = true)]
    no_preemption: bool,
    /// Without the live master's best-fit second pass (scheduler_core::Params::second_pass: a
    /// pass that leaves production work pending for room its own choices took runs again with
    /// plain best fit, and the placement that placed more is kept).
    #[arg(long, global = true)]
    no_second_pass: bool,
    /// Resource reclamation (Borg §5.5): batch and free tasks are placed against the
    /// reservations of the tasks on a machine (each task's peak usage + 10% + 50 millicores /
    /// 64 MiB, its request at most), production and monitoring against requests. Usage from the
    /// tasks CSV's `cpu_used_millis,ram_used_bytes`, else modeled (fauxmaster::usage). Repack
    /// reports how many more non-production tasks fit (`reclaim` in the report).
    #[arg(long, global = true)]
    reclaim: bool,
}

#[derive(Args, Clone)]
struct Input {
    /// Google ClusterData2011 trace directory (with machine_events/ and task_events/).
    #[arg(long, conflicts_with_all = ["machines", "tasks", "hetero", "openb"])]
    trace: Option<PathBuf>,
    /// An OpenB pod list of Alibaba's 2023 GPU cluster trace (e.g. `csv/openb_pod_list_default.csv`
    /// of github.com/alibaba/clusterdata's cluster-trace-gpu-v2023), on the trace's node list
    /// beside it; CPU and memory only, every pod a production task (fauxmaster::neutral::load_openb).
    #[arg(long, conflicts_with_all = ["machines", "tasks", "hetero"])]
    openb: Option<PathBuf>,
    /// A synthetic heterogeneous cell and production workload from this seed instead of a
    /// trace (fauxmaster::synth::heterogeneous: 3-6 platforms of 16-128 cores and 120-768 GiB,
    /// CPU and memory only), for validating scoring on other cell shapes.
    #[arg(long, conflicts_with_all = ["machines", "tasks"])]
    hetero: Option<u64>,
    /// With --hetero: machines in the cell.
    #[arg(long, default_value_t = 1_500)]
    hetero_machines: usize,
    /// With --hetero: production tasks in the workload.
    #[arg(long, default_value_t = 4_600)]
    hetero_tasks: usize,
    /// With --hetero: the share of the cell's CPU or RAM (whichever is asked more) the
    /// workload requests.
    #[arg(long, default_value_t = 0.5)]
    hetero_load: f64,
    /// With --hetero SEED, compact only: this many cells, seeds SEED, SEED+1, ...; the report
    /// adds each cell's smallest cells summed over its removal orders (`cells`) and the sums
    /// over every cell (`summed`: hybrid, best fit, lower bound, and in how many cells the
    /// hybrid needed fewer or more machines than best fit). The other fields are the first
    /// cell's.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    hetero_cells: u64,
    /// Machines in the neutral CSV format (`id,cpu_millis,ram_bytes,disk_bytes,attrs`).
    #[arg(long, requires = "tasks")]
    machines: Option<PathBuf>,
    /// Tasks in the neutral CSV format (`job,index,priority,cpu_millis,ram_bytes,disk_bytes,different_machine,submit_time_s,duration_s,user`).
    #[arg(long, requires = "machines")]
    tasks: Option<PathBuf>,
    /// Trace only: millicores per 1.0 of normalized CPU.
    #[arg(long, default_value_t = 64_000.0)]
    cpu_scale: f64,
    /// Trace only: GiB per 1.0 of normalized memory.
    #[arg(long, default_value_t = 256.0)]
    ram_scale_gib: f64,
    /// Trace only: GiB per 1.0 of normalized disk (also every machine's disk capacity).
    #[arg(long, default_value_t = 4096.0)]
    disk_scale_gib: f64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Schedule the whole time-0 workload onto the time-0 cell from scratch, in one pass.
    Repack(Input),
    /// The time-0 state, then every event in time order, scheduling in passes like the master.
    Replay {
        #[command(flatten)]
        input: Input,
        /// Seconds of trace time between scheduling passes.
        #[arg(long, default_value_t = 1.0)]
        pass_interval: f64,
        /// Stop at this trace time, seconds (default: the last task event).
        #[arg(long)]
        until: Option<f64>,
        /// Write a utilization report (utilization.csv and utilization.svg) into this directory.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Seconds of trace time between utilization samples.
        #[arg(long, default_value_t = 60.0)]
        sample_every: f64,
        /// Take pending groups of one priority in arrival order instead of by their users'
        /// dominant shares (the master's fair share), to measure what fair share changes.
        #[arg(long)]
        no_fair_share: bool,
    },
    /// Cell compaction (Borg §5.1): the smallest cell that still holds the workload.
    Compact {
        #[command(flatten)]
        input: Input,
        /// Removal orders to try (median and 90th percentile are reported).
        #[arg(long, default_value_t = 11)]
        seeds: u32,
        /// Which tasks must fit: `production` (production and monitoring tasks), `fitting`
        /// (whatever a repack of the full cell places) or `all` (every time-0 task; with
        /// --reclaim, the cell that holds the whole workload).
        #[arg(long, default_value = "production", value_parser = ["production", "fitting", "all"])]
        workload: String,
    },
    /// Write the time-0 cell and workload in the neutral CSV format (e.g. from the trace, for
    /// hollow Borglets and `borgctl bench --tasks-csv`).
    Export {
        #[command(flatten)]
        input: Input,
        /// Machines CSV to write.
        #[arg(long)]
        machines_out: PathBuf,
        /// Tasks CSV to write (time-0 tasks).
        #[arg(long)]
        tasks_out: PathBuf,
        /// Keep only the first N machines, and the workload in proportion: whole jobs in trace
        /// order until their tasks reach the same share of the tasks as N of the machines.
        #[arg(long)]
        limit_machines: Option<usize>,
        /// With --limit-machines, still write every task (a workload larger than the cell).
        #[arg(long)]
        all_tasks: bool,
    },
    /// Repack of a synthetic C1M-shaped cell and workload (shapes in fauxmaster::synth).
    Synth {
        /// Machines.
        #[arg(long, default_value_t = 10_000)]
        machines: usize,
        /// Jobs.
        #[arg(long, default_value_t = 1_000)]
        jobs: usize,
        /// Tasks per job.
        #[arg(long, default_value_t = 1_000)]
        tasks_per_job: u32,
        /// Workload generator seed.
        #[arg(long, default_value_t = 42)]
        workload_seed: u64,
    },
}

fn load(input: &Input) -> anyhow::Result<(Workload, serde_json::Value)> {
    if input.hetero_cells > 1 {
        bail!("--hetero-cells is for compact only: the other commands take one cell (--hetero SEED)");
    }
    let gib = (1u64 << 30) as f64;
    if let Some(seed) = input.hetero {
        let w = fauxmaster::synth::heterogeneous(input.hetero_machines, input.hetero_tasks, input.hetero_load, seed);
        return Ok((w, serde_json::Value::Null));
    }
    if let Some(pods) = &input.openb {
        let w = fauxmaster::neutral::load_openb(pods).with_context(|| {
            format!(
                "loading OpenB pod list {} (the trace's {} must be in the same directory)",
                pods.display(),
                fauxmaster::neutral::OPENB_NODES
            )
        })?;
        return Ok((w, serde_json::Value::Null));
    }
    match (&input.trace, &input.machines, &input.tasks) {
        (Some(dir), _, _) => {
            let units = Units {
                cpu_millis: input.cpu_scale,
                ram_bytes: input.ram_scale_gib * gib,
                disk_bytes: input.disk_scale_gib * gib,
            };
            let (w, notes) =
                fauxmaster::trace::load(dir, &units).with_context(|| format!("loading trace {}", dir.display()))?;
            Ok((w, serde_json::to_value(notes)?))
        }
        (None, Some(m), Some(t)) => Ok((fauxmaster::neutral::load(m, t)?, serde_json::Value::Null)),
        _ => bail!("give --trace DIR, --machines FILE.csv and --tasks FILE.csv, --openb PODS.csv or --hetero SEED"),
    }
}

fn bar(len: u64, json: bool, what: &str) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({elapsed})") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

fn summary(r: &serde_json::Value) -> String {
    if r["command"] == "compact" {
        // compaction searches cell sizes: a placement rate would mean nothing
        let mut s = format!(
            "compact: {} machines; workload {}: {} of the {} tasks at time 0; {} seeds in {:.1} s\n",
            r["machines"],
            r["workload"].as_str().unwrap_or(""),
            r["tasks"],
            r["tasks_in_trace_time0"],
            r["seeds"],
            r["seconds"].as_f64().unwrap_or(0.0),
        );
        s.push_str(&compact_lines(r));
        return s;
    }
    let mut s = format!(
        "{}: {} machines, {} tasks: {} placed, {} unschedulable, {} preempted in {:.3} s ({:.0} tasks/s)\n",
        r["command"].as_str().unwrap_or(""),
        r["machines"],
        r["tasks"],
        r["placed"],
        r["unschedulable"],
        r["preempted"],
        r["seconds"].as_f64().unwrap_or(0.0),
        r["tasks_per_second"].as_f64().unwrap_or(0.0),
    );
    if let Some(u) = r.get("unschedulable_by_band") {
        s.push_str(&format!("  unschedulable by band: {u}\n"));
    }
    if let Some(note) = r["note"].as_str() {
        s.push_str(&format!("  note: {note}\n"));
    }
    if r["command"] == "replay" {
        s.push_str(&format!(
            "  {} passes: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n",
            r["passes"],
            r["pass_p50_ms"].as_f64().unwrap_or(0.0),
            r["pass_p90_ms"].as_f64().unwrap_or(0.0),
            r["pass_p99_ms"].as_f64().unwrap_or(0.0),
            r["pass_max_ms"].as_f64().unwrap_or(0.0)
        ));
        let w = &r["wait"];
        s.push_str(&format!(
            "  submit -> placed (fair share {}): {} tasks of {} users, p50 {:.1} s, p99 {:.1} s, max {:.1} s; per user: median p50 {:.1} s, median p99 {:.1} s, worst p99 {:.1} s; {} never placed\n",
            if r["fair_share"] == true { "on" } else { "off" },
            w["tasks"],
            w["users"],
            w["p50_s"].as_f64().unwrap_or(0.0),
            w["p99_s"].as_f64().unwrap_or(0.0),
            w["max_s"].as_f64().unwrap_or(0.0),
            w["user_p50_s_median"].as_f64().unwrap_or(0.0),
            w["user_p99_s_median"].as_f64().unwrap_or(0.0),
            w["user_p99_s_max"].as_f64().unwrap_or(0.0),
            w["never_placed"],
        ));
    }
    s.push_str(&tail_lines(r));
    s
}

/// The compaction result lines, then the common tail.
fn compact_lines(r: &serde_json::Value) -> String {
    let mut s = format!(
        "  smallest cell (hybrid): median {} p90 {}; lower bound {} (ratio {:.3})\n  smallest cell (best fit): median {} p90 {} (ratio {:.3})\n",
        r["min_machines_median"],
        r["min_machines_p90"],
        r["lower_bound_machines"],
        r["ratio_lower_bound_to_min"].as_f64().unwrap_or(0.0),
        r["best_fit_min_machines_median"],
        r["best_fit_min_machines_p90"],
        r["best_fit_ratio"].as_f64().unwrap_or(0.0),
    );
    if let Some(sum) = r.get("summed") {
        s.push_str(&format!(
            "  {} cells, summed over their removal orders: hybrid {} machines, best fit {}, lower bound {}; the hybrid needed fewer machines in {} cells, more in {}\n",
            sum["cells"],
            sum["hybrid_machines"],
            sum["best_fit_machines"],
            sum["lower_bound_machines"],
            sum["cells_hybrid_better"],
            sum["cells_hybrid_worse"],
        ));
    }
    s.push_str(&tail_lines(r));
    s
}

/// One cell's smallest cells (hybrid, best fit) and lower bounds, each summed over its removal
/// orders, from its compaction report's `per_seed`.
fn cell_sums(hetero_seed: u64, report: &serde_json::Value) -> serde_json::Value {
    let runs = report["per_seed"].as_array().map(Vec::as_slice).unwrap_or_default();
    let sum = |k: &str| runs.iter().map(|r| r[k].as_u64().unwrap_or(0)).sum::<u64>();
    serde_json::json!({
        "hetero_seed": hetero_seed,
        "hybrid_machines": sum("hybrid_min_machines"),
        "best_fit_machines": sum("best_fit_min_machines"),
        "lower_bound_machines": sum("lower_bound_machines"),
    })
}

/// The sums of [`cell_sums`] over every cell, and in how many cells the hybrid needed fewer
/// (`cells_hybrid_better`) or more (`cells_hybrid_worse`) machines than best fit.
fn summed(cells: &[serde_json::Value]) -> serde_json::Value {
    let get = |c: &serde_json::Value, k: &str| c[k].as_u64().unwrap_or(0);
    let sum = |k: &str| cells.iter().map(|c| get(c, k)).sum::<u64>();
    let hybrid_vs_best_fit = |o: std::cmp::Ordering| {
        cells.iter().filter(|c| get(c, "hybrid_machines").cmp(&get(c, "best_fit_machines")) == o).count()
    };
    serde_json::json!({
        "cells": cells.len(),
        "hybrid_machines": sum("hybrid_machines"),
        "best_fit_machines": sum("best_fit_machines"),
        "lower_bound_machines": sum("lower_bound_machines"),
        "cells_hybrid_better": hybrid_vs_best_fit(std::cmp::Ordering::Less),
        "cells_hybrid_worse": hybrid_vs_best_fit(std::cmp::Ordering::Greater),
    })
}

/// Allocation per resource and the units, the last lines of every summary.
fn tail_lines(r: &serde_json::Value) -> String {
    let mut s = String::new();
    for res in ["cpu", "ram", "disk"] {
        s.push_str(&format!("  {res} allocated: {}\n", r["utilization"][res]));
    }
    s.push_str(&format!("  units: {}\n", r["units"].as_str().unwrap_or("")));
    s
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let defaults = Params::default();
    let params = Params {
        seed: cli.sched.seed,
        candidates: cli.sched.candidates.unwrap_or(defaults.candidates),
        per_task: cli.sched.per_task.unwrap_or(defaults.per_task),
        fit_walk: !cli.sched.no_fit_walk,
        weights: if cli.sched.best_fit {
            Weights::best_fit()
        } else {
            let w = Weights::default();
            Weights { strand: cli.sched.strand.unwrap_or(w.strand), spread: cli.sched.spread.unwrap_or(w.spread), ..w }
        },
        preemption: !cli.sched.no_preemption,
        explain: true,
        second_pass: !cli.sched.no_second_pass,
    };
    let started = Instant::now();
    let Outcome { mut report, placements, .. } = match &cli.command {
        Cmd::Repack(input) => {
            let (w, notes) = load(input)?;
            let load_s = started.elapsed().as_secs_f64();
            let mut o = sim::repack(&w, params, cli.sched.reclaim);
            o.report["load_seconds"] = load_s.into();
            o.report["load_notes"] = notes;
            o
        }
        Cmd::Replay { input, pass_interval, until, report, sample_every, no_fair_share } => {
            let (w, notes) = load(input)?;
            let load_s = started.elapsed().as_secs_f64();
            let pb = bar(w.events.len() as u64, cli.json, "replaying events");
            let opts = sim::ReplayOptions {
                interval_s: *pass_interval,
                until_s: *until,
                sample_every_s: *sample_every,
                fair_share: !*no_fair_share,
                reclaim: cli.sched.reclaim,
            };
            let mut o = sim::replay(&w, params, opts, |done, _| pb.set_position(done as u64));
            pb.finish_and_clear();
            o.report["load_seconds"] = load_s.into();
            o.report["load_notes"] = notes;
            if let Some(note) = fauxmaster::report::overcommit_note(&o.samples) {
                o.report["note"] = note.into();
            }
            if let Some(dir) = report {
                let title = "Replay: capacity vs allocated, by priority band";
                fauxmaster::report::write(dir, &o.samples, title, &w.units)
                    .with_context(|| format!("writing report to {}", dir.display()))?;
                o.report["report_dir"] = dir.display().to_string().into();
            }
            o
        }
        Cmd::Compact { input, seeds, workload } => {
            let which = match workload.as_str() {
                "fitting" => sim::CompactWorkload::Fitting,
                "all" => sim::CompactWorkload::All,
                _ => sim::CompactWorkload::Production,
            };
            if input.hetero.is_none() && input.hetero_cells > 1 {
                bail!("--hetero-cells {} needs --hetero SEED (the first cell's seed)", input.hetero_cells);
            }
            let cells = input.hetero_cells;
            let pb = bar(*seeds as u64 * cells, cli.json, "compacting (cells x seeds)");
            let mut outcomes = Vec::new();
            for cell in 0..cells {
                let input = Input { hetero: input.hetero.map(|s| s + cell), hetero_cells: 1, ..input.clone() };
                let (w, _) = load(&input)?;
                let done = cell * *seeds as u64;
                let o =
                    sim::compact(&w, params, *seeds, which, cli.sched.reclaim, |d, _| pb.set_position(done + d as u64));
                outcomes.push((input.hetero.unwrap_or(0), o));
            }
            pb.finish_and_clear();
            let per_cell: Vec<serde_json::Value> =
                outcomes.iter().map(|(seed, o)| cell_sums(*seed, &o.report)).collect();
            let mut o = outcomes.swap_remove(0).1;
            if cells > 1 {
                o.report["summed"] = summed(&per_cell);
                o.report["cells"] = per_cell.into();
            }
            o
        }
        Cmd::Export { input, machines_out, tasks_out, limit_machines, all_tasks } => {
            let (w, _) = load(input)?;
            let n = limit_machines.unwrap_or(w.machines.len()).min(w.machines.len());
            let tasks = if *all_tasks || w.machines.is_empty() {
                w.tasks.len()
            } else {
                (w.tasks.len() as u128 * n as u128 / w.machines.len() as u128) as usize
            };
            let (m, t) = fauxmaster::neutral::write(&w, n, tasks, machines_out, tasks_out)?;
            println!("wrote {m} machines to {} and {t} tasks to {}", machines_out.display(), tasks_out.display());
            return Ok(());
        }
        Cmd::Synth { machines, jobs, tasks_per_job, workload_seed } => {
            let w = fauxmaster::synth::generate(*machines, *jobs, *tasks_per_job, *workload_seed);
            let mut o = sim::repack(&w, params, cli.sched.reclaim);
            o.report["command"] = "synth".into();
            o
        }
    };
    report["threads"] = rayon::current_num_threads().into();
    if let Some(path) = &cli.placements {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        writeln!(f, "job,index,machine")?;
        for (job, index, machine) in &placements {
            writeln!(f, "{job},{index},{machine}")?;
        }
        f.flush()?;
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", summary(&report));
    }
    Ok(())
}
