//! `replbench`: benchmarks of the replicated Borgmaster (not timed tests).
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/replbench failover [--trials 20]
//! target/release/replbench throughput [--seconds 5] [--concurrency 1,64] [--rounds 1]   # needs etcd on PATH
//! ```
//!
//! - `failover`: 3 replicas on loopback (fsync on); per trial, kill -9 the leader and time until
//!   the first apply is acknowledged by the group (sent to a surviving replica, which forwards it
//!   to the new leader once one is elected); the old leader restarts and catches up before the
//!   next trial. Prints p50/p90/p99/max.
//! - `throughput`: the same load generator drives 3 Borgmaster replicas (ApplyJob, each an update
//!   of one of 16 jobs per client, so the cell stays the same size) and a 3-member etcd cluster
//!   (Debian's etcd-server; `Put` of a value as large as the encoded ApplyJob request), both
//!   with fsync, at each concurrency, one after the other in this run. Prints ops/s, p50/p99
//!   and the ratio borgmaster/etcd. With `--rounds N` it does that N times, Borgmaster first in
//!   odd rounds and etcd first in even ones, and ends with each concurrency's median ratio and
//!   range, and median CPU per operation: on a shared box etcd alone swings by a third from one
//!   5-second run to the next, so one pair of runs does not tell a ratio.
//!
//! The etcd client is two prost messages and tonic's generic unary call (`/etcdserverpb.KV/Put`):
//! the etcd-client crate would bring a second tonic/prost version into the workspace.

use borg_proto as pb;
use borg_proto::borgmaster_client::BorgmasterClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// etcd's `PutRequest` (fields 1 and 2 of etcdserverpb.PutRequest).
#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// etcd's `PutResponse`; its fields are not read.
#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {}

/// etcd's `StatusRequest` (etcdserverpb.Maintenance/Status): no fields.
#[derive(Clone, PartialEq, prost::Message)]
struct StatusRequest {}

/// etcd's `StatusResponse`: the header (field 1) and the leader's member id (field 4).
#[derive(Clone, PartialEq, prost::Message)]
struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(uint64, tag = "4")]
    leader: u64,
}

/// etcd's `ResponseHeader`: the answering member's id (field 2).
#[derive(Clone, PartialEq, prost::Message)]
struct ResponseHeader {
    #[prost(uint64, tag = "2")]
    member_id: u64,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().map(|d| d.join(name)).unwrap_or_else(|| PathBuf::from(name))
}

/// The Borgmaster group: replica processes and addresses.
struct Group {
    dir: PathBuf,
    addrs: Vec<String>,
    procs: Vec<Option<Child>>,
}

impl Group {
    fn start(dir: &Path, n: usize) -> anyhow::Result<Group> {
        let addrs: Vec<String> = (0..n).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let mut g = Group { dir: dir.to_path_buf(), addrs, procs: (0..n).map(|_| None).collect() };
        for i in 0..n {
            g.start_replica(i)?;
        }
        Ok(g)
    }

    fn start_replica(&mut self, i: usize) -> anyhow::Result<()> {
        let peers: Vec<String> = self.addrs.iter().enumerate().map(|(j, a)| format!("{}={a}", j + 1)).collect();
        let log = std::fs::File::create(self.dir.join(format!("master{}.log", i + 1)))?;
        let child = Command::new(bin("borgmaster"))
            .args(["--id", &(i + 1).to_string(), "--peers", &peers.join(","), "--listen", &self.addrs[i]])
            .args(["--default-quota", "unlimited", "--cell", "bench"])
            .arg("--insecure")
            .arg("--data-dir")
            .arg(self.dir.join(format!("master{}", i + 1)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.procs[i] = Some(child);
        Ok(())
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The leader's index, as the replicas report themselves.
    async fn leader(&self) -> Option<usize> {
        for (i, a) in self.addrs.iter().enumerate().filter(|(i, _)| self.procs[*i].is_some()) {
            if let Ok(s) = borgmaster::raft::peer_status(a, Duration::from_millis(300)).await {
                if s.role == "leader" && s.id == i as u64 + 1 {
                    return Some(i);
                }
            }
        }
        None
    }

    async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            anyhow::ensure!(Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until replica `i` applied at least what `l` has applied.
    async fn wait_caught_up(&self, i: usize, l: usize) -> anyhow::Result<()> {
        let target = borgmaster::raft::peer_status(&self.addrs[l], Duration::from_secs(1))
            .await
            .map_err(|e| anyhow::anyhow!(e))?
            .last_applied_index;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = borgmaster::raft::peer_status(&self.addrs[i], Duration::from_millis(300)).await {
                if s.role == "follower" && s.last_applied_index >= target {
                    return Ok(());
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "replica {} did not catch up", i + 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill9(i);
        }
    }
}

fn job(name: String, rev: u64) -> pb::JobSpec {
    let command = vec!["/bin/sleep".into(), "86400".into(), format!("--rev={rev}")];
    let resources = scheduler_core::Resources::new(100, 64 << 20, 0);
    let mut spec = borg_jobspec::JobSpec::new(
        name,
        "bench",
        scheduler_core::Priority(0),
        borg_jobspec::JobKind::Service,
        1,
        command,
        resources,
    );
    spec.grace_period_ms = 1000;
    (&spec).into()
}

async fn client(addrs: &[String]) -> anyhow::Result<BorgmasterClient<Channel>> {
    let (_, ch) = borg_rpc::client::connect_any(addrs, None, Duration::from_secs(2), Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(BorgmasterClient::new(ch))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn failover(trials: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut g = Group::start(dir.path(), 3)?;
    g.wait_leader(Duration::from_secs(20)).await?;
    let mut c = client(&g.addrs).await?;
    c.apply_job(pb::ApplyJobRequest { spec: Some(job("warmup".into(), 0)), ..Default::default() }).await?;
    let mut times = Vec::new();
    for trial in 0..trials {
        let l = g.wait_leader(Duration::from_secs(20)).await?;
        let survivors: Vec<String> =
            g.addrs.iter().enumerate().filter(|(i, _)| *i != l).map(|(_, a)| a.clone()).collect();
        let mut c = client(&survivors).await?;
        let t0 = Instant::now();
        g.kill9(l);
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            let req = pb::ApplyJobRequest { spec: Some(job(format!("f{trial}"), attempt)), ..Default::default() };
            match c.apply_job(req).await {
                Ok(_) => break,
                Err(e) if t0.elapsed() < Duration::from_secs(60) => {
                    eprintln!("trial {trial}: {} (retrying)", e.message());
                    c = client(&survivors).await?;
                }
                Err(e) => anyhow::bail!("no write acknowledged 60 s after the kill: {}", e.message()),
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "trial {:2}: leader {} killed, first write acknowledged after {:.0} ms",
            trial + 1,
            l + 1,
            secs * 1e3
        );
        times.push(secs);
        g.start_replica(l)?;
        let nl = g.wait_leader(Duration::from_secs(20)).await?;
        g.wait_caught_up(l, nl).await?;
    }
    times.sort_by(f64::total_cmp);
    println!(
        "failover, 3 replicas, {} trials: kill -9 of the leader -> first write acknowledged: \
         p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        times.len(),
        pct(&times, 0.5) * 1e3,
        pct(&times, 0.9) * 1e3,
        pct(&times, 0.99) * 1e3,
        times.last().copied().unwrap_or(0.0) * 1e3
    );
    Ok(())
}

/// Runs `workers` loops of `op` for `seconds`; returns (ops/s, sorted latencies in s).
async fn drive<F, Fut>(workers: usize, seconds: f64, op: F) -> anyhow::Result<(f64, Vec<f64>)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = tokio::task::JoinSet::new();
    let t0 = Instant::now();
    for w in 0..workers {
        let (op, stop) = (op.clone(), stop.clone());
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                op(w, i).await?;
                lat.push(t.elapsed().as_secs_f64());
                i += 1;
            }
            anyhow::Ok(lat)
        });
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok((all.len() as f64 / elapsed, all))
}

/// A 3-member etcd cluster on loopback.
struct Etcd {
    procs: Vec<Child>,
    clients: Vec<String>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn start_etcd(dir: &Path) -> anyhow::Result<Etcd> {
    let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let cluster: Vec<String> =
        peer_ports.iter().enumerate().map(|(i, p)| format!("e{i}=http://127.0.0.1:{p}")).collect();
    let mut etcd = Etcd { procs: Vec::new(), clients: Vec::new() };
    for i in 0..3 {
        let data = dir.join(format!("etcd{i}"));
        // a retry starts a new cluster: an earlier attempt's data dir names the old members
        let _ = std::fs::remove_dir_all(&data);
        let log = std::fs::File::create(dir.join(format!("etcd{i}.log")))?;
        let client_url = format!("http://127.0.0.1:{}", client_ports[i]);
        let peer_url = format!("http://127.0.0.1:{}", peer_ports[i]);
        // plain http URLs are etcd's insecure mode: it has no --insecure flag (3.4 exits on it)
        let child = Command::new("etcd")
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &cluster.join(","), "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "replbench", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting etcd (apt-get install etcd-server): {e}"))?;
        etcd.procs.push(child);
        etcd.clients.push(format!("127.0.0.1:{}", client_ports[i]));
    }
    Ok(etcd)
}

/// The last `lines` lines of each member's log in `dir`, for an error message.
fn etcd_log_tails(dir: &Path, lines: usize) -> String {
    (0..3)
        .map(|i| {
            let text = std::fs::read_to_string(dir.join(format!("etcd{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("--- etcd{i}.log (last {lines} lines)\n{}", tail.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts a 3-member etcd cluster and waits until one of its members accepts a put; returns the
/// cluster and a channel to that member. The ports come from `free_port`, which frees them before
/// etcd binds them: another process (an outgoing connection of the Borgmaster replicas, say) may
/// take one in between, and that member exits. A member that exits restarts the whole cluster on
/// fresh ports (3 attempts); each attempt waits up to 60 s (a first election on a busy box).
async fn start_etcd_ready(dir: &Path) -> anyhow::Result<(Etcd, Channel)> {
    const ATTEMPTS: usize = 3;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let mut etcd = start_etcd(dir)?;
        let chans: Vec<Channel> = etcd
            .clients
            .iter()
            .map(|c| {
                tonic::transport::Endpoint::from_shared(format!("http://{c}"))
                    .map(|e| e.timeout(Duration::from_secs(30)).connect_timeout(Duration::from_secs(2)).connect_lazy())
            })
            .collect::<Result<_, _>>()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        'wait: loop {
            for (i, p) in etcd.procs.iter_mut().enumerate() {
                if let Ok(Some(status)) = p.try_wait() {
                    last = format!("attempt {attempt}: etcd member e{i} exited ({status})");
                    eprintln!("{last}; restarting the cluster on fresh ports");
                    break 'wait;
                }
            }
            for ch in &chans {
                match tokio::time::timeout(Duration::from_secs(5), etcd_put(ch.clone(), b"warmup".to_vec(), vec![0; 8]))
                    .await
                {
                    // the clients talk to etcd's leader, as to the Borgmaster's (a follower
                    // forwards the proposal to it: one more hop)
                    Ok(Ok(())) => return Ok((etcd, etcd_leader(&chans).await.unwrap_or_else(|| ch.clone()))),
                    Ok(Err(e)) => last = format!("attempt {attempt}: {e}"),
                    Err(_) => last = format!("attempt {attempt}: a put took over 5 s"),
                }
            }
            if Instant::now() >= deadline {
                last = format!("{last} (no member accepted a put within 60 s)");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(etcd);
    }
    anyhow::bail!("etcd did not accept a write after {ATTEMPTS} attempts; last: {last}\n{}", etcd_log_tails(dir, 20))
}

/// The channel of `chans` to the member that leads, as the members report it; `None` (with a
/// line on stderr) when none says so within 5 s.
async fn etcd_leader(chans: &[Channel]) -> Option<Channel> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        for (i, ch) in chans.iter().enumerate() {
            let mut grpc = tonic::client::Grpc::new(ch.clone());
            let path = tonic::codegen::http::uri::PathAndQuery::from_static("/etcdserverpb.Maintenance/Status");
            let codec: tonic_prost::ProstCodec<StatusRequest, StatusResponse> = tonic_prost::ProstCodec::default();
            let status = async {
                grpc.ready().await?;
                Ok::<_, anyhow::Error>(
                    grpc.unary(tonic::Request::new(StatusRequest {}), path, codec).await?.into_inner(),
                )
            };
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), status).await {
                if s.leader != 0 && s.header.is_some_and(|h| h.member_id == s.leader) {
                    println!("etcd leader: member e{i} (the clients talk to it)");
                    return Some(ch.clone());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("no etcd member says it leads; the clients talk to the first that took a put");
    None
}

async fn etcd_put(ch: Channel, key: Vec<u8>, value: Vec<u8>) -> anyhow::Result<()> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Put");
    let codec: tonic_prost::ProstCodec<PutRequest, PutResponse> = tonic_prost::ProstCodec::default();
    grpc.unary(tonic::Request::new(PutRequest { key, value }), path, codec).await?;
    Ok(())
}

/// CPU seconds (user + system) the processes `pids` have used so far (0 for one that is gone).
fn cpu_seconds(pids: &[u32]) -> f64 {
    let tick = procfs::ticks_per_second() as f64;
    pids.iter()
        .filter_map(|&p| procfs::process::Process::new(p as i32).ok()?.stat().ok())
        .map(|s| (s.utime + s.stime) as f64 / tick)
        .sum()
}

/// One system's run at one concurrency: operations per second, sorted latencies (seconds),
/// CPU time of its 3 processes per operation and CPU time of this load generator per operation
/// (microseconds).
struct Run {
    ops: f64,
    lat: Vec<f64>,
    cpu: f64,
    client: f64,
}

/// [`drive`] measured: its operations per second and latencies, the CPU time `pids` spent per
/// operation, and the CPU time this process (the load generator, on the same cores) spent per
/// operation.
async fn measured<F, Fut>(pids: &[u32], workers: usize, seconds: f64, op: F) -> anyhow::Result<Run>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let me = [std::process::id()];
    let (cpu0, client0) = (cpu_seconds(pids), cpu_seconds(&me));
    let (ops, lat) = drive(workers, seconds, op).await?;
    let per_op = |used: f64| used / (ops * seconds).max(1.0) * 1e6;
    Ok(Run { ops, lat, cpu: per_op(cpu_seconds(pids) - cpu0), client: per_op(cpu_seconds(&me) - client0) })
}

/// The median of `xs` (the mean of the middle two when even); 0 when empty.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

async fn throughput(seconds: f64, concurrency: &[usize], rounds: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let g = Group::start(dir.path(), 3)?;
    let l = g.wait_leader(Duration::from_secs(20)).await?;
    let (etcd, etcd_ch) = start_etcd_ready(dir.path()).await?;
    // the clients talk to the Borgmaster leader (a follower would forward: one more hop)
    let master = client(std::slice::from_ref(&g.addrs[l])).await?;
    let sample = pb::ApplyJobRequest { spec: Some(job("bench-63-15".into(), 1_000_000)), ..Default::default() };
    let value_size = prost::Message::encoded_len(&sample);
    println!("value size: {value_size} bytes (encoded ApplyJob request); {seconds} s per run; fsync on both");
    println!("cpu: CPU time of the 3 replicas (or 3 members) per operation, microseconds (less noisy than ops/s on a shared box)");
    println!("client: CPU time of this load generator per operation, microseconds (it shares the cores)");
    let b_pids: Vec<u32> = g.procs.iter().flatten().map(|c| c.id()).collect();
    let e_pids: Vec<u32> = etcd.procs.iter().map(|c| c.id()).collect();
    let borgmaster = |c: usize| {
        let m = master.clone();
        measured(&b_pids, c, seconds, move |w, i| {
            let mut m = m.clone();
            async move {
                let spec = job(format!("bench-{w}-{}", i % 16), i);
                m.apply_job(pb::ApplyJobRequest { spec: Some(spec), ..Default::default() }).await?;
                Ok(())
            }
        })
    };
    let etcd_run = |c: usize| {
        let ch = etcd_ch.clone();
        measured(&e_pids, c, seconds, move |w, i| {
            let ch = ch.clone();
            async move { etcd_put(ch, format!("bench/{w}/{}", i % 16).into_bytes(), vec![b'x'; value_size]).await }
        })
    };
    // per concurrency, per round
    struct Round {
        ratio: f64,
        /// CPU per op of [borgmaster's replicas, etcd's members], microseconds
        cpu: [f64; 2],
        /// CPU per op of the load generator driving [borgmaster, etcd], microseconds
        client: [f64; 2],
    }
    let mut seen: Vec<Vec<Round>> = concurrency.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds.max(1) {
        if rounds > 1 {
            println!("round {round} of {rounds} ({} first)", if round % 2 == 1 { "borgmaster" } else { "etcd" });
        }
        for (k, &c) in concurrency.iter().enumerate() {
            let (b, e) = if round % 2 == 1 {
                let b = borgmaster(c).await?;
                (b, etcd_run(c).await?)
            } else {
                let e = etcd_run(c).await?;
                (borgmaster(c).await?, e)
            };
            let ratio = b.ops / e.ops.max(1e-9);
            println!(
                "concurrency {c:3}: borgmaster {:7.0} applies/s (p50 {:.1} ms, p99 {:.1} ms, cpu {:.0}, client {:.0}) | \
                 etcd {:7.0} puts/s (p50 {:.1} ms, p99 {:.1} ms, cpu {:.0}, client {:.0}) | ratio {ratio:.2}",
                b.ops,
                pct(&b.lat, 0.5) * 1e3,
                pct(&b.lat, 0.99) * 1e3,
                b.cpu,
                b.client,
                e.ops,
                pct(&e.lat, 0.5) * 1e3,
                pct(&e.lat, 0.99) * 1e3,
                e.cpu,
                e.client,
            );
            seen[k].push(Round { ratio, cpu: [b.cpu, e.cpu], client: [b.client, e.client] });
        }
    }
    if rounds > 1 {
        for (&c, runs) in concurrency.iter().zip(&seen) {
            let ratios: Vec<f64> = runs.iter().map(|r| r.ratio).collect();
            let (lo, hi) = ratios.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
            println!(
                "concurrency {c:3} over {rounds} rounds: median ratio {:.2} (range {lo:.2}-{hi:.2}); median cpu per op: borgmaster {:.0}, etcd {:.0}; client {:.0}, {:.0}",
                median(ratios),
                median(runs.iter().map(|r| r.cpu[0]).collect()),
                median(runs.iter().map(|r| r.cpu[1]).collect()),
                median(runs.iter().map(|r| r.client[0]).collect()),
                median(runs.iter().map(|r| r.client[1]).collect()),
            );
        }
    }
    Ok(())
}

fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => {
            let v = args.get(i + 1).ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?;
            v.parse().map_err(|_| anyhow::anyhow!("{name}: cannot parse {v:?}"))
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    const USAGE: &str =
        "usage: replbench failover [--trials N] | throughput [--seconds S] [--concurrency 1,64] [--rounds N]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    match args.first().map(String::as_str) {
        Some("failover") => failover(flag(&args, "--trials", 20)?).await,
        Some("throughput") => {
            let list: String = flag(&args, "--concurrency", "1,64".to_string())?;
            let cs: Vec<usize> = list.split(',').map(|c| c.trim().parse()).collect::<Result<_, _>>()?;
            throughput(flag(&args, "--seconds", 5.0)?, &cs, flag(&args, "--rounds", 1)?).await
        }
        _ => {
            // a usage error is not a failure to trace: no anyhow backtrace under RUST_BACKTRACE
            eprintln!("{USAGE}");
            std::process::exit(2)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(super::median(Vec::new()), 0.0);
    }
}
