//! Durability edges (issue 18): a replica whose disk fills up, and one whose log sync fails,
//! stops acknowledging writes (it never answers OK for a write it could not make durable), and
//! once the disk has room again it restarts with every write it acknowledged. (A replica
//! restarted with an empty data dir is in replication.rs: it refuses to vote as the member it
//! was.) A leader syncs its own entries while they replicate, and no follower learns of their
//! commit before that sync.

use borg_integration_tests::group::MasterGroup;
use std::process::Command;
use std::time::Duration;

/// A small tmpfs mounted over a directory, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "48m") over `dir`, keeping what `dir` held.
    fn over(dir: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
        let keep = dir.with_extension("before-tmpfs");
        std::fs::rename(dir, &keep).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(dir);
            let _ = std::fs::rename(&keep, dir);
            return Err(format!("mount -t tmpfs: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        let cp = Command::new("cp").arg("-a").arg(format!("{}/.", keep.display())).arg(dir).status();
        if !cp.is_ok_and(|s| s.success()) {
            return Err("copying the data dir into the tmpfs failed".into());
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    /// Writes a file until the filesystem is full; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0xabu8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn spec(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: {name}\nuser: u\npriority: batch\nkind: service\ntasks: 1\ncommand: [/bin/true]\n\
             resources: {{cpu: 1000000, ram: 1Mi}}\nenv: {{PAD: '{}'}}\n",
            "x".repeat(4000)
        ),
    )
    .unwrap();
    p
}

/// Applies `name` through `g`; whether it was acknowledged.
fn apply(g: &MasterGroup, name: &str) -> bool {
    let file = spec(g.dir.path(), name);
    g.borgctl(&["apply", "-f", file.to_str().unwrap()]).status.success()
}

#[test]
fn a_full_disk_stops_the_replica_acknowledging_and_it_comes_back_with_every_acknowledged_write() {
    let mut g = MasterGroup::start(1, 10_000);
    assert!(apply(&g, "before"));
    g.stop(0);
    let fs = match Tmpfs::over(&g.data_dir(0), "48m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("skipped: cannot mount a small tmpfs here: {why}");
            return;
        }
    };
    g.start_replica(0);
    assert!(apply(&g, "on-tmpfs"));
    let filler = fs.fill();
    // writes go on until the disk refuses one; none of those acknowledged may be lost
    let mut acked = vec!["before".to_string(), "on-tmpfs".to_string()];
    let mut refused = None;
    for i in 0..400 {
        let name = format!("full-{i}");
        if apply(&g, &name) {
            acked.push(name);
        } else {
            refused = Some(name);
            break;
        }
    }
    let refused = refused.expect("a write was refused once the disk was full");
    eprintln!("{} writes acknowledged on the full disk before {refused} was refused", acked.len() - 2);
    // the replica stopped acknowledging: it exited (Raft stopped on the storage error) or
    // refuses every write from now on
    g.wait_for(Duration::from_secs(30), "the replica to stop taking writes", |g| !apply(g, "after-refusal"));
    // (how it stops is RocksDB's: an error that stops Raft and the process, or, with Debian's
    // librocksdb, an assertion that aborts it)
    let log = std::fs::read_to_string(g.log(0)).unwrap_or_default();
    eprintln!("the replica's last words: {}", log.lines().rev().take(3).collect::<Vec<_>>().join(" | "));
    // room again: the replica restarts with every acknowledged write
    std::fs::remove_file(filler).unwrap();
    g.kill9(0);
    g.start_replica(0);
    g.wait_for(Duration::from_secs(30), "the replica back", |g| g.jobs_at(0).is_some());
    let jobs = g.jobs_at(0).unwrap();
    for a in &acked {
        assert!(jobs.contains(a), "acknowledged {a} is kept: {jobs:?}");
    }
    assert!(apply(&g, "after"), "it takes writes again");
    drop(fs);
}

#[test]
fn a_failed_log_sync_is_never_acknowledged() {
    let mut g = MasterGroup::start(1, 10_000);
    assert!(apply(&g, "before"));
    g.stop(0);
    // the next synced write of the log fails, as an fsync returning EIO would
    g.start_replica_env(0, &[("FAILPOINTS", "log-append-sync=return")]);
    assert!(!apply(&g, "unsynced"), "a write whose sync failed was acknowledged");
    let log = std::fs::read_to_string(g.log(0)).unwrap_or_default();
    assert!(log.contains("failpoint log-append-sync"), "{log}");
    // the storage error stops Raft, and a replica whose Raft stopped exits (to be restarted from
    // its data dir) rather than serve a state that no longer moves
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !g.exited(0) {
        assert!(std::time::Instant::now() < deadline, "the replica did not exit after its Raft stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(g.log(0)).unwrap_or_default();
    assert!(log.contains("Raft stopped"), "the replica says why it exits: {log}");
    g.kill9(0);
    g.start_replica(0);
    g.wait_for(Duration::from_secs(30), "the replica back", |g| g.jobs_at(0).is_some());
    let jobs = g.jobs_at(0).unwrap();
    assert!(jobs.contains(&"before".to_string()), "{jobs:?}");
    assert!(apply(&g, "after"), "it takes writes again");
}

#[test]
fn followers_learn_of_a_commit_only_once_the_leaders_copy_is_synced() {
    // the sync of a leader's own entries takes 1 s (failpoint log-leader-sync; followers' syncs
    // are not delayed); the election timeout is long enough that the leader, whose heartbeats
    // wait for that sync too, is not replaced meanwhile
    let g = MasterGroup::start_with_args_env(
        3,
        10_000,
        &["--election-timeout", "4s"],
        &[("FAILPOINTS", "log-leader-sync=sleep(1000)")],
    );
    let leader = g.wait_leader(Duration::from_secs(60));
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let file = spec(g.dir.path(), "slow");
    let started = std::time::Instant::now();
    let apply = Command::new(borg_integration_tests::bin("borgctl"))
        .args(["--master", &g.addrs[leader], "apply", "-f", file.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let apply = std::thread::spawn(move || (apply.wait_with_output(), started.elapsed()));
    // a quorum (the leader's unsynced copy and a follower's synced one) has the entry at once;
    // while the leader's sync sleeps, no follower may apply it
    let mut looked = 0;
    while started.elapsed() < Duration::from_millis(800) {
        for f in &followers {
            if let Some(jobs) = g.jobs_at(*f) {
                assert!(
                    !jobs.contains(&"slow".to_string()),
                    "replica {} applied it before the leader synced it",
                    f + 1
                );
                looked += 1;
            }
        }
    }
    assert!(looked > 0, "no follower answered");
    let (out, answered) = apply.join().unwrap();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        answered >= Duration::from_secs(1),
        "acknowledged {answered:?} after it was sent, before the leader's sync"
    );
    g.wait_for(Duration::from_secs(30), "every replica to apply it", |g| {
        (0..3).all(|i| g.jobs_at(i).is_some_and(|j| j.contains(&"slow".to_string())))
    });
}
