//! Production services (issue 16): named ports from each machine's port range, assigned in the
//! replicated state and handed to tasks as BORG_PORT_<NAME>; a real HTTP server as a task.

use borg_integration_tests::group::MasterGroup;
use borg_integration_tests::{free_port_range, http_get, TestCell};
use std::time::Duration;

fn ports_of(t: &serde_json::Value) -> Vec<u64> {
    t["ports"].as_object().map(|m| m.values().filter_map(|v| v.as_u64()).collect()).unwrap_or_default()
}

#[test]
fn tasks_get_distinct_ports_from_their_machine_and_serve_on_them() {
    // the system's python3: tasks run as an unprivileged user, who cannot read a per-user install
    let python = std::path::PathBuf::from("/usr/bin/python3");
    if !python.exists() {
        eprintln!("skipped: /usr/bin/python3 is not installed (the task is python3 -m http.server)");
        return;
    }
    let (first, last) = free_port_range(3);
    let mut cell = TestCell::start("ports", 0);
    cell.add_borglet_with(&["--port-range", &format!("{first}-{last}")]);
    cell.wait_for(Duration::from_secs(30), "the machine registers", |c| {
        c.machines().as_array().is_some_and(|m| m.len() == 1)
    });
    // a real HTTP server listening on its port
    cell.apply_yaml(
        "web",
        &format!(
            "name: web\nuser: alice\npriority: production\nkind: service\ntasks: 1\nports: [http]\n\
             command: [/bin/sh, -c, 'exec {} -m http.server --bind 127.0.0.1 $BORG_PORT_HTTP']\n\
             health: {{liveness: {{http: {{port: http, path: /}}, period: 500ms, timeout: 500ms, initial_delay: 10s}}, readiness: {{tcp: {{port: http}}, period: 200ms, timeout: 100ms}}}}\n\
             resources: {{cpu: 100m, ram: 64Mi}}\n",
            python.display()
        ),
    );
    // another job's task on the same machine with two ports
    cell.apply_yaml(
        "pair",
        "name: pair\nuser: alice\npriority: batch\nkind: service\ntasks: 1\nports: [main, admin-http]\n\
         command: [/bin/sh, -c, 'echo $BORG_PORT_MAIN $BORG_PORT_ADMIN_HTTP > ports; sleep 600']\n\
         resources: {cpu: 100m, ram: 16Mi}\n",
    );
    let web = cell.wait_tasks("web", "running");
    let pair = cell.wait_tasks("pair", "running");
    let (w, p) = (ports_of(&web[0]), ports_of(&pair[0]));
    assert_eq!((w.len(), p.len()), (1, 2), "web {web:?} pair {pair:?}");
    let mut all: Vec<u64> = w.iter().chain(&p).copied().collect();
    all.sort();
    assert_eq!(
        all,
        (first as u64..=last as u64).collect::<Vec<_>>(),
        "three tasks' ports, all distinct, from the range"
    );
    assert_eq!(web[0]["host"], "127.0.0.1");
    // the task found its numbers in its environment
    let sandbox_ports = cell.borglets[0].work_dir.join("tasks");
    cell.wait_for(Duration::from_secs(30), "pair wrote its ports", |_| {
        std::fs::read_dir(&sandbox_ports).into_iter().flatten().flatten().any(|d| {
            std::fs::read_to_string(d.path().join("ports")).is_ok_and(|s| {
                s.split_whitespace()
                    .filter_map(|x| x.parse::<u64>().ok())
                    .eq(pair[0]["ports"]["main"].as_u64().into_iter().chain(pair[0]["ports"]["admin-http"].as_u64()))
            })
        })
    });
    // and the server answers where the master says it listens
    let addr = format!("{}:{}", web[0]["host"].as_str().unwrap(), w[0]);
    cell.wait_for(Duration::from_secs(30), "the HTTP server answers", |_| {
        std::net::TcpStream::connect(&addr).is_ok() && http_get(&addr, "/").0 == 200
    });
    // both its checks pass: it is ready
    cell.wait_for(Duration::from_secs(30), "web is ready", |c| c.tasks("web")[0]["ready"] == true);
    assert_eq!(cell.tasks("web")[0]["restarts"], 0, "a healthy server is not restarted");
    assert_eq!(cell.tasks("pair")[0]["ready"], true, "a task without a readiness check is ready while it runs");
    // its name resolves to where it listens, by job name and by BNS name
    let r = cell.json(&["resolve", "web"]);
    let e = &r["endpoints"][0];
    assert_eq!((e["bns"].as_str(), e["host"].as_str()), (Some("/bns/test/alice/web/0"), Some("127.0.0.1")), "{r}");
    assert_eq!(e["ports"]["http"].as_u64(), Some(w[0]));
    assert_eq!(e["ready"], true);
    assert!(r["applied_index"].as_u64() > Some(0));
    assert_eq!(cell.json(&["resolve", "/bns/test/alice/web/0"])["endpoints"], r["endpoints"]);
    assert_eq!(cell.json(&["resolve", "pair"])["endpoints"].as_array().map(Vec::len), Some(1));
    for (bad, says) in [
        ("/bns/other/alice/web", "cell"),
        ("/bns/test/bob/web", "belongs to"),
        ("web/7", "no task 7"),
        ("nope", "no job"),
    ] {
        let out = cell.borgctl(&["resolve", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "resolve {bad}: {err}");
    }
    // and over DNS (dig, a real DNS client; installed by the CI script)
    if let (Some(dig), Some(dns)) = (borg_integration_tests::which("dig"), cell.master_dns.clone()) {
        let (host, port) = dns.rsplit_once(':').unwrap();
        let q = |args: &[&str]| {
            let out = std::process::Command::new(&dig)
                .args([&format!("@{host}"), "-p", port, "+time=5", "+tries=2"])
                .args(args)
                .output()
                .expect("dig");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let srv = q(&["+short", "SRV", "_http._tcp.web.alice.test.borg."]);
        assert_eq!(srv.trim(), format!("0 0 {} 0.web.alice.test.borg.", w[0]), "{srv}");
        let a = q(&["+short", "A", "0.web.alice.test.borg."]);
        assert_eq!(a.trim(), "127.0.0.1");
        let tcp = q(&["+tcp", "+short", "SRV", "_http._tcp.web.alice.test.borg."]);
        assert_eq!(tcp, srv, "the same answer over TCP");
        let full = q(&["SRV", "_http._tcp.web.alice.test.borg."]);
        let ttl_5 = full.lines().filter(|l| !l.starts_with(';')).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == "5" && f[3] == "SRV"
        });
        assert!(
            full.contains("status: NOERROR") && full.contains("flags: qr aa") && ttl_5,
            "TTL 5 s, authoritative: {full}"
        );
        for missing in ["_nope._tcp.web.alice.test.borg.", "0.nope.alice.test.borg.", "0.web.bob.test.borg."] {
            let r = q(&["SRV", missing]);
            assert!(r.contains("status: NXDOMAIN"), "{missing}: {r}");
        }
        // a service's address answered by DNS is where it serves
        assert_eq!(http_get(&format!("{}:{}", a.trim(), w[0]), "/").0, 200);
    } else {
        eprintln!("DNS part skipped: dig is not installed (Debian: bind9-dnsutils)");
    }
    // the machine's ports are used up: one more task with a port stays pending, saying why
    cell.apply_yaml(
        "third",
        "name: third\nuser: alice\npriority: batch\nkind: service\ntasks: 1\nports: [x]\n\
         command: [sleep, '600']\nresources: {cpu: 100m, ram: 16Mi}\n",
    );
    cell.wait_for(Duration::from_secs(30), "why-pending names the ports", |c| {
        let why = c.json(&["why-pending", "third"]);
        why["reasons"].as_object().is_some_and(|r| r.keys().any(|k| k.contains("ports")))
    });
    assert_eq!(cell.tasks("third")[0]["state"], "pending");
    // freeing ports lets it in, on a port nobody else holds
    cell.borgctl(&["kill", "pair"]);
    let third = cell.wait_tasks("third", "running");
    let t = ports_of(&third[0]);
    assert_eq!(t.len(), 1);
    assert!(!w.contains(&t[0]), "third got web's port {t:?}");
    assert!((first as u64..=last as u64).contains(&t[0]));
}

/// A spec's ports are checked like every other field: a bad name is refused with its line.
#[test]
fn bad_port_names_are_refused_with_the_line() {
    let cell = TestCell::start("portspec", 0);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "name: bad\nuser: alice\npriority: batch\nkind: batch\ntasks: 1\nports: [http, HTTP, http]\n\
         command: [/bin/true]\nresources: {cpu: 100m, ram: 16Mi}\n",
    )
    .unwrap();
    let out = cell.borgctl(&["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(":6:") && err.contains("ports[1]") && err.contains("must match"), "{err}");
    assert!(err.contains("ports[2]") && err.contains("named twice"), "{err}");
}

/// Exec checks in the task's sandbox: readiness follows a file the test creates and removes;
/// liveness failing restarts the task with reason `unhealthy` (and an event), and the restarted
/// task, healthy again, is not restarted again.
#[test]
fn liveness_failures_restart_the_task_as_unhealthy_and_readiness_follows_its_check() {
    let cell = TestCell::start("health", 1);
    cell.apply_yaml(
        "checked",
        "name: checked\nuser: alice\npriority: batch\nkind: service\ntasks: 1\n\
         command: [/bin/sh, -c, 'touch alive; exec sleep 600']\n\
         resources: {cpu: 100m, ram: 16Mi}\ngrace_period: 1s\n\
         health: {liveness: {exec: {command: [test, -f, alive]}, period: 200ms, timeout: 200ms, failures: 2}, \
                  readiness: {exec: {command: [test, -f, ready]}, period: 200ms, timeout: 200ms, failures: 1}}\n",
    );
    let t = cell.wait_tasks("checked", "running");
    let sandbox = || {
        std::fs::read_dir(cell.borglets[0].work_dir.join("tasks"))
            .unwrap()
            .flatten()
            .map(|d| d.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("checked.0.")))
            .expect("sandbox")
    };
    assert_eq!(t[0]["ready"], false, "not ready before its readiness check passes");
    std::fs::write(sandbox().join("ready"), "").unwrap();
    cell.wait_for(Duration::from_secs(30), "ready once the check passes", |c| c.tasks("checked")[0]["ready"] == true);
    std::fs::remove_file(sandbox().join("ready")).unwrap();
    cell.wait_for(Duration::from_secs(30), "not ready once it fails", |c| c.tasks("checked")[0]["ready"] == false);
    // liveness: remove the file its check looks for
    let pid = cell.tasks("checked")[0]["pid"].as_u64().unwrap();
    std::fs::remove_file(sandbox().join("alive")).unwrap();
    cell.wait_for(Duration::from_secs(30), "restarted as unhealthy", |c| {
        let t = &c.tasks("checked")[0];
        t["restarts"].as_u64() >= Some(1) && t["pid"].as_u64().is_some_and(|p| p != pid)
    });
    let events = cell.json(&["events", "checked"]);
    let restarted: Vec<&serde_json::Value> =
        events.as_array().unwrap().iter().filter(|e| e["kind"] == "restarted").collect();
    assert!(
        restarted.iter().any(|e| e["detail"].as_str().is_some_and(|d| d.contains("unhealthy"))),
        "a restarted event naming the failed check: {events}"
    );
    // the new process made its file again: it stays up
    let restarts = cell.tasks("checked")[0]["restarts"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(2)); // ten liveness periods
    let t = &cell.tasks("checked")[0];
    assert_eq!((t["state"].as_str(), t["restarts"].as_u64()), (Some("running"), Some(restarts)), "{t}");
}

/// A rolling update waits for readiness: a version whose readiness never passes replaces one
/// task, pauses at its progress deadline (`rollout status` exits 2 and says why) with the other
/// three still ready throughout, and `rollout undo` brings back 4 ready tasks of the old spec.
#[test]
fn rollouts_are_gated_on_readiness_pause_at_the_deadline_and_undo() {
    let cell = TestCell::start("rollout", 1);
    let spec = |cmd: &str| {
        format!(
            "name: roll\nuser: alice\npriority: batch\nkind: service\ntasks: 4\n\
             command: [/bin/sh, -c, '{cmd}']\nresources: {{cpu: 100m, ram: 16Mi}}\ngrace_period: 1s\n\
             update: {{max_unavailable: 1, progress_deadline: 3s}}\n\
             health: {{readiness: {{exec: {{command: [test, -f, ready]}}, period: 200ms, timeout: 200ms, failures: 1}}}}\n"
        )
    };
    cell.apply_yaml("roll", &spec("touch ready; exec sleep 600"));
    let ready = |c: &TestCell| c.tasks("roll").iter().filter(|t| t["ready"] == true).count();
    cell.wait_for(Duration::from_secs(30), "4 ready tasks", |c| ready(c) == 4);
    assert_eq!(cell.borgctl(&["rollout", "status", "roll"]).status.code(), Some(0));
    // a watch stream follows the endpoints throughout
    let mut watcher = std::process::Command::new(borg_integration_tests::bin("borgctl"))
        .args(["--master", &cell.master_addr, "-o", "json", "resolve", "roll", "--watch"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("borgctl resolve --watch");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let reader = {
        let (out, lines) = (watcher.stdout.take().unwrap(), lines.clone());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    lines.lock().unwrap().push(v);
                }
            }
        })
    };
    let ready_in = |v: &serde_json::Value| {
        v["endpoints"].as_array().map_or(0, |e| e.iter().filter(|e| e["ready"] == true).count())
    };
    cell.wait_for(Duration::from_secs(30), "the watch shows 4 ready endpoints", |_| {
        lines.lock().unwrap().last().is_some_and(|v| ready_in(v) == 4)
    });
    // version 2 never becomes ready
    cell.apply_yaml("roll", &spec("exec sleep 601"));
    let mut fewest = 4;
    cell.wait_for(Duration::from_secs(60), "the rollout pauses", |c| {
        fewest = fewest.min(ready(c));
        c.json(&["job", "roll"])["state"].is_string()
            && c.borgctl(&["rollout", "status", "roll"]).status.code() == Some(2)
    });
    assert!(fewest >= 3, "only {fewest} ready tasks during the update (max_unavailable: 1)");
    cell.wait_for(Duration::from_secs(30), "the watch sees the replacement", |_| {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|v| v["endpoints"].as_array().is_some_and(|e| e.iter().any(|e| e["ready"] == false)))
    });
    let _ = watcher.kill();
    let _ = watcher.wait();
    let _ = reader.join();
    let seen = lines.lock().unwrap().clone();
    assert!(seen.len() >= 2, "the watch sent changes: {seen:?}");
    assert!(seen.iter().all(|v| ready_in(v) >= 3), "a watch message with fewer than 3 ready endpoints: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0]["applied_index"].as_u64() <= w[1]["applied_index"].as_u64()));
    let out = cell.borgctl(&["rollout", "status", "roll"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("paused") && text.contains("not ready within the progress deadline"), "{text}");
    let versions: Vec<u64> = cell.tasks("roll").iter().filter_map(|t| t["job_version"].as_u64()).collect();
    assert_eq!(versions.iter().filter(|v| **v == 2).count(), 1, "one task replaced, then paused: {versions:?}");
    let history = cell.json(&["rollout", "history", "roll"]);
    assert_eq!(history[1]["changed"], serde_json::json!(["command"]), "{history}");
    // undo: version 3 with version 1's spec, through the same gated path
    let out = cell.borgctl(&["rollout", "undo", "roll"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cell.borgctl(&["rollout", "status", "roll", "--wait", "--timeout", "60"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let tasks = cell.tasks("roll");
    assert!(tasks.iter().all(|t| t["job_version"] == 3 && t["ready"] == true), "{tasks:?}");
    let detail = String::from_utf8_lossy(&cell.borgctl(&["job", "roll"]).stdout).into_owned();
    assert!(detail.contains("Rollout:    4/4 tasks on version 3, 4 of them ready"), "{detail}");
}

/// `borgctl resolve NAME --watch -o json` against the whole group, its lines collected.
struct Watcher {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Watcher {
    fn start(g: &MasterGroup, name: &str) -> Watcher {
        use std::io::BufRead;
        let mut child = std::process::Command::new(borg_integration_tests::bin("borgctl"))
            .args(["--master", &g.master_arg(), "resolve", name, "--watch", "-o", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start borgctl resolve --watch");
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(serde_json::from_str(&line).expect("one JSON object per line"));
            }
        });
        Watcher { child, lines }
    }

    /// The ready endpoints' task indices in the newest set seen.
    fn ready(&self) -> Vec<u64> {
        let lines = self.lines.lock().unwrap();
        lines.last().map_or(Vec::new(), |v| {
            v["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["ready"] == true)
                .filter_map(|e| e["index"].as_u64())
                .collect()
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_watch_through_three_replicas_misses_no_change_across_kill_9_of_the_leader() {
    let mut g = MasterGroup::start(3, 0);
    g.wait_leader(Duration::from_secs(30));
    g.add_borglet();
    let dir = g.dir.path().to_path_buf();
    let spec = |n: usize| {
        let p = dir.join(format!("w{n}.yaml"));
        std::fs::write(
            &p,
            format!(
                "name: w\nuser: alice\npriority: production\nkind: service\ntasks: {n}\n\
                 command: [/bin/sh, -c, 'sleep 1000']\nresources: {{cpu: 10m, ram: 1Mi}}\n"
            ),
        )
        .unwrap();
        p
    };
    let apply = |g: &MasterGroup, n: usize| {
        let f = spec(n);
        g.wait_for(Duration::from_secs(30), "the apply is acknowledged", |g| {
            g.borgctl(&["apply", "-f", f.to_str().unwrap()]).status.success()
        });
    };
    apply(&g, 2);
    let w = Watcher::start(&g, "w");
    g.wait_for(Duration::from_secs(30), "the watch shows 2 ready tasks", |_| w.ready() == [0, 1]);
    let leader = g.wait_leader(Duration::from_secs(30));
    g.kill9(leader);
    // a change made while the watcher reconnects, through the new leader
    apply(&g, 3);
    g.wait_for(Duration::from_secs(60), "the watch shows the third task, from another replica", |_| {
        w.ready() == [0, 1, 2]
    });
    let n = w.lines.lock().unwrap().len();
    apply(&g, 4);
    g.wait_for(Duration::from_secs(30), "and the next change after that", |_| w.ready() == [0, 1, 2, 3]);
    assert!(w.lines.lock().unwrap().len() > n);
}
