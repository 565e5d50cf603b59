//! Following server streams (`events --watch`, `tasks --watch`, `resolve --watch`): through any
//! replica, reconnecting after a dropped connection, a failover or a cut-off, and resuming from
//! the last applied index seen.

use super::Cx;
use crate::conn::{connect, status};
use borg_proto as pb;
use borg_proto::borgmaster_client::BorgmasterClient;
use borgctl::render;
use std::cell::Cell;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;
use tonic::transport::Channel;

/// Opens a stream with `open` and hands each message to `on`, for ever: when the stream ends or
/// fails (the replica went away, cut the watcher off, or no leader is known), it reconnects to
/// any replica and opens it again (`open` resumes from what `on` recorded).
///
/// Errors: NOT_FOUND, INVALID_ARGUMENT or PERMISSION_DENIED (from the open or the stream), or
/// what `on` returns.
pub async fn follow<T, Fut>(
    cx: &Cx,
    mut open: impl FnMut(BorgmasterClient<Channel>) -> Fut,
    mut on: impl FnMut(T) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode>
where
    Fut: Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>,
{
    let fatal = |s: &tonic::Status| {
        matches!(s.code(), tonic::Code::NotFound | tonic::Code::InvalidArgument | tonic::Code::PermissionDenied)
    };
    loop {
        let c = match connect(&cx.master).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut stream = match open(c).await {
            Ok(s) => s.into_inner(),
            Err(s) if fatal(&s) => return Err(status(s)),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(m)) => on(m)?,
                Ok(None) => break,
                Err(s) if fatal(&s) => return Err(status(s)),
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `events --watch [JOB]`: the last `limit` events, then each new one as it commits (one JSON
/// object per line with `-o json`).
pub async fn events(cx: &Cx, job: Option<String>, limit: u32) -> anyhow::Result<ExitCode> {
    let job = job.unwrap_or_default();
    let r = connect(&cx.master)
        .await?
        .list_events(pb::ListEventsRequest { job: job.clone(), limit })
        .await
        .map_err(status)?
        .into_inner();
    let print = |e: &pb::Event| -> anyhow::Result<()> {
        if cx.json {
            outln!("{}", render::event_json(e))?;
        } else {
            outln!("{}", render::event_line(e))?;
        }
        Ok(())
    };
    for e in &r.events {
        print(e)?;
    }
    let since = Cell::new(r.applied_index);
    follow(
        cx,
        |mut c| {
            let req = pb::WatchEventsRequest { job: job.clone(), since_index: since.get() };
            async move { c.watch_events(req).await }
        },
        |m: pb::WatchEventsResponse| {
            if m.gap {
                eprintln!(
                    "borgctl: some events after index {} were no longer kept when the watch resumed",
                    since.get()
                );
            }
            for e in &m.events {
                print(e)?;
            }
            since.set(since.get().max(m.applied_index));
            Ok(())
        },
    )
    .await
}

/// `tasks JOB --watch`: the job's tasks, then each task that changes, as it commits (one JSON
/// object per task per line with `-o json`).
pub async fn tasks(cx: &Cx, job: String) -> anyhow::Result<ExitCode> {
    let mut first = true;
    follow(
        cx,
        |mut c| {
            let req = pb::WatchTasksRequest { job: job.clone() };
            async move { c.watch_tasks(req).await }
        },
        |m: pb::WatchTasksResponse| {
            if cx.json {
                for t in &m.tasks {
                    outln!("{}", render::task_json(t))?;
                }
            } else if first {
                outln!("{}", render::tasks_table(&m.tasks))?;
            } else {
                for t in &m.tasks {
                    outln!("{}", render::task_line(t))?;
                }
            }
            first = false;
            Ok(())
        },
    )
    .await
}

/// `resolve NAME --watch`: the endpoints, again (the whole set, rebuilt from the stream's
/// deltas) each time they change.
pub async fn resolve(
    cx: &Cx,
    name: String,
    print: impl Fn(&pb::ResolveResponse) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let since = Cell::new(0);
    let mut set: std::collections::BTreeMap<u32, pb::Endpoint> = Default::default();
    follow(
        cx,
        |mut c| {
            let req = pb::WatchEndpointsRequest { name: name.clone(), since_index: since.get() };
            async move { c.watch_endpoints(req).await }
        },
        |r: pb::ResolveResponse| {
            since.set(r.applied_index);
            if !r.delta {
                set.clear();
            }
            for i in &r.removed {
                set.remove(i);
            }
            set.extend(r.endpoints.into_iter().map(|e| (e.index, e)));
            let whole = pb::ResolveResponse {
                endpoints: set.values().cloned().collect(),
                applied_index: r.applied_index,
                ..Default::default()
            };
            print(&whole)
        },
    )
    .await
}
