//! openraft's RPCs over tonic: the client side (`RaftNetworkFactory`, one lazily connected
//! channel per peer) and the server side (`borg.v1.Raft`, served on the Borgmaster's API
//! listener). Messages are openraft's own types in the binary encoding of [`super::codec`] in a
//! `RaftMessage`; the reply is the encoding of the handler's `Result`, so a peer's Raft error
//! comes back as a remote error, not a transport one. Snapshot chunks travel with their bytes
//! beside the message (`InstallSnapshotBinary`). AppendEntries go as messages on one
//! long-lived stream per follower (`AppendEntriesStream`, see [`AppendStream`]). A peer of an
//! earlier version sends and reads JSON: its messages are read as they are, and one that answers
//! that a message does not decode is sent JSON from then on; one without the stream is sent
//! unary AppendEntries (an upgrade in any order).

use super::{BorgRaft, NodeId, TypeConfig};
use borg_proto as pb;
use borg_proto::raft_client::RaftClient;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, ServerState};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Largest Raft message accepted or sent (a group of thousands of bindings, a snapshot chunk).
pub const MAX_MESSAGE_BYTES: usize = 512 << 20;

/// A lazily connected channel to `address` (connects on first use, reconnects after failures),
/// mutual TLS with this replica's credentials unless it runs insecure.
///
/// Errors: the address is not a valid URI authority, or TLS is misconfigured.
pub fn channel(address: &str) -> borg_rpc::Result<Channel> {
    Ok(crate::tls::endpoint(address)?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .connect_lazy())
}

/// How a replica makes the channel to a peer's address: [`channel`] (TCP; mutual TLS unless
/// insecure) in the Borgmaster; the deterministic simulation dials over its simulated network.
pub type Dial = std::sync::Arc<dyn Fn(&str) -> borg_rpc::Result<Channel> + Send + Sync>;

/// Makes a [`Connection`] per peer.
#[derive(Clone, Default)]
pub struct Network {
    /// `None`: [`channel`].
    dial: Option<Dial>,
    /// What of this replica's log is not yet synced: AppendEntries wait until their
    /// `leader_commit` is (see [`super::durable`]). `None`: nothing ever waits.
    durable: Option<Arc<super::durable::Durable>>,
    /// Send AppendEntries as unary calls, never on an [`AppendStream`].
    unary_appends: bool,
}

impl Network {
    /// A network whose channels to peers `dial` makes.
    pub fn dialing(dial: Dial) -> Network {
        Network { dial: Some(dial), durable: None, unary_appends: false }
    }

    /// Sends AppendEntries as unary calls, as to a peer of an earlier version. The
    /// deterministic simulation (tests/tests/simulation.rs) does: with the stream, two runs of
    /// one seed diverged (seed 7 ended at log index 261 once and 267 the next time), so something
    /// on tonic's streaming path depends on more than the simulated clock and network. The
    /// stream itself is exercised with real processes by the fault suite (tests/tests/faults.rs).
    pub fn unary_appends(mut self) -> Network {
        self.unary_appends = true;
        self
    }

    /// Makes every AppendEntries wait, before it is sent, until `durable` has its
    /// `leader_commit` synced: a follower learns an entry is committed only once the leader's
    /// copy is durable (the log store's `durable`; see [`super::durable`]).
    pub fn committing_synced(mut self, durable: Arc<super::durable::Durable>) -> Network {
        self.durable = Some(durable);
        self
    }

    /// A Raft client for the replica at `address` (lazily connected), with
    /// [`MAX_MESSAGE_BYTES`] limits.
    ///
    /// Errors: the address is not a valid URI authority, or TLS is misconfigured.
    pub fn client(&self, address: &str) -> borg_rpc::Result<RaftClient<Channel>> {
        let ch = match &self.dial {
            Some(dial) => dial(address),
            None => channel(address),
        };
        ch.map(|ch| {
            RaftClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        let client = self.client(&node.addr);
        if let Err(e) = &client {
            tracing::error!(target, address = %node.addr, error = %e, "bad replica address");
        }
        Connection {
            target,
            address: node.addr.clone(),
            client: client.map_err(|e| e.to_string()),
            json: false,
            durable: self.durable.clone(),
            appends: None,
            unary_appends: self.unary_appends,
        }
    }
}

/// The client side of the Raft RPCs to one peer.
pub struct Connection {
    target: NodeId,
    address: String,
    client: Result<RaftClient<Channel>, String>,
    /// The peer reads only JSON (an earlier version): learnt from its answer.
    json: bool,
    /// See [`Network::committing_synced`].
    durable: Option<Arc<super::durable::Durable>>,
    /// The open AppendEntries stream to the peer, if any (opened by the first AppendEntries,
    /// dropped on any error or timeout, opened again by the next).
    appends: Option<AppendStream>,
    /// The peer has no AppendEntriesStream (an earlier version): learnt from its answer.
    unary_appends: bool,
}

/// A leader's AppendEntriesStream to one follower: requests go out on `requests`, each answered
/// by the next message of `replies`. openraft sends one AppendEntries to a follower at a time,
/// so a reply always answers the last request.
///
/// Why a stream: a unary call is an HTTP/2 stream of its own (headers both ways, trailers, a
/// task on each side) and tonic's client writes its headers, its message and its end of stream
/// in three `writev` calls; every apply costs each follower two AppendEntries (the entry, then
/// the heartbeat that carries its commit). On the stream each is one message each way.
struct AppendStream {
    requests: tokio::sync::mpsc::Sender<pb::RaftMessage>,
    replies: tonic::Streaming<pb::RaftMessage>,
}

/// How a replica says that a message does not decode (an older one, given the binary encoding).
const UNDECODABLE: &str = "Raft message does not decode";

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
    SnapshotBinary,
}

impl Connection {
    /// Sends `req` (with `data`, for [`Rpc::SnapshotBinary`]) and decodes the peer's
    /// `Result<Resp, RaftError<E>>`.
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        data: &[u8],
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let reply = self.send(rpc, req, data, ttl).await?;
        Self::decode_reply(self.target, &self.address, reply)
    }

    /// Sends one message; the peer's gRPC status is returned as it is.
    async fn send<Req: serde::Serialize, E: std::error::Error>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        data: &[u8],
        ttl: Duration,
    ) -> Result<Result<Response<pb::RaftMessage>, Status>, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e.clone())))),
        };
        loop {
            let json = super::codec::encode_as(req, self.json).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            let mut request = Request::new(pb::RaftMessage { json, data: data.to_vec() });
            request.set_timeout(ttl);
            let reply = match rpc {
                Rpc::Append => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::Snapshot => client.install_snapshot(request).await,
                Rpc::SnapshotBinary => client.install_snapshot_binary(request).await,
            };
            match reply {
                Err(s)
                    if !self.json
                        && s.code() == tonic::Code::InvalidArgument
                        && s.message().starts_with(UNDECODABLE) =>
                {
                    tracing::warn!(target = self.target, address = %self.address, "replica reads only JSON (an earlier version); sending it JSON");
                    self.json = true;
                }
                reply => return Ok(reply),
            }
        }
    }

    fn decode_reply<Resp, E>(
        target: NodeId,
        address: &str,
        reply: Result<Response<pb::RaftMessage>, Status>,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let reply = reply.map_err(|s| {
            let e = std::io::Error::other(format!("replica {target} at {address}: {}", s.message()));
            match s.code() {
                tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            }
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            super::codec::decode(&reply.into_inner().json).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
    }

    /// Sends `message` on the AppendEntries stream, opening it first if none is open, and
    /// returns the peer's reply. On any error the stream is dropped (the next call opens
    /// another); so is it when the caller gives up waiting (the future is dropped).
    ///
    /// Errors: the peer's status (UNIMPLEMENTED from an earlier version when opening, or what
    /// AppendEntries would have answered), or UNAVAILABLE when the stream closed.
    async fn stream_append(&mut self, message: pb::RaftMessage) -> Result<pb::RaftMessage, Status> {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(Status::unavailable(e.clone())),
        };
        let mut stream = match self.appends.take() {
            Some(stream) => stream,
            None => {
                let (requests, rx) = tokio::sync::mpsc::channel(1);
                let replies =
                    client.append_entries_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
                AppendStream { requests, replies }
            }
        };
        if stream.requests.send(message).await.is_err() {
            return Err(Status::unavailable("the AppendEntries stream closed"));
        }
        match stream.replies.message().await? {
            Some(reply) => {
                self.appends = Some(stream);
                Ok(reply)
            }
            None => Err(Status::unavailable("the peer ended the AppendEntries stream")),
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        if let (Some(durable), Some(commit)) = (&self.durable, rpc.leader_commit) {
            // the follower learns of the commit only once this replica's copy is synced
            let synced = tokio::time::timeout(option.hard_ttl(), durable.wait(commit.index)).await;
            let why = match synced {
                Ok(Ok(())) => None,
                Ok(Err(why)) => Some(format!("this replica's log did not sync: {why}")),
                Err(_) => Some(format!("this replica's log not synced up to {} in time", commit.index)),
            };
            if let Some(why) = why {
                return Err(RPCError::Network(NetworkError::new(&std::io::Error::other(why))));
            }
        }
        let ttl = option.hard_ttl();
        if self.json || self.unary_appends {
            return self.call(Rpc::Append, &rpc, &[], ttl).await;
        }
        let json = super::codec::encode(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let message = pb::RaftMessage { json, data: Vec::new() };
        match tokio::time::timeout(ttl, self.stream_append(message)).await {
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
                tracing::warn!(target = self.target, address = %self.address, "replica has no AppendEntriesStream (an earlier version); sending it unary AppendEntries");
                self.unary_appends = true;
                self.call(Rpc::Append, &rpc, &[], ttl).await
            }
            Ok(reply) => Self::decode_reply(self.target, &self.address, reply.map(Response::new)),
            Err(_) => Err(RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
                "replica {} at {}: no answer to AppendEntries within {ttl:?}",
                self.target, self.address
            ))))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        // the chunk's bytes beside the message; a peer without the binary RPC gets them inside it
        let mut rpc = rpc;
        let data = std::mem::take(&mut rpc.data);
        let reply = self.send(Rpc::SnapshotBinary, &rpc, &data, option.hard_ttl()).await?;
        match reply {
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                rpc.data = data;
                self.call(Rpc::Snapshot, &rpc, &[], option.hard_ttl()).await
            }
            reply => Self::decode_reply(self.target, &self.address, reply),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &[], option.hard_ttl()).await
    }
}

/// The server side: hands each message to the local Raft and answers its `Result`, encoded as
/// the request was (see [`decode`]).
#[derive(Clone)]
pub struct RaftService {
    raft: BorgRaft,
    id: NodeId,
    address: String,
    /// Whether callers must be replicas (mutual TLS); off with `--insecure`.
    auth: bool,
    /// Set once this replica may take part in Raft: at once for a replica with a store, after
    /// [`super::check_store_not_lost`] for one that started empty. Until then it refuses votes,
    /// entries and snapshots (Status still answers).
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// When a leader's message was last accepted, for the election watch.
    heard: super::election::Heard,
    /// Turns true when the replica begins to shut down (see [`RaftService::closing_on`]).
    closing: Option<tokio::sync::watch::Receiver<bool>>,
}

impl RaftService {
    /// The service of replica `id` advertised at `address`; with `auth`, only callers with a
    /// replica certificate of the cell may call it; Raft messages are refused until `ready`.
    /// Each AppendEntries or snapshot chunk accepted from a leader is recorded in `heard` (the
    /// one [`super::election::watch`] reads).
    pub fn new(
        raft: BorgRaft,
        id: NodeId,
        address: String,
        auth: bool,
        ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
        heard: super::election::Heard,
    ) -> Self {
        RaftService { raft, id, address, auth, ready, heard, closing: None }
    }

    /// Ends every AppendEntriesStream with UNAVAILABLE once `closing` turns true. A graceful
    /// shutdown (SIGTERM) waits for the server's open streams, and a leader's stream to this
    /// replica never ends by itself: without this, a follower told to stop never exited.
    pub fn closing_on(mut self, closing: tokio::sync::watch::Receiver<bool>) -> Self {
        self.closing = Some(closing);
        self
    }

    /// UNAVAILABLE while this replica, started with an empty store, has not yet learned from
    /// its peers that it may vote.
    fn check_ready(&self) -> Result<(), Status> {
        if self.ready.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        Err(Status::unavailable(format!(
            "replica {} started with an empty data dir and is asking its peers whether it was a voter (it takes no votes or entries until it knows); retry",
            self.id
        )))
    }

    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        borg_rpc::auth::authenticate(
            req,
            self.auth,
            &[borg_rpc::auth::Role::Replica],
            "only replicas of the master group speak Raft",
        )
        .map(|_| ())
    }

    /// Hands an AppendEntries message to the local Raft and encodes its answer; one accepted
    /// from a leader counts as hearing from it.
    async fn append(&self, message: pb::RaftMessage) -> Result<Response<pb::RaftMessage>, Status> {
        self.check_ready()?;
        let (rpc, json) = decode_bytes(&message.json)?;
        let reply = self.raft.append_entries(rpc).await;
        if matches!(&reply, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.heard.now();
        }
        encode(&reply, json)
    }

    /// Hands a snapshot chunk to the local Raft; one accepted from the leader of this
    /// replica's term counts as hearing from it.
    async fn install(
        &self,
        chunk: InstallSnapshotRequest<TypeConfig>,
        json: bool,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let vote = chunk.vote;
        let reply = self.raft.install_snapshot(chunk).await;
        if matches!(&reply, Ok(r) if r.vote == vote) {
            self.heard.now();
        }
        encode(&reply, json)
    }

    /// The tonic server for this service, with [`MAX_MESSAGE_BYTES`] limits.
    pub fn server(self) -> pb::raft_server::RaftServer<RaftService> {
        pb::raft_server::RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// The replies of an AppendEntriesStream, as the server sends them.
pub type AppendReplies =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::RaftMessage, Status>> + Send + 'static>>;

/// One UNAVAILABLE once its future says the replica is shutting down (nothing if it says the
/// sender is gone): merged into an AppendEntriesStream's replies, it ends the stream.
struct Closing(Option<std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>>);

impl tokio_stream::Stream for Closing {
    type Item = Result<pb::RaftMessage, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let Some(closed) = self.0.as_mut() else { return std::task::Poll::Ready(None) };
        let closed = std::task::ready!(closed.as_mut().poll(cx));
        self.0 = None;
        std::task::Poll::Ready(closed.then(|| Err(Status::unavailable("this replica is shutting down"))))
    }
}

/// Decodes a request; the flag says it was JSON (a replica of an earlier version), to be
/// answered in JSON.
fn decode<T: serde::de::DeserializeOwned>(req: Request<pb::RaftMessage>) -> Result<(T, bool), Status> {
    decode_bytes(&req.into_inner().json)
}

fn decode_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(T, bool), Status> {
    let json = super::codec::is_json(bytes);
    super::codec::decode(bytes).map(|v| (v, json)).map_err(|e| Status::invalid_argument(format!("{UNDECODABLE}: {e}")))
}

/// Encodes a reply, in JSON when the request was (see [`decode`]).
fn encode<T: serde::Serialize>(v: &T, json: bool) -> Result<Response<pb::RaftMessage>, Status> {
    super::codec::encode_as(v, json)
        .map(|json| Response::new(pb::RaftMessage { json, data: Vec::new() }))
        .map_err(|e| Status::internal(format!("Raft reply does not encode: {e}")))
}

/// This replica's status as the `Status` RPC reports it.
pub fn local_status(raft: &BorgRaft, id: NodeId, address: &str) -> pb::ReplicaStatus {
    let m = raft.metrics().borrow().clone();
    let voter = m.membership_config.membership().voter_ids().any(|v| v == id);
    let initialized = m.membership_config.membership().nodes().next().is_some();
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Follower if voter => "follower",
        ServerState::Follower | ServerState::Learner => "learner",
        ServerState::Shutdown => "unreachable",
    };
    pb::ReplicaStatus {
        id,
        address: address.to_string(),
        role: role.into(),
        last_applied_index: m.last_applied.map_or(0, |l| l.index),
        last_log_index: m.last_log_index.unwrap_or(0),
        term: m.current_term,
        leader_id: m.current_leader.unwrap_or(0),
        voter,
        initialized,
        voters: m.membership_config.membership().voter_ids().collect(),
        // (the Raft service, which knows, fills it in its Status answer)
        ready: true,
        membership_term: m.membership_config.log_id().map_or(0, |l| l.leader_id.term),
        membership_index: m.membership_config.log_id().map_or(0, |l| l.index),
        joint: m.membership_config.membership().get_joint_config().len() > 1,
    }
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(&self, req: Request<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        self.check(&req)?;
        self.append(req.into_inner()).await
    }

    type AppendEntriesStreamStream = AppendReplies;

    async fn append_entries_stream(
        &self,
        req: Request<tonic::Streaming<pb::RaftMessage>>,
    ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
        self.check(&req)?;
        let service = self.clone();
        // one at a time, in order; an error (tonic's, or a message this replica refuses) ends
        // the stream with its status
        let replies = tokio_stream::StreamExt::then(req.into_inner(), move |message| {
            let service = service.clone();
            async move { service.append(message?).await.map(Response::into_inner) }
        });
        let Some(mut closing) = self.closing.clone() else { return Ok(Response::new(Box::pin(replies))) };
        let closed = Closing(Some(Box::pin(async move { closing.wait_for(|c| *c).await.is_ok() })));
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::merge(replies, closed))))
    }

    async fn vote(&self, req: Request<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        self.check(&req)?;
        self.check_ready()?;
        let (rpc, json) = decode(req)?;
        encode(&self.raft.vote(rpc).await, json)
    }

    async fn install_snapshot(&self, req: Request<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
        self.check(&req)?;
        self.check_ready()?;
        let (rpc, json) = decode(req)?;
        self.install(rpc, json).await
    }

    async fn install_snapshot_binary(
        &self,
        req: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        self.check(&req)?;
        self.check_ready()?;
        let pb::RaftMessage { json, data } = req.into_inner();
        let (mut chunk, json): (openraft::raft::InstallSnapshotRequest<TypeConfig>, bool) = decode_bytes(&json)?;
        chunk.data = data;
        self.install(chunk, json).await
    }

    async fn status(&self, _: Request<pb::ReplicaStatusRequest>) -> Result<Response<pb::ReplicaStatus>, Status> {
        let mut s = local_status(&self.raft, self.id, &self.address);
        s.ready = self.ready.load(std::sync::atomic::Ordering::Acquire);
        Ok(Response::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A request from a replica of an earlier version (JSON) is answered in JSON, one of this
    /// version in the binary encoding.
    #[test]
    fn replies_are_encoded_as_their_request() {
        let vote = VoteRequest::<NodeId> { vote: openraft::Vote::new(3, 1), last_log_id: None };
        for (bytes, json) in
            [(serde_json::to_vec(&vote).unwrap(), true), (super::super::codec::encode(&vote).unwrap(), false)]
        {
            let (back, was_json): (VoteRequest<NodeId>, bool) = decode_bytes(&bytes).unwrap();
            assert_eq!((back.vote, was_json), (vote.vote, json));
            let reply =
                encode(&VoteResponse::<NodeId> { vote: vote.vote, vote_granted: true, last_log_id: None }, was_json)
                    .unwrap()
                    .into_inner()
                    .json;
            assert_eq!(reply.first() == Some(&b'{'), json);
            serde_json::from_slice::<VoteResponse<NodeId>>(&reply)
                .map(|_| ())
                .map_err(|e| e.to_string())
                .unwrap_or_else(|e| assert!(!json, "a JSON request must get JSON back: {e}"));
        }
        let e = decode_bytes::<VoteRequest<NodeId>>(b"\xc1").unwrap_err();
        assert!(e.message().starts_with(UNDECODABLE), "{e}");
    }

    /// A fake follower over real gRPC. `earlier`: a replica of an earlier version, which reads
    /// and answers only JSON, refuses anything else the way it did, and has no
    /// AppendEntriesStream. Otherwise one of this version, answering Success to every
    /// AppendEntries; its streams end with INTERNAL after `fail_after` messages. Records whether
    /// each unary request was JSON, and counts the streams opened.
    #[derive(Clone, Default)]
    struct Fake {
        earlier: bool,
        fail_after: usize,
        unary_json: Arc<Mutex<Vec<bool>>>,
        opened: Arc<Mutex<usize>>,
    }

    fn success(json: bool) -> Result<pb::RaftMessage, Status> {
        let reply: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> = Ok(AppendEntriesResponse::Success);
        let json = match json {
            true => serde_json::to_vec(&reply).unwrap(),
            false => super::super::codec::encode(&reply).unwrap(),
        };
        Ok(pb::RaftMessage { json, data: Vec::new() })
    }

    #[tonic::async_trait]
    impl pb::raft_server::Raft for Fake {
        async fn append_entries(&self, req: Request<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
            let bytes = req.into_inner().json;
            let parsed = serde_json::from_slice::<AppendEntriesRequest<TypeConfig>>(&bytes);
            self.unary_json.lock().unwrap().push(parsed.is_ok());
            if self.earlier {
                parsed.map_err(|e| Status::invalid_argument(format!("Raft message does not decode: {e}")))?;
            }
            success(self.earlier).map(Response::new)
        }
        type AppendEntriesStreamStream = AppendReplies;
        async fn append_entries_stream(
            &self,
            req: Request<tonic::Streaming<pb::RaftMessage>>,
        ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
            if self.earlier {
                return Err(Status::unimplemented("append_entries_stream"));
            }
            *self.opened.lock().unwrap() += 1;
            let (fail_after, mut served) = (self.fail_after, 0);
            let replies = tokio_stream::StreamExt::map(req.into_inner(), move |m| {
                served += 1;
                match (m, served <= fail_after) {
                    (Ok(_), true) => success(false),
                    (Ok(_), false) => Err(Status::internal("refused")),
                    (Err(s), _) => Err(s),
                }
            });
            Ok(Response::new(Box::pin(replies)))
        }
        async fn vote(&self, _: Request<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
            Err(Status::unimplemented("vote"))
        }
        async fn install_snapshot(&self, _: Request<pb::RaftMessage>) -> Result<Response<pb::RaftMessage>, Status> {
            Err(Status::unimplemented("install_snapshot"))
        }
        async fn install_snapshot_binary(
            &self,
            _: Request<pb::RaftMessage>,
        ) -> Result<Response<pb::RaftMessage>, Status> {
            Err(Status::unimplemented("install_snapshot_binary"))
        }
        async fn status(&self, _: Request<pb::ReplicaStatusRequest>) -> Result<Response<pb::ReplicaStatus>, Status> {
            Err(Status::unimplemented("status"))
        }
    }

    /// Serves `service` on a loopback port; returns a connection to it as peer 2.
    async fn connect_to<S>(service: S) -> Connection
    where
        S: pb::raft_server::Raft,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tonic::transport::Server::builder()
            .add_service(pb::raft_server::RaftServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        let dial: Dial = Arc::new(|addr: &str| {
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .map(|e| e.connect_lazy())
                .map_err(|e| borg_rpc::Error::BadAddress(e.to_string()))
        });
        Network::dialing(dial).new_client(2, &BasicNode::new(addr.as_str())).await
    }

    fn heartbeat() -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest::<TypeConfig> {
            vote: openraft::Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        }
    }

    /// AppendEntries to a follower of this version go as messages on one stream; when the
    /// follower ends it with an error, that call fails and the next opens a new stream.
    #[tokio::test]
    async fn appends_share_one_stream_until_it_fails() {
        let follower = Fake { fail_after: 3, ..Default::default() };
        let mut peer = connect_to(follower.clone()).await;
        let option = || RPCOption::new(Duration::from_secs(10));
        for _ in 0..3 {
            let reply = peer.append_entries(heartbeat(), option()).await;
            assert!(matches!(reply, Ok(AppendEntriesResponse::Success)), "{reply:?}");
        }
        assert_eq!((*follower.opened.lock().unwrap(), follower.unary_json.lock().unwrap().len()), (1, 0));
        let refused = peer.append_entries(heartbeat(), option()).await;
        assert!(matches!(&refused, Err(RPCError::Network(e)) if e.to_string().contains("refused")), "{refused:?}");
        let reply = peer.append_entries(heartbeat(), option()).await;
        assert!(matches!(reply, Ok(AppendEntriesResponse::Success)), "{reply:?}");
        assert_eq!((*follower.opened.lock().unwrap(), follower.unary_json.lock().unwrap().len()), (2, 0));
    }

    /// The stream merged into every AppendEntriesStream: nothing until the replica begins to
    /// shut down, then one UNAVAILABLE, which ends the stream; nothing at all if the sender is
    /// dropped without shutting down.
    #[tokio::test]
    async fn closing_yields_one_unavailable_once_shutdown_begins() {
        use tokio_stream::StreamExt;
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let mut closing = Closing(Some(Box::pin(async move { rx.wait_for(|c| *c).await.is_ok() })));
        assert!(tokio::time::timeout(Duration::from_millis(50), closing.next()).await.is_err(), "ended early");
        tx.send(true).unwrap();
        let item = closing.next().await;
        assert!(matches!(&item, Some(Err(s)) if s.code() == tonic::Code::Unavailable), "{item:?}");
        assert!(closing.next().await.is_none());
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let mut gone = Closing(Some(Box::pin(async move { rx.wait_for(|c| *c).await.is_ok() })));
        drop(tx);
        assert!(gone.next().await.is_none());
    }

    /// A leader of this version replicating to a follower of an earlier one (an upgrade under
    /// way), over real gRPC on loopback: the stream is refused (UNIMPLEMENTED), then the first
    /// unary message, binary; it is sent again as JSON, answered, and every later message is
    /// unary JSON at once.
    #[tokio::test]
    async fn a_replica_of_an_earlier_version_is_sent_json() {
        let follower = Fake { earlier: true, ..Default::default() };
        let mut peer = connect_to(follower.clone()).await;
        for _ in 0..2 {
            let reply = peer.append_entries(heartbeat(), RPCOption::new(Duration::from_secs(10))).await;
            assert!(matches!(reply, Ok(AppendEntriesResponse::Success)), "{reply:?}");
        }
        assert_eq!(*follower.unary_json.lock().unwrap(), vec![false, true, true]);
    }
}
