//! Auth on (issue 8): mutual TLS with the cell's CA, per-user authorization, Borglets that
//! answer only replicas and report only for their own machine, tasks as an unprivileged user.
//! Real processes, real TLS on loopback.

use borg_integration_tests::{bin, TestCell};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn job_yaml(name: &str, user: &str) -> String {
    format!(
        "name: {name}\nuser: {user}\npriority: batch\nkind: service\ntasks: 1\n\
         command: [/bin/sleep, \"600\"]\nresources: {{cpu: 100m, ram: 16Mi}}\ngrace_period: 1s\n\
         env: {{TOKEN: s3cret-{user}}}\n"
    )
}

#[test]
fn strangers_are_refused_and_users_touch_only_their_own_jobs() {
    let cell = TestCell::start_secure("sec", 1);
    let alice = cell.issue("user", "alice");
    let bob = cell.issue("user", "bob");

    // plain gRPC without credentials: refused, and borgctl says why
    let o = cell.borgctl_as(None, &["jobs"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("requires TLS and a client certificate"), "{}", stderr(&o));
    // TLS that trusts the cell's CA but shows no certificate: UNAUTHENTICATED, with the fix
    let ca_pem = std::fs::read_to_string(alice.join("ca.pem")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let err = rt.block_on(async {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
            .domain_name("127.0.0.1");
        let ch = tonic::transport::Endpoint::from_shared(format!("https://{}", cell.master_addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        borg_proto::borgmaster_client::BorgmasterClient::new(ch)
            .list_jobs(borg_proto::ListJobsRequest {})
            .await
            .unwrap_err()
    });
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("no client certificate"), "{}", err.message());

    // a certificate from another CA: the TLS handshake fails
    let other = tempfile::tempdir().unwrap();
    let ca2 = other.path().join("ca");
    assert!(Command::new(bin("borgctl")).args(["certs", "init", "--ca"]).arg(&ca2).status().unwrap().success());
    let mallory = other.path().join("mallory");
    let s = Command::new(bin("borgctl"))
        .args(["certs", "issue", "--role", "admin", "--name", "mallory", "--ca"])
        .arg(&ca2)
        .arg("--out")
        .arg(&mallory)
        .status()
        .unwrap();
    assert!(s.success());
    let o = cell.borgctl_as(Some(&mallory), &["jobs"]);
    assert!(!o.status.success(), "a certificate from another CA was accepted");

    // alice may not submit as bob, may submit as herself
    let spec = |name: &str, user: &str| {
        let p = cell.dir.path().join(format!("{name}-{user}.yaml"));
        std::fs::write(&p, job_yaml(name, user)).unwrap();
        p
    };
    let o = cell.borgctl_as(Some(&alice), &["apply", "-f", spec("a1", "bob").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("spec.user must be the caller"), "{}", stderr(&o));
    let o = cell.borgctl_as(Some(&alice), &["apply", "-f", spec("a1", "alice").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cell.borgctl_as(Some(&bob), &["apply", "-f", spec("b1", "bob").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));

    // bob cannot kill, update, or read the logs or secrets of alice's job
    let o = cell.borgctl_as(Some(&bob), &["kill", "a1"]);
    assert!(stderr(&o).contains("only a job's owner or an admin may kill it"), "{}", stderr(&o));
    let o = cell.borgctl_as(Some(&bob), &["apply", "-f", spec("a1", "bob").to_str().unwrap()]);
    assert!(stderr(&o).contains("only a job's owner or an admin may update it"), "{}", stderr(&o));
    cell.wait_tasks("a1", "running");
    let o = cell.borgctl_as(Some(&bob), &["logs", "a1", "0"]);
    assert!(stderr(&o).contains("may read its tasks' output"), "{}", stderr(&o));
    let o = cell.borgctl_as(Some(&bob), &["logs", "a1", "0", "-f"]);
    assert!(stderr(&o).contains("may read its tasks' output"), "{}", stderr(&o));
    let o = cell.borgctl_as(Some(&bob), &["exec", "a1", "0", "--", "id"]);
    assert!(stderr(&o).contains("only a job's owner or an admin may exec in its tasks"), "{}", stderr(&o));
    // the owner may, through the whole mTLS chain (borgctl -> master -> Borglet)
    let o = cell.borgctl_as(Some(&alice), &["exec", "a1", "0", "--", "sh", "-c", "echo in $BORG_JOB; exit 4"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "in a1\n");
    // machines: admins only
    let o = cell.borgctl_as(Some(&alice), &["machines", "cordon", "sec-m1"]);
    assert!(stderr(&o).contains("only admins cordon, drain or uncordon machines"), "{}", stderr(&o));
    let o = cell.borgctl_as(Some(&alice), &["machines", "remove", "sec-m1"]);
    assert!(stderr(&o).contains("only admins remove machines"), "{}", stderr(&o));
    let o = cell.borgctl_as(Some(&bob), &["job", "a1", "-o", "json"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && !text.contains("s3cret-alice") && text.contains("<redacted>"), "{text}");
    let o = cell.borgctl_as(Some(&alice), &["job", "a1", "-o", "json"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("s3cret-alice"));

    // users may not set quotas or change replicas; an admin may do all of it
    let o = cell.borgctl_as(Some(&alice), &["quota", "set", "alice", "batch", "cpu=100"]);
    assert!(stderr(&o).contains("only admins set quotas"), "{}", stderr(&o));
    let o = cell.borgctl_as(Some(&alice), &["replicas", "remove", "1"]);
    assert!(stderr(&o).contains("only admins change"), "{}", stderr(&o));
    assert!(cell.borgctl(&["quota", "set", "alice", "batch", "cpu=100"]).status.success());
    let o = cell.borgctl(&["kill", "a1"]);
    assert!(o.status.success(), "admin kill: {}", stderr(&o));
    let o = cell.borgctl_as(Some(&alice), &["kill", "b1"]);
    assert!(!o.status.success());
    assert!(cell.borgctl_as(Some(&bob), &["kill", "b1"]).status.success());
}

#[test]
fn a_borglet_cannot_pretend_to_be_another_machine_nor_be_polled_by_strangers() {
    let cell = TestCell::start_secure("secm", 1);
    let m1 = &cell.borglets[0];
    // registering another machine's id with m1's certificate is refused by the master
    let cert = cell.dir.path().join(format!("machine-{}", m1.id));
    let out = Command::new(bin("borglet"))
        .args(["--master", &cell.master_addr, "--listen", "127.0.0.1:0", "--machine-id", "intruder"])
        .arg("--credentials")
        .arg(&cert)
        .arg("--work-dir")
        .arg(cell.dir.path().join("intruder"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not machine \"intruder\""), "{}", stderr(&out));
    // and it refused before making anything on the machine
    assert!(!cell.dir.path().join("intruder").exists(), "the refused Borglet made its work dir");
    for base in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup"] {
        let cg = Path::new(base).join("borg-intruder");
        assert!(!cg.exists(), "the refused Borglet made its cgroup {}", cg.display());
    }
    // and through the API directly (a Borglet that ignores its own check)
    let o = cell.borgctl_as(Some(&cert), &["machines"]);
    assert!(o.status.success(), "a machine may read the cell: {}", stderr(&o));
    let machines = cell.machines();
    assert_eq!(machines.as_array().map(|a| a.len()), Some(1), "{machines}");

    // the Borglet refuses a poll from anyone but a replica: a user with a valid certificate
    let user = cell.issue("user", "eve");
    let creds = borg_rpc::auth::Credentials::load(&user).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let err = rt.block_on(async {
        let ch = borg_rpc::auth::endpoint(&m1.addr, Some(&creds)).unwrap().connect().await.unwrap();
        borg_proto::borglet_client::BorgletClient::new(ch)
            .poll(borg_proto::PollRequest { machine_id: m1.id.clone(), ..Default::default() })
            .await
            .unwrap_err()
    });
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("only the cell's Borgmaster replicas"), "{}", err.message());
}

#[test]
fn tasks_run_unprivileged_and_cannot_read_the_borglets_key() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: the Borglet can only switch users when run as root");
        return;
    }
    let cell = TestCell::start_secure("secu", 1);
    let key = cell.dir.path().join(format!("machine-{}", cell.borglets[0].id)).join("key.pem");
    // the test's tempdir is 0700 root: let the task reach the key file's directory, as a
    // Borglet's work dir would be, so only the key's own mode protects it
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(cell.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(key.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let yaml = format!(
        "name: probe\nuser: root\npriority: batch\nkind: batch\ntasks: 1\n\
         command: [/bin/sh, -c, \"id -u; cat {} >/dev/null 2>&1 && echo READ-KEY || echo key-refused; env\"]\n\
         resources: {{cpu: 100m, ram: 16Mi}}\n",
        key.display()
    );
    cell.apply_yaml("probe", &yaml);
    cell.wait_for(Duration::from_secs(30), "probe done", |c| c.tasks("probe").iter().all(|t| t["state"] == "dead"));
    let out = cell.borgctl(&["logs", "probe", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let uid: u32 = text.lines().next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    assert_ne!(uid, 0, "task ran as root: {text}");
    assert!(text.contains("key-refused") && !text.contains("READ-KEY"), "{text}");
    assert!(!text.contains("BORG_CREDENTIALS") && !text.contains("key.pem"), "credentials leaked into env: {text}");
}
