//! `bench`: the load driver (borgctl::bench), from synthetic jobs or a tasks CSV.

use super::Cx;
use crate::cli::BenchArgs;

use crate::conn::credentials;
use crate::output::print_json;
use anyhow::anyhow;
use borg_proto::borgmaster_client::BorgmasterClient;
use std::process::ExitCode;
use std::time::Duration;

/// Applies the jobs and reports throughput and latencies.
///
/// Errors: a bad --cpu, --ram or --priority, an unreachable master, an unreadable CSV.
pub async fn bench(cx: &Cx, a: BenchArgs) -> anyhow::Result<ExitCode> {
    let BenchArgs {
        prefix,
        jobs,
        tasks_per_job,
        cpu,
        ram,
        priority,
        concurrency,
        timeout,
        settle,
        max_unavailable,
        tasks_csv,
        watchers,
        watch_changes,
    } = a;
    use borg_jobspec::quantity::{parse_bytes, parse_cpu, Scalar};
    let cpu = parse_cpu(&Scalar::Str(cpu)).map_err(|e| anyhow!("--cpu: {e}"))?;
    let ram = parse_bytes(&Scalar::Str(ram)).map_err(|e| anyhow!("--ram: {e}"))?;
    let priority = match scheduler_core::Band::from_name(&priority) {
        Some(b) => b.base_priority().0,
        None => priority.parse().map_err(|_| anyhow!("--priority: {priority:?} is not a band or an integer"))?,
    };
    // one HTTP/2 channel carries every concurrent apply; 120 s per call
    let addrs = borg_rpc::client::master_addresses(&cx.master).map_err(|e| anyhow!("--master: {e}"))?;
    let (_, ch) =
        borg_rpc::client::connect_any(&addrs, credentials(), Duration::from_secs(5), Duration::from_secs(120))
            .await
            .map_err(|e| anyhow!("{e}"))?;
    let client = BorgmasterClient::new(ch);
    let spec = borgctl::bench::BenchSpec {
        prefix,
        jobs,
        tasks_per_job,
        resources: scheduler_core::Resources::new(cpu, ram, 0),
        priority,
        concurrency,
        timeout: Duration::from_secs(timeout),
        settle: (settle > 0).then(|| Duration::from_secs(settle)),
        max_unavailable,
    };
    let specs = match &tasks_csv {
        Some(p) => borgctl::bench::jobs_from_csv(p, &spec.prefix)?,
        None => borgctl::bench::synthetic_jobs(&spec),
    };
    let first = specs.first().cloned();
    let mut r = borgctl::bench::run(client, &spec, specs).await?;
    if let (true, Some(first)) = (watchers > 0, first) {
        // one HTTP/2 connection per 100 watchers
        let mut channels = Vec::new();
        for _ in 0..watchers.div_ceil(100) {
            let (_, ch) =
                borg_rpc::client::connect_any(&addrs, credentials(), Duration::from_secs(5), Duration::from_secs(120))
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
            channels.push(ch);
        }
        let w = borgctl::bench::watch_fanout(channels, first, watchers, watch_changes, Duration::from_secs(timeout))
            .await?;
        r["watch"] = w;
    }
    if cx.json {
        print_json(&r)?;
    } else {
        outln!(
            "{} of {} tasks ({} jobs, concurrency {}) running {:.3} s after the first apply: {:.0} tasks/s\n  apply -> bound:   p50 {} ms, p90 {} ms, p99 {} ms\n  apply -> running: p50 {} ms, p90 {} ms, p99 {} ms",
            r["running"], r["tasks"], r["jobs"], r["concurrency"], r["seconds"].as_f64().unwrap_or(0.0), r["tasks_per_second"].as_f64().unwrap_or(0.0),
            r["apply_to_bound"]["p50_ms"], r["apply_to_bound"]["p90_ms"], r["apply_to_bound"]["p99_ms"],
            r["apply_to_running"]["p50_ms"], r["apply_to_running"]["p90_ms"], r["apply_to_running"]["p99_ms"],
        )?;
        if let Some(w) = r.get("watch") {
            outln!(
                "{} watchers, {} changes: readiness committed -> seen p50 {} ms, p99 {} ms, max {} ms; apply -> seen p50 {} ms, p99 {} ms",
                w["watchers"], w["changes"], w["ready_to_seen"]["p50_ms"], w["ready_to_seen"]["p99_ms"], w["ready_to_seen"]["max_ms"],
                w["apply_to_seen"]["p50_ms"], w["apply_to_seen"]["p99_ms"],
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
