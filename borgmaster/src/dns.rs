//! DNS for the cell's names (`borgmaster --dns ADDR`, UDP and TCP): plain and unauthenticated,
//! like the status page. Answers from this replica's state, TTL [`TTL_SECONDS`]:
//!
//! - `A` for `<index>.<job>.<user>.<cell>.borg.`: the task's machine address (placed tasks on
//!   machines whose address host is an IPv4 literal);
//! - `SRV` for `_<port>._tcp.<job>.<user>.<cell>.borg.`: one record per ready task, its port
//!   named `<port>`, target `<index>.<job>.<user>.<cell>.borg.` (with its `A` record as
//!   additional data);
//! - `NXDOMAIN` for a name that denotes no task or port; an existing name asked for another
//!   type gets an empty answer.
//!
//! The wire format is hickory-proto's; the socket loops are ours (a query, an answer).

use crate::master::Master;
use crate::state::{CellState, Job, Task, TaskState};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::Ipv4Addr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Time to live of every answer, seconds: short, the cell changes.
pub const TTL_SECONDS: u32 = 5;

/// The top-level label of the cell's names.
pub const DOMAIN: &str = "borg";

/// `<index>.<job>.<user>.<cell>.borg.`
fn task_name(state: &CellState, job: &Job, t: &Task) -> Option<Name> {
    Name::from_ascii(format!("{}.{}.{}.{}.{DOMAIN}.", t.index, t.job, job.spec.user, state.cell)).ok()
}

/// The IPv4 address of a placed, live task's machine.
fn task_ip(state: &CellState, t: &Task) -> Option<Ipv4Addr> {
    if t.state == TaskState::Dead {
        return None;
    }
    let m = state.machines.get(t.machine.as_ref()?)?;
    borg_rpc::auth::host_of(&m.address).parse().ok()
}

/// What a query's name denotes.
enum Answer {
    /// No such name.
    NxDomain,
    /// The name exists; these records answer it (maybe none for this type), with additional ones.
    Records(Vec<Record>, Vec<Record>),
}

fn lookup(state: &CellState, q: &Query) -> Answer {
    let name = q.name().to_ascii().to_ascii_lowercase();
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    let job_of = |job: &str, user: &str, cell: &str| {
        state.jobs.get(job).filter(|j| j.spec.user == user && cell == state.cell.to_ascii_lowercase())
    };
    let a_record = |job: &Job, t: &Task| {
        Some(Record::from_rdata(task_name(state, job, t)?, TTL_SECONDS, RData::A(A(task_ip(state, t)?))))
    };
    match labels.as_slice() {
        [index, job, user, cell, DOMAIN] => {
            let Some(j) = job_of(job, user, cell) else { return Answer::NxDomain };
            let Some(t) = index.parse::<usize>().ok().and_then(|i| j.tasks.get(i)) else { return Answer::NxDomain };
            let answers = match q.query_type() {
                RecordType::A | RecordType::ANY => a_record(j, t).into_iter().collect(),
                _ => vec![],
            };
            Answer::Records(answers, vec![])
        }
        [port, "_tcp", job, user, cell, DOMAIN] if port.starts_with('_') => {
            let Some(j) = job_of(job, user, cell) else { return Answer::NxDomain };
            let port = &port[1..];
            if !j.spec.ports.iter().any(|p| p == port) {
                return Answer::NxDomain;
            }
            if !matches!(q.query_type(), RecordType::SRV | RecordType::ANY) {
                return Answer::Records(vec![], vec![]);
            }
            let mut answers = Vec::new();
            let mut additional = Vec::new();
            for t in j.tasks.iter().filter(|t| t.ready) {
                let (Some(target), Some(number), Some(a)) = (task_name(state, j, t), t.ports.get(port), a_record(j, t))
                else {
                    continue;
                };
                answers.push(Record::from_rdata(
                    q.name().clone(),
                    TTL_SECONDS,
                    RData::SRV(SRV::new(0, 0, *number, target)),
                ));
                additional.push(a);
            }
            Answer::Records(answers, additional)
        }
        _ => Answer::NxDomain,
    }
}

/// The answer to the DNS message `query` (wire format) from `state`; `None` for bytes that are
/// not a DNS query (dropped, as servers do).
pub fn answer(state: &CellState, query: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    if req.message_type() != MessageType::Query {
        return None;
    }
    let mut resp = Message::new();
    resp.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_authoritative(true)
        .set_recursion_desired(req.recursion_desired());
    match req.queries().first() {
        None => {
            resp.set_response_code(ResponseCode::FormErr);
        }
        Some(q) => {
            resp.add_query(q.clone());
            match lookup(state, q) {
                Answer::NxDomain => {
                    resp.set_response_code(ResponseCode::NXDomain);
                }
                Answer::Records(answers, additional) => {
                    resp.add_answers(answers);
                    resp.add_additionals(additional);
                }
            }
        }
    }
    resp.to_vec().ok()
}

/// Serves DNS on `udp` and `tcp` (bound by the caller) from `master`'s state until the process
/// ends. Errors of single requests are logged and skipped.
pub async fn serve(master: Arc<Master>, udp: tokio::net::UdpSocket, tcp: tokio::net::TcpListener) {
    let m = master.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = match udp.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "DNS over UDP: receive failed");
                    continue;
                }
            };
            let reply = answer(&m.state(), &buf[..n]);
            if let Some(reply) = reply {
                if let Err(e) = udp.send_to(&reply, from).await {
                    tracing::debug!(error = %e, %from, "DNS over UDP: send failed");
                }
            }
        }
    });
    loop {
        let (mut conn, from) = match tcp.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "DNS over TCP: accept failed");
                continue;
            }
        };
        let m = master.clone();
        tokio::spawn(async move {
            // each message is preceded by its length (RFC 1035 §4.2.2)
            loop {
                let mut len = [0u8; 2];
                if conn.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
                if conn.read_exact(&mut msg).await.is_err() {
                    return;
                }
                let Some(reply) = answer(&m.state(), &msg) else { return };
                let Ok(n) = u16::try_from(reply.len()) else { return };
                if conn.write_all(&n.to_be_bytes()).await.is_err() || conn.write_all(&reply).await.is_err() {
                    tracing::debug!(%from, "DNS over TCP: the client went away");
                    return;
                }
            }
        });
    }
}
