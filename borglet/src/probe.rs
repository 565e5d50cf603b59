//! Running one health-check probe (`http`, `tcp`, `exec`) with its timeout, outside the
//! runtime's lock. HTTP is one `GET` over a plain TCP connection, read until the status line:
//! a check needs nothing more, so no HTTP client library is pulled in for it.

use crate::runtime::ProbeJob;
use borg_jobspec::Probe;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `job`'s probe against the task on this machine (127.0.0.1 and its port); `Err` says
/// why it failed (refused, timed out, the status code, the exit status).
pub async fn run(job: &ProbeJob) -> Result<(), String> {
    if let Probe::Exec { command } = &job.probe {
        return exec(job, command).await; // kills its process at the timeout itself
    }
    match tokio::time::timeout(job.timeout, probe(job)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {} ms", job.timeout.as_millis())),
    }
}

async fn probe(job: &ProbeJob) -> Result<(), String> {
    let port = || job.port.ok_or_else(|| "the task has no such port".to_string());
    match &job.probe {
        Probe::Tcp { .. } => {
            tokio::net::TcpStream::connect(("127.0.0.1", port()?)).await.map(|_| ()).map_err(|e| e.to_string())
        }
        Probe::Http { path, .. } => {
            let port = port()?;
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
            let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: borglet\r\n\r\n");
            s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 512];
            while !buf.contains(&b'\n') && buf.len() < 4096 {
                let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let line = String::from_utf8_lossy(&buf);
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("no HTTP status in {:?}", line.lines().next().unwrap_or("")))?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP {code}"))
            }
        }
        Probe::Exec { command } => exec(job, command).await,
    }
}

/// Runs `command` in the task's sandbox, cgroup, user and environment (its output goes to the
/// task's stdout and stderr files); healthy on exit 0. Killed (its process group) at the timeout.
async fn exec(job: &ProbeJob, command: &[String]) -> Result<(), String> {
    let mut child = crate::process::spawn(command, &job.sandbox, &job.env, job.cgroup.as_ref(), job.user)
        .map_err(|e| e.to_string())?;
    let pid = child.id();
    let deadline = tokio::time::Instant::now() + job.timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let (code, signal) = crate::process::exit_parts(status);
                return Err(borg_jobspec::exit_text(code, signal));
            }
            Ok(None) if tokio::time::Instant::now() >= deadline => {
                crate::process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                return Err(format!("timed out after {} ms", job.timeout.as_millis()));
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => return Err(e.to_string()),
        }
    }
}
