//! The capacity planner's view: /metrics on the master and Borglets (checked by promtool and
//! scraped by a real Prometheus where installed), borgctl top / cell usage, and the status page
//! (rendered by headless Chromium where installed).

use borg_integration_tests::{http_get, which, TestCell};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn promtool_check(name: &str, text: &str) {
    let Some(promtool) = which("promtool") else {
        eprintln!("skipped promtool check of {name}: promtool not installed (Debian package prometheus)");
        return;
    };
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write metrics");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics on {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_top_cell_usage_and_status_page() {
    let cell = TestCell::start_with("obs", 1, true);
    let mh = cell.master_http.clone().expect("master http address");
    let bh = cell.borglets[0].http.clone().expect("borglet http address");
    cell.apply(Path::new("configs/jobs/web-service.yaml"));
    cell.apply(Path::new("configs/jobs/hello-batch.yaml"));
    cell.wait_tasks("web", "running");
    cell.wait_tasks("hello", "dead");
    // usage arrives with the next polls
    cell.wait_for(Duration::from_secs(10), "web's memory use reported", |c| {
        c.json(&["top", "jobs"])
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == "web" && j["used"]["ram_bytes"].as_u64() > Some(0))
    });

    let (code, m) = http_get(&mh, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(metric(&m, "borg_cell_capacity_cpu_cores"), Some(4.0));
    assert_eq!(metric(&m, "borg_cell_allocated_cpu_cores{band=\"production\"}"), Some(1.0), "web: 2 x 500m");
    assert_eq!(metric(&m, "borg_cell_free_cpu_cores"), Some(3.0));
    assert_eq!(metric(&m, "borg_tasks{state=\"running\",band=\"production\"}"), Some(2.0));
    assert_eq!(metric(&m, "borg_tasks{state=\"dead\",band=\"batch\"}"), Some(3.0));
    assert_eq!(metric(&m, "borg_machines{state=\"up\"}"), Some(1.0));
    assert!(metric(&m, "borg_cell_used_ram_bytes{band=\"production\"}").unwrap_or(0.0) > 0.0);
    assert_eq!(metric(&m, "borg_placement_latency_seconds_count"), Some(5.0), "one sample per task that ran");
    assert!(metric(&m, "borg_scheduling_pass_duration_seconds_count").unwrap_or(0.0) >= 1.0);
    for name in [
        "borg_cell_stranded_cpu_cores",
        "borg_tasks_pending{reason=\"preempted\"}",
        "borg_link_poll_duration_seconds_count",
        "borg_link_oldest_poll_age_seconds",
        "borg_link_poll_overruns_total",
    ] {
        assert!(metric(&m, name).is_some(), "{name} in master metrics");
    }
    promtool_check("the master's /metrics", &m);
    // a steady machine's polls carry no task statuses: the digest of what the master committed
    // matches the real Borglet's (web running and ready, hello's dead tasks gone from its set)
    let answers = |kind: &str| {
        let m = http_get(&mh, "/metrics").1;
        metric(&m, &format!("borg_link_poll_answers_total{{tasks=\"{kind}\"}}")).unwrap_or(0.0)
    };
    // (counted from now: before the jobs came, the empty machine's answers were unchanged too)
    let unchanged = answers("unchanged");
    cell.wait_for(Duration::from_secs(30), "a poll answered without its task list", |_| {
        answers("unchanged") > unchanged
    });
    let proposed = || metric(&http_get(&mh, "/metrics").1, "borg_link_reports_proposed_total").unwrap_or(0.0);
    let before = proposed();
    assert!(before >= 5.0, "every task's start was reported: {before}");
    // every 5th poll of a steady machine brings its tasks' usage alone, as columns (once a
    // listing gave the master the runs they follow)
    let usage = answers("usage");
    cell.wait_for(Duration::from_secs(30), "a later poll bringing the tasks' usage alone", |_| {
        answers("usage") > usage
    });
    // a steady cell's Borglet reports match what is committed: nothing is proposed again
    assert_eq!(proposed(), before, "reports proposed while nothing changed");

    let (code, b) = http_get(&bh, "/metrics");
    assert_eq!(code, 200);
    assert!(metric(&b, "borg_borglet_task_memory_bytes{job=\"web\",index=\"0\"}").unwrap_or(0.0) > 0.0, "{b}");
    assert_eq!(metric(&b, "borg_borglet_task_restarts_total{job=\"web\",index=\"1\"}"), Some(0.0));
    assert_eq!(metric(&b, "borg_borglet_master_connected"), Some(1.0));
    assert_eq!(metric(&b, "borg_borglet_capacity_cpu_cores"), Some(4.0));
    promtool_check("the Borglet's /metrics", &b);
    assert_eq!(http_get(&mh, "/healthz"), (200, "ok\n".to_string()));

    // borgctl top and cell usage agree with the metrics
    let u = cell.json(&["cell", "usage"]);
    assert_eq!(u["capacity"]["cpu_millis"], 4000);
    assert_eq!(u["allocated"]["cpu_millis"], 1000);
    assert_eq!(u["free"]["cpu_millis"], 3000);
    assert_eq!(u["bands"][2]["band"], "production");
    assert_eq!(u["bands"][2]["tasks_running"], 2);
    let machines = cell.json(&["top", "machines"]);
    assert_eq!(machines[0]["allocated"]["cpu_millis"], 1000);
    let users = cell.json(&["top", "users"]);
    let bob = users.as_array().unwrap().iter().find(|u| u["user"] == "bob").expect("bob");
    assert_eq!((bob["jobs"].as_u64(), bob["running"].as_u64()), (Some(1), Some(2)));
    let out = cell.borgctl(&["cell", "usage"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("production"));

    // the status page
    let (code, page) = http_get(&mh, "/");
    assert_eq!(code, 200);
    for needle in
        ["Cell test", "/machine/obs-m1", "/job/web", "Recent events", "Quotas", "1 finished or killed job hidden"]
    {
        assert!(page.contains(needle), "status page shows {needle:?}");
    }
    assert!(!page.contains("href='/job/hello'"), "a finished job is hidden by default");
    assert!(!page.contains("<th>pid</th>"), "the summary lists no tasks");
    let (code, all) = http_get(&mh, "/?all=1");
    assert_eq!(code, 200);
    assert!(all.contains("href='/job/hello'"), "?all=1 shows finished jobs");
    let (code, job) = http_get(&mh, "/job/hello");
    assert_eq!(code, 200);
    for needle in ["Job hello", "exited 0", "hello</a>/2", "Events", "/machine/obs-m1"] {
        assert!(job.contains(needle), "the job page shows {needle:?}");
    }
    let (code, machine) = http_get(&mh, "/machine/obs-m1");
    assert_eq!(code, 200);
    assert!(machine.contains("Machine obs-m1") && machine.contains("href='/job/web'>web</a>/0"), "{machine}");
    assert_eq!(http_get(&mh, "/job/nope").0, 404);
    assert_eq!(http_get(&mh, "/machine/nope").0, 404);
    let chromium = which("chromium").or_else(|| which("chromium-browser"));
    let Some(chromium) = chromium else {
        eprintln!("skipped status page screenshot: chromium not installed");
        return;
    };
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1800"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://{mh}/"))
        .output()
        .expect("run chromium");
    assert!(shot.exists(), "chromium wrote no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real PNG ({} bytes)", png.len());
    println!("status page screenshot: {}", shot.display());
    eprintln!("status page screenshot: {}", shot.display());
}

#[test]
fn a_real_prometheus_scrapes_the_cell() {
    let Some(prometheus) = which("prometheus") else {
        eprintln!("skipped: prometheus not installed (Debian package prometheus)");
        return;
    };
    let cell = TestCell::start_with("prom", 1, true);
    let mh = cell.master_http.clone().expect("master http");
    let bh = cell.borglets[0].http.clone().expect("borglet http");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = cell.dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: borgmaster\n    static_configs: [{{targets: ['{mh}']}}]\n  - job_name: borglet\n    static_configs: [{{targets: ['{bh}']}}]\n"
        ),
    )
    .unwrap();
    let mut prom = Command::new(prometheus)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", cell.dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(cell.dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("start prometheus");
    let addr = format!("127.0.0.1:{port}");
    let query = |q: &str| {
        std::net::TcpStream::connect(&addr).ok()?;
        let (code, body) = http_get(&addr, &format!("/api/v1/query?query={q}"));
        (code == 200).then_some(body)
    };
    let start = Instant::now();
    let mut ok = false;
    while start.elapsed() < Duration::from_secs(60) {
        let up = query("sum(up)").unwrap_or_default();
        let cap = query("borg_cell_capacity_cpu_cores").unwrap_or_default();
        if up.contains("\"2\"") && cap.contains("\"4\"") {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(ok, "Prometheus scraped both targets (up = 2) and sees borg_cell_capacity_cpu_cores = 4");
}
