//! Operator verbs on one task: `logs` (and `logs -f`, `logs -f --all`) and `exec`.

use super::Cx;
use crate::conn::{connect, status};
use borg_proto as pb;
use std::io::Write;
use std::process::ExitCode;

/// What `logs` reads.
pub struct LogArgs {
    /// stderr instead of stdout.
    pub stderr: bool,
    /// Only the last N lines of what is there.
    pub tail: Option<usize>,
    /// Bytes from the end to read (0: the Borglet's default, 64 KiB).
    pub tail_bytes: u64,
}

impl LogArgs {
    fn request(&self, job: &str, index: u32) -> pb::TaskLogsRequest {
        let stream = if self.stderr { pb::LogStream::Stderr } else { pb::LogStream::Stdout } as i32;
        pb::TaskLogsRequest { job: job.to_string(), index, stream, tail_bytes: self.tail_bytes }
    }

    /// `data` cut to its last `tail` lines (all of it without --tail).
    fn cut<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        let Some(n) = self.tail else { return data };
        let body = data.strip_suffix(b"\n").unwrap_or(data);
        let start =
            body.iter().enumerate().rev().filter(|(_, b)| **b == b'\n').nth(n.saturating_sub(1)).map(|(i, _)| i + 1);
        match (n, start) {
            (0, _) => &[],
            (_, Some(i)) => &data[i..],
            (_, None) => data,
        }
    }
}

/// `logs JOB INDEX`: the tail of a task's output.
pub async fn logs(cx: &Cx, name: String, index: u32, how: LogArgs) -> anyhow::Result<ExitCode> {
    let r = connect(&cx.master).await?.task_logs(how.request(&name, index)).await.map_err(status)?.into_inner();
    std::io::stdout().write_all(how.cut(&r.data))?;
    Ok(ExitCode::SUCCESS)
}

/// `logs JOB INDEX -f`: the tail, then what the task writes, until its run ends.
pub async fn follow(cx: &Cx, name: String, index: u32, how: LogArgs) -> anyhow::Result<ExitCode> {
    let mut stream =
        connect(&cx.master).await?.follow_task_logs(how.request(&name, index)).await.map_err(status)?.into_inner();
    let mut first = true;
    while let Some(m) = stream.message().await.map_err(status)? {
        let data = if first { how.cut(&m.data) } else { &m.data[..] };
        first = false;
        let mut out = std::io::stdout().lock();
        out.write_all(data)?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `logs JOB -f --all`: every placed task of the job followed at once, each line prefixed by
/// its index; ends when all of them have ended.
pub async fn follow_all(cx: &Cx, name: String, how: LogArgs) -> anyhow::Result<ExitCode> {
    let mut c = connect(&cx.master).await?;
    let tasks = c.list_tasks(pb::ListTasksRequest { job: name.clone() }).await.map_err(status)?.into_inner().tasks;
    let mut set = tokio::task::JoinSet::new();
    for t in tasks.iter().filter(|t| t.machine.is_some() && t.state != pb::TaskState::Dead as i32) {
        let (mut c, req, index) = (c.clone(), how.request(&name, t.index), t.index);
        let tail = how.tail;
        set.spawn(async move {
            let mut stream = c.follow_task_logs(req).await.map_err(status)?.into_inner();
            let (mut partial, mut first) = (Vec::new(), true);
            while let Some(m) = stream.message().await.map_err(status)? {
                let data =
                    if first { LogArgs { stderr: false, tail, tail_bytes: 0 }.cut(&m.data).to_vec() } else { m.data };
                first = false;
                partial.extend_from_slice(&data);
                // whole lines only, each under its index
                if let Some(end) = partial.iter().rposition(|b| *b == b'\n') {
                    let lines: Vec<u8> = partial.drain(..=end).collect();
                    let mut out = std::io::stdout().lock();
                    for line in lines.split_inclusive(|b| *b == b'\n') {
                        write!(out, "[{index}] ")?;
                        out.write_all(line)?;
                    }
                    out.flush()?;
                }
            }
            if !partial.is_empty() {
                let mut out = std::io::stdout().lock();
                write!(out, "[{index}] ")?;
                out.write_all(&partial)?;
                writeln!(out)?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(ExitCode::SUCCESS)
}

/// `exec JOB INDEX -- CMD...`: runs CMD inside the task with this process's stdin, stdout and
/// stderr; exits with its code (128 + N when a signal N ended it).
pub async fn exec(cx: &Cx, name: String, index: u32, command: Vec<String>) -> anyhow::Result<ExitCode> {
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ExecRequest>(16);
    tx.send(pb::ExecRequest { job: name, index, command, ..Default::default() }).await?;
    // stdin on a thread of its own (reads block); EOF closes the command's stdin
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = vec![0u8; 16 * 1024];
        let mut stdin = std::io::stdin().lock();
        loop {
            let msg = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => pb::ExecRequest { stdin_eof: true, ..Default::default() },
                Ok(n) => pb::ExecRequest { stdin: buf[..n].to_vec(), ..Default::default() },
            };
            let eof = msg.stdin_eof;
            if tx.blocking_send(msg).is_err() || eof {
                return;
            }
        }
    });
    let mut stream = connect(&cx.master)
        .await?
        .exec_task(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(status)?
        .into_inner();
    while let Some(m) = stream.message().await.map_err(status)? {
        if !m.stdout.is_empty() {
            let mut out = std::io::stdout().lock();
            out.write_all(&m.stdout)?;
            out.flush()?;
        }
        if !m.stderr.is_empty() {
            let mut err = std::io::stderr().lock();
            err.write_all(&m.stderr)?;
            err.flush()?;
        }
        match (m.exit_code, m.signal) {
            (_, Some(sig)) => return Ok(ExitCode::from((128 + sig).clamp(0, 255) as u8)),
            (Some(code), None) => return Ok(ExitCode::from(code.clamp(0, 255) as u8)),
            _ => {}
        }
    }
    anyhow::bail!("the exec stream ended without the command's exit status (its Borglet or master went away)")
}

/// `restart JOB [--index N]...`: a rolling restart.
pub async fn restart(cx: &Cx, name: String, indices: Vec<u32>) -> anyhow::Result<ExitCode> {
    let r = connect(&cx.master)
        .await?
        .restart_job(pb::RestartJobRequest { name: name.clone(), indices })
        .await
        .map_err(status)?
        .into_inner();
    if cx.json {
        crate::output::print_json(&serde_json::json!({"job": name, "version": r.version, "restarting": r.restarting}))?;
    } else {
        outln!(
            "job {name}: restarting {} tasks through a rolling update (version {}); follow with `borgctl rollout status {name} --wait`",
            r.restarting,
            r.version
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::LogArgs;

    #[test]
    fn tail_keeps_the_last_lines() {
        let a = |tail| LogArgs { stderr: false, tail, tail_bytes: 0 };
        assert_eq!(a(Some(2)).cut(b"1\n2\n3\n"), b"2\n3\n");
        assert_eq!(a(Some(5)).cut(b"1\n2\n"), b"1\n2\n");
        assert_eq!(a(Some(1)).cut(b"1\n2"), b"2");
        assert_eq!(a(Some(0)).cut(b"1\n"), b"");
        assert_eq!(a(None).cut(b"1\n2\n"), b"1\n2\n");
    }
}
