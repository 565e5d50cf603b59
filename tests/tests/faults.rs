//! Fault injection (issue 18): a replicated master group of real processes (3 and 5 replicas,
//! RocksDB, gRPC, openraft), two real Borglets running a real job, clients applying, killing and
//! reading jobs the whole time, and a nemesis injecting, at random from a printed seed: kill -9
//! of the leader or of a follower (restarted after a random delay), SIGSTOP/SIGCONT pauses of
//! 1-5 s, network partitions (each replica in a network namespace of its own, cut off with
//! iptables; skipped with a printed reason where namespaces cannot be made), membership changes
//! (a follower removed, its data dir wiped, added back as a new member) and a crash in the middle
//! of writing a snapshot (failpoint `snapshot-write`).
//!
//! Every operation's invocation, outcome (ok, refused, unknown) and times are recorded, and at
//! the end each job's history is checked for linearizability against the job-store model
//! (`borg_integration_tests::linearizability`: apply with an expected version is a
//! compare-and-set; kill; a linearizable get). Then: the replicas agree on every job, every
//! acknowledged version is on every replica, and every Borglet task kept its pid with 0
//! restarts.
//!
//! Knobs (environment): `BORG_FAULTS` (faults to inject; default 100 with 3 replicas, 30 with
//! 5), `BORG_FAULT_SECONDS` (stop injecting after this long; default 300), `BORG_FAULT_SEED`
//! (the nemesis's seed; printed by every run). The long run:
//! `BORG_FAULTS=1000 BORG_FAULT_SECONDS=7200 cargo test -p borg-integration-tests --test faults
//! -- --nocapture nemesis_3`. A seed reproduces the nemesis's choices (which fault, which
//! replica, how long), not the processes' timing.

use borg_integration_tests::group::MasterGroup;
use borg_integration_tests::linearizability::{
    check, key_name, random_input, JobInput, JobOutput, JobState, JobStore, Op, Verdict,
};
use borg_proto as pb;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after its invocation an operation whose answer was lost may still take effect, in
/// microseconds (see the checker's docs: a bound only adds false alarms, never hides an
/// anomaly). Faults last at most 5 s, a forwarded write waits at most 5 s for a leader, and
/// clients give up after 5 s: 30 s leaves room.
const UNKNOWN_EFFECT_WITHIN_US: u64 = 30_000_000;
/// Jobs the clients work on (one key each of the model).
const KEYS: usize = 3;
/// Client tasks.
const CLIENTS: usize = 4;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The spec of key `k` holding `value`, as the API takes it.
fn key_spec(k: usize, value: u64) -> pb::JobSpec {
    (&borg_integration_tests::linearizability::key_spec(k, value, "faults")).into()
}

type History = Vec<(usize, Op<JobInput, JobOutput>)>;

/// One client's connections, one per replica.
struct Client {
    conns: Vec<pb::borgmaster_client::BorgmasterClient<tonic::transport::Channel>>,
}

impl Client {
    fn new(addrs: &[String]) -> Client {
        let conns = addrs
            .iter()
            .map(|a| {
                let ch = tonic::transport::Endpoint::from_shared(format!("http://{a}"))
                    .expect("endpoint")
                    .connect_timeout(Duration::from_secs(1))
                    .connect_lazy();
                pb::borgmaster_client::BorgmasterClient::new(ch)
            })
            .collect();
        Client { conns }
    }

    fn request<T>(msg: T, linearizable: bool) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(Duration::from_secs(4));
        if linearizable {
            r.metadata_mut().insert(
                borg_rpc::client::CONSISTENCY_HEADER,
                tonic::metadata::MetadataValue::from_static(borg_rpc::client::LINEARIZABLE),
            );
        }
        r
    }

    /// Runs `input` on key `k` through replica `at`: `Ok(None)` when the outcome is unknown
    /// (or, for a get, when it failed: a read that failed changed nothing), `Err(())` when it
    /// surely never reached a replica (the connection was refused: it had no effect).
    async fn run(&mut self, at: usize, k: usize, input: &JobInput) -> Result<Option<JobOutput>, ()> {
        let out = self.run_once(at, k, input).await;
        match out {
            Err(s) if borg_rpc::client::connection_refused(&s) => Err(()),
            Err(_) => Ok(None),
            Ok(o) => Ok(o),
        }
    }

    async fn run_once(&mut self, at: usize, k: usize, input: &JobInput) -> Result<Option<JobOutput>, tonic::Status> {
        let c = &mut self.conns[at];
        match input {
            JobInput::Apply { value, expected } => {
                let req = pb::ApplyJobRequest {
                    spec: Some(key_spec(k, *value)),
                    dry_run: false,
                    expected_version: *expected,
                };
                match tokio::time::timeout(Duration::from_secs(5), c.apply_job(Self::request(req, false))).await {
                    Ok(Ok(r)) => Ok(Some(JobOutput::Applied { version: r.into_inner().version })),
                    Ok(Err(s)) if s.code() == tonic::Code::FailedPrecondition => {
                        // "job "k0" is at version 5, not the expected 3"
                        let actual = s.message().split("at version ").nth(1).and_then(|t| t.split(',').next());
                        Ok(actual
                            .and_then(|a| a.trim().parse().ok())
                            .map(|actual| JobOutput::VersionMismatch { actual }))
                    }
                    Ok(Err(s)) => Err(s),
                    Err(_) => Ok(None),
                }
            }
            JobInput::Kill => {
                let req = pb::KillJobRequest { name: key_name(k) };
                match tokio::time::timeout(Duration::from_secs(5), c.kill_job(Self::request(req, false))).await {
                    Ok(Ok(r)) => Ok(Some(JobOutput::Killed { already: r.into_inner().already_finished })),
                    Ok(Err(s)) if s.code() == tonic::Code::NotFound => Ok(Some(JobOutput::NoSuchJob)),
                    Ok(Err(s)) => Err(s),
                    Err(_) => Ok(None),
                }
            }
            JobInput::Get => {
                let req = pb::GetJobRequest { name: key_name(k) };
                match tokio::time::timeout(Duration::from_secs(5), c.get_job(Self::request(req, true))).await {
                    Ok(Ok(r)) => Ok(Some(JobOutput::Got(job_state(r.into_inner().job.as_ref())))),
                    Ok(Err(s)) if s.code() == tonic::Code::NotFound => Ok(Some(JobOutput::Got(None))),
                    Ok(Err(s)) => Err(s),
                    Err(_) => Ok(None),
                }
            }
        }
    }

    /// Replica `at`'s own copy of key `k` (not linearizable: what that replica has applied).
    async fn local(&mut self, at: usize, k: usize) -> Result<JobState, String> {
        let req = pb::GetJobRequest { name: key_name(k) };
        match self.conns[at].get_job(Self::request(req, false)).await {
            Ok(r) => Ok(job_state(r.into_inner().job.as_ref())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s.message().to_string()),
        }
    }
}

fn job_state(j: Option<&pb::Job>) -> JobState {
    let j = j?;
    let value = j.spec.as_ref()?.env.get("V")?.parse().ok()?;
    Some((j.version, value, j.state == "killed"))
}

/// What the clients did, until `stop`.
async fn client_loop(
    id: usize,
    addrs: Vec<String>,
    seed: u64,
    start: Instant,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut client = Client::new(&addrs);
    let mut known: HashMap<usize, u64> = HashMap::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let k = rng.random_range(0..KEYS);
        seq += 1;
        let input = random_input(&mut rng, id, seq, known.get(&k).copied(), 45, 10);
        let at = rng.random_range(0..addrs.len());
        let call = start.elapsed().as_micros() as u64;
        let Ok(output) = client.run(at, k, &input).await else {
            // refused at the connection: it never happened
            continue;
        };
        let ret = if output.is_some() { start.elapsed().as_micros() as u64 } else { call + UNKNOWN_EFFECT_WITHIN_US };
        if let Some(v) = output.as_ref().and_then(JobOutput::version) {
            known.insert(k, v);
        }
        // a failed read changed nothing: it is left out of the history
        if output.is_none() && input == JobInput::Get {
            continue;
        }
        history.lock().unwrap().push((k, Op { client: id, input, output, call, ret }));
    }
}

/// The voters once the leader's membership is not joint (a change a former leader left half
/// done is finished by the next leader); None if that did not happen within `within`.
async fn settled_voters(g: &MasterGroup, within: Duration) -> Option<Vec<u64>> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let l = wait_leader(g, within).await;
        if let Some(s) = status(&g.addrs[l], Duration::from_secs(2)).await {
            if !s.joint && s.role == "leader" {
                return Some(s.voters);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Status of replica `i` over Raft's Status RPC, within `timeout` (a paused replica does not
/// answer).
async fn status(addr: &str, timeout: Duration) -> Option<pb::ReplicaStatus> {
    let ch =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).ok()?.connect_timeout(timeout).connect_lazy();
    let mut c = pb::raft_client::RaftClient::new(ch);
    let mut req = tonic::Request::new(pb::ReplicaStatusRequest {});
    req.set_timeout(timeout);
    tokio::time::timeout(timeout, c.status(req)).await.ok()?.ok().map(|r| r.into_inner())
}

/// The replica that leads in the highest term among those that answer.
async fn leader(g: &MasterGroup) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for (i, a) in g.addrs.iter().enumerate().filter(|(i, _)| g.running(*i)) {
        if let Some(s) = status(a, Duration::from_millis(500)).await {
            if s.role == "leader" && best.is_none_or(|(t, _)| s.term > t) {
                best = Some((s.term, i));
            }
        }
    }
    best.map(|(_, i)| i)
}

async fn wait_leader(g: &MasterGroup, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = leader(g).await {
            return l;
        }
        assert!(Instant::now() < deadline, "no leader within {timeout:?}; logs in {}", g.dir.path().display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fault {
    KillLeader,
    KillFollower,
    Pause,
    Partition,
    Membership,
    SnapshotCrash,
}

/// Runs the suite with `n` replicas.
fn nemesis(n: usize, default_faults: usize) {
    let faults_wanted: usize = env_or("BORG_FAULTS", default_faults);
    let seconds: u64 = env_or("BORG_FAULT_SECONDS", 300);
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let seed: u64 = env_or("BORG_FAULT_SEED", (clock ^ u64::from(std::process::id()) << 20) % 1_000_000);
    eprintln!(
        "nemesis: {n} replicas, seed {seed} (reproduce the fault schedule: BORG_FAULT_SEED={seed} cargo test -p borg-integration-tests --test faults nemesis_{n})"
    );
    let net = match borg_integration_tests::netns::Network::create(n) {
        Ok(net) => Some(net),
        Err(why) => {
            eprintln!("nemesis: no network partitions in this run: {why}");
            None
        }
    };
    let partitions = net.is_some();
    let mut g = MasterGroup::start_on(net, n, 50);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // two real Borglets running a real job
    for _ in 0..2 {
        g.add_borglet();
    }
    let steady = std::env::temp_dir().join(format!("faults-steady-{}-{n}.yaml", std::process::id()));
    std::fs::write(
        &steady,
        "name: steady\nuser: faults\npriority: production\nkind: service\ntasks: 4\n\
         command: [/bin/sh, -c, 'exec sleep 100000']\nresources: {cpu: 100m, ram: 16Mi}\n",
    )
    .unwrap();
    let applied = g.borgctl(&["apply", "-f", steady.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let _ = std::fs::remove_file(&steady);
    let tasks = |g: &MasterGroup| -> Option<Vec<serde_json::Value>> {
        g.json_at(&g.master_arg(), &["tasks", "steady"]).and_then(|v| v.as_array().cloned())
    };
    g.wait_for(Duration::from_secs(60), "the steady job running", |g| {
        tasks(g).is_some_and(|ts| ts.len() == 4 && ts.iter().all(|t| t["state"] == "running" && t["pid"].is_u64()))
    });
    let pids_before: BTreeMap<u64, u64> =
        tasks(&g).unwrap().iter().map(|t| (t["index"].as_u64().unwrap(), t["pid"].as_u64().unwrap())).collect();

    // the clients
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let history: Arc<Mutex<History>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| rt.spawn(client_loop(c, g.addrs.clone(), seed, start, stop.clone(), history.clone())))
        .collect();

    // the nemesis
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut done: Vec<(f64, Fault, String)> = Vec::new();
    let mut counts: BTreeMap<Fault, usize> = BTreeMap::new();
    let kinds: Vec<(Fault, u32)> = vec![
        (Fault::KillLeader, 20),
        (Fault::KillFollower, 15),
        (Fault::Pause, 15),
        (Fault::Partition, if partitions { 25 } else { 0 }),
        (Fault::Membership, 10),
        (Fault::SnapshotCrash, 10),
    ];
    let total_weight: u32 = kinds.iter().map(|(_, w)| w).sum();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut exited: Vec<String> = Vec::new();
    while done.len() < faults_wanted && Instant::now() < deadline {
        // a replica that exited by itself (Raft stopped: see borgmaster's main) is restarted,
        // as its supervisor would
        for i in 0..n {
            if g.exited(i) {
                let log = std::fs::read_to_string(g.log(i)).unwrap_or_default();
                let why =
                    log.lines().rev().find(|l| l.contains("panicked at") || l.contains("Raft stopped")).unwrap_or("");
                eprintln!("nemesis: replica {} exited by itself: {why}", i + 1);
                exited.push(format!("replica {}: {why}", i + 1));
                g.start_replica(i);
            }
        }
        let l = rt.block_on(wait_leader(&g, Duration::from_secs(60)));
        let followers: Vec<usize> = (0..n).filter(|i| *i != l).collect();
        let follower = followers[rng.random_range(0..followers.len())];
        let mut pick = rng.random_range(0..total_weight);
        let kind = kinds
            .iter()
            .find(|(_, w)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .map(|(k, _)| *k)
            .unwrap();
        let at = start.elapsed().as_secs_f64();
        let what = match kind {
            Fault::KillLeader | Fault::KillFollower => {
                let victim = if kind == Fault::KillLeader { l } else { follower };
                let down = rng.random_range(100..2000);
                g.kill9(victim);
                std::thread::sleep(Duration::from_millis(down));
                g.start_replica(victim);
                format!("kill -9 replica {}, restarted after {down} ms", victim + 1)
            }
            Fault::Pause => {
                let victim = if rng.random_bool(0.5) { l } else { follower };
                let ms = rng.random_range(1000..5000);
                let pid = g.pid(victim).expect("running");
                signal(pid, nix::sys::signal::Signal::SIGSTOP);
                std::thread::sleep(Duration::from_millis(ms));
                signal(pid, nix::sys::signal::Signal::SIGCONT);
                format!("SIGSTOP replica {} for {ms} ms", victim + 1)
            }
            Fault::Partition => {
                let size = rng.random_range(1..=(n - 1) / 2);
                let mut side: Vec<usize> = if rng.random_bool(0.5) { vec![l] } else { vec![follower] };
                while side.len() < size {
                    let x = rng.random_range(0..n);
                    if !side.contains(&x) {
                        side.push(x);
                    }
                }
                let ms = rng.random_range(1000..3000);
                let net = g.net().expect("partitions only with a network");
                net.partition(&side).expect("partition");
                std::thread::sleep(Duration::from_millis(ms));
                net.heal().expect("heal");
                let names: Vec<usize> = side.iter().map(|i| i + 1).collect();
                format!("replicas {names:?} cut off for {ms} ms (leader was {})", l + 1)
            }
            Fault::Membership => {
                let id = (follower + 1).to_string();
                let leader_addr = g.addrs[l].clone();
                let o = g.borgctl_at(&leader_addr, &["replicas", "remove", &id]);
                if !o.status.success() {
                    // leadership moved meanwhile, or the answer was lost: is it still a voter?
                    eprintln!("nemesis: replicas remove {id}: {}", String::from_utf8_lossy(&o.stderr).trim());
                    // a change interrupted between its two steps leaves the group joint, and the
                    // next leader finishes it: decide on the settled voters
                    let voters = rt.block_on(settled_voters(&g, Duration::from_secs(60)));
                    if voters.is_none_or(|v| v.contains(&(follower as u64 + 1))) {
                        continue;
                    }
                }
                g.kill9(follower);
                std::fs::remove_dir_all(g.data_dir(follower)).expect("wipe the data dir");
                g.start_replica(follower);
                let addr = g.addrs[follower].clone();
                let mut added = false;
                for _ in 0..20 {
                    if g.exited(follower) {
                        let log = std::fs::read_to_string(g.log(follower)).unwrap_or_default();
                        panic!("replica {id}, restarted empty after its removal, exited; seed {seed}; its log:\n{log}");
                    }
                    let l = rt.block_on(wait_leader(&g, Duration::from_secs(60)));
                    let o = g.borgctl_at(&g.addrs[l].clone(), &["replicas", "add", &id, &addr]);
                    if o.status.success() {
                        added = true;
                        break;
                    }
                    eprintln!("nemesis: replicas add {id}: {}", String::from_utf8_lossy(&o.stderr));
                    std::thread::sleep(Duration::from_millis(500));
                }
                assert!(added, "replica {id} could not be added back; seed {seed}");
                format!("replica {id} removed, wiped, added back as a new member")
            }
            Fault::SnapshotCrash => {
                g.kill9(follower);
                // it may write a snapshot as soon as it starts, and crash in it before it
                // listens (seed 797897: its state loaded, then the failpoint, no listener yet)
                g.start_replica_env_may_exit(follower, &[("FAILPOINTS", "snapshot-write=return")]);
                let crash_by = Instant::now() + Duration::from_secs(10);
                let mut crashed = false;
                while Instant::now() < crash_by {
                    if g.exited(follower) {
                        crashed = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                if !crashed {
                    g.kill9(follower);
                }
                g.start_replica(follower);
                if crashed {
                    format!("replica {} crashed writing a snapshot, restarted", follower + 1)
                } else {
                    format!("replica {} wrote no snapshot in 10 s (killed, restarted)", follower + 1)
                }
            }
        };
        *counts.entry(kind).or_default() += 1;
        done.push((at, kind, what));
        std::thread::sleep(Duration::from_millis(rng.random_range(100..400)));
    }
    let injected_for = start.elapsed();

    // the end: every replica up and reachable, clients stopped, the group converged
    if let Some(net) = g.net() {
        net.heal().expect("heal");
    }
    for i in 0..n {
        if g.exited(i) || !g.running(i) {
            g.start_replica(i);
        }
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        rt.block_on(c).expect("client");
    }
    let l = rt.block_on(wait_leader(&g, Duration::from_secs(60)));
    let mut history = std::mem::take(&mut *history.lock().unwrap());
    let final_state: Vec<JobState> = rt.block_on(async {
        let mut c = Client::new(&g.addrs);
        let mut out = Vec::new();
        for k in 0..KEYS {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let call = start.elapsed().as_micros() as u64;
                if let Ok(Some(o @ JobOutput::Got(s))) = c.run(l, k, &JobInput::Get).await {
                    let ret = start.elapsed().as_micros() as u64;
                    history.push((k, Op { client: CLIENTS, input: JobInput::Get, output: Some(o), call, ret }));
                    out.push(s);
                    break;
                }
                assert!(Instant::now() < deadline, "no linearizable read of {} in 60 s; seed {seed}", key_name(k));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // every replica holds the same jobs (each applies the committed log by itself)
        for i in 0..n {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let mut mine = Vec::new();
                for k in 0..KEYS {
                    mine.push(c.local(i, k).await);
                }
                if mine.iter().zip(&out).all(|(m, f)| m.as_ref() == Ok(f)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica {} disagrees with the leader after 60 s: {mine:?} vs {out:?}; seed {seed}; logs in {}",
                    i + 1,
                    g.dir.path().display()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        out
    });

    // linearizability, key by key
    let mut by_key: BTreeMap<usize, Vec<Op<JobInput, JobOutput>>> = BTreeMap::new();
    for (k, op) in history {
        by_key.entry(k).or_default().push(op);
    }
    let (mut ok, mut refused, mut unknown) = (0, 0, 0);
    for ops in by_key.values() {
        for o in ops {
            match &o.output {
                None => unknown += 1,
                Some(JobOutput::VersionMismatch { .. }) | Some(JobOutput::NoSuchJob) => refused += 1,
                Some(_) => ok += 1,
            }
        }
    }
    eprintln!(
        "nemesis: {} faults in {:.0} s ({counts:?}); {} operations: {ok} ok, {refused} refused, {unknown} unknown; {} replica exits by themselves {exited:?}",
        done.len(),
        injected_for.as_secs_f64(),
        ok + refused + unknown,
        exited.len()
    );
    for (k, ops) in &by_key {
        if let Err(v) = check(&JobStore, ops) {
            // the operations around the one the search got stuck at, by invocation time
            let around = match &v {
                Verdict::Illegal { stuck, .. } => stuck.first().map(|&i| ops[i].call),
                Verdict::Inconclusive { .. } => None,
            };
            let mut sorted: Vec<(usize, &Op<JobInput, JobOutput>)> = ops.iter().enumerate().collect();
            sorted.sort_by_key(|(_, o)| o.call);
            let at = around.map_or(sorted.len(), |t| sorted.partition_point(|(_, o)| o.call < t));
            let dump: String = sorted
                .iter()
                .map(|(i, o)| {
                    format!("op {i}: client {} {:?} -> {:?} [{} .. {}]\n", o.client, o.input, o.output, o.call, o.ret)
                })
                .collect();
            let file = g.dir.path().join(format!("history-{}.txt", key_name(*k)));
            let _ = std::fs::write(&file, dump);
            eprintln!("  the whole history of {}: {}", key_name(*k), file.display());
            for (i, o) in &sorted[at.saturating_sub(30)..(at + 10).min(sorted.len())] {
                eprintln!("  op {i}: client {} {:?} -> {:?} [{} .. {}]", o.client, o.input, o.output, o.call, o.ret);
            }
            for (t, kind, what) in &done {
                eprintln!("  fault at {t:.1} s: {kind:?}: {what}");
            }
            let why = match v {
                Verdict::Illegal { longest, stuck, state } => format!(
                    "not linearizable: longest linearizable prefix {} ops, then op {stuck:?} cannot follow (state {state})",
                    longest.len()
                ),
                Verdict::Inconclusive { steps } => format!("undecided after {steps} steps"),
            };
            panic!("job {}: {why}; seed {seed}; logs in {}", key_name(*k), g.dir.path().display());
        }
        // every acknowledged version is on every replica (they all agree with the final read)
        let acked = ops
            .iter()
            .filter_map(|o| match o.output {
                Some(JobOutput::Applied { version }) => Some(version),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let now = final_state[*k].map_or(0, |(v, _, _)| v);
        assert!(
            now >= acked,
            "job {}: version {acked} was acknowledged, the replicas hold {now}; seed {seed}",
            key_name(*k)
        );
    }
    // no fault cost a Borglet task its process
    g.wait_for(Duration::from_secs(60), "the steady job running after the faults", |g| {
        tasks(g).is_some_and(|ts| ts.iter().all(|t| t["state"] == "running"))
    });
    let ts = tasks(&g).unwrap();
    for t in &ts {
        let i = t["index"].as_u64().unwrap();
        assert_eq!(t["pid"].as_u64(), pids_before.get(&i).copied(), "task steady/{i} kept its pid: {t}; seed {seed}");
        assert_eq!(t["restarts"], 0, "task steady/{i} was not restarted: {t}; seed {seed}");
    }
    assert!(
        done.len() >= faults_wanted || injected_for >= Duration::from_secs(seconds),
        "{} faults injected",
        done.len()
    );
    eprintln!("nemesis: seed {seed}: no anomaly; every acknowledged write on every replica; every task kept its pid");
}

#[test]
fn nemesis_3_replicas() {
    nemesis(3, 100);
}

#[test]
fn nemesis_5_replicas() {
    nemesis(5, 30);
}
