//! The endpoint: listeners, connections, the incoming channel and the send path.

use crate::dns::{self, DnsError, ResolvedTarget, SipResolver};
use crate::limits::{Counters, Limits};
use crate::spec::ListenSpec;
use crate::trace::{Direction, LogSink, TraceEvent, TraceSink};
use crate::udp_batch::BatchReceiver;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sip_core::framing::FramerLimits;
use sip_core::via::{rewrite_via_transport, stamp_via};
use sip_core::{ConnectionId, Flow, Frame, Message, ParseError, StreamFramer, Transport};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// RFC 3261 §18.1.1: a request larger than this that would go over UDP goes over a
/// congestion-controlled transport (TCP) instead, since the path MTU is unknown.
pub const UDP_MTU_LIMIT: usize = 1300;

/// The receive buffer asked for on a UDP listening socket (the kernel caps it at
/// `net.core.rmem_max`). Linux's default, about 200 KB, holds only a couple of hundred
/// datagrams (each counts with its kernel overhead): at ten thousand a second, a 20 ms
/// pause of the receiving thread (a busy machine, a disk write) loses requests.
const UDP_RECV_BUFFER: usize = 4 << 20;

/// A non-blocking UDP socket bound to `addr`, with [`UDP_RECV_BUFFER`] asked for.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(e) = sock.set_recv_buffer_size(UDP_RECV_BUFFER) {
        tracing::debug!(%addr, "UDP receive buffer left at the default: {e}");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// What the endpoint delivers to the service above it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// A message that parsed. A request's top Via already carries `received`/`rport`
    /// when RFC 3261 §18.2.1 and RFC 3581 ask for them (see [`crate::stamp_via`]).
    Message {
        /// The message.
        msg: Message,
        /// Where it came from; pass it to [`crate::response_target`] to answer.
        flow: Flow,
        /// When the bytes were read.
        received_at: Instant,
    },
    /// Bytes that did not parse. The service decides: a request with enough of a
    /// start line and Via earns a 400 naming `error` (`error.reason_phrase()`),
    /// anything else is dropped.
    Invalid {
        /// The bytes as received.
        bytes: Bytes,
        /// Why they did not parse.
        error: ParseError,
        /// Where they came from.
        flow: Flow,
        /// When the bytes were read.
        received_at: Instant,
    },
    /// A message handed to [`Endpoint::send_nowait`] that needed a new connection could
    /// not be sent after all: the connection failed or timed out. `token` is the one the
    /// sender gave, so it can tell its transaction (a proxy tries the next branch).
    SendFailed {
        /// The sender's token.
        token: u64,
        /// Where the message was going.
        flow: Flow,
        /// Why it was not sent.
        error: SendError,
    },
}

impl Incoming {
    /// The flow the bytes came over (for [`Incoming::SendFailed`], went to).
    pub fn flow(&self) -> &Flow {
        match self {
            Incoming::Message { flow, .. }
            | Incoming::Invalid { flow, .. }
            | Incoming::SendFailed { flow, .. } => flow,
        }
    }
}

/// What [`Endpoint::send_nowait`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Written to its UDP socket or queued on its open connection, over this flow.
    Sent(Flow),
    /// A connection is being opened beside the caller; a failure comes back as
    /// [`Incoming::SendFailed`] with the caller's token.
    Connecting,
}

/// Where to send: an existing flow (a response, or a request inside a dialog over the
/// connection it uses), a transport and address, or a SIP URI to locate by RFC 3263.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A flow: its connection when still open, else its transport and remote address.
    Flow(Flow),
    /// A transport and address; an open connection to it is reused.
    Addr(Transport, SocketAddr),
    /// A `sip:`/`sips:` URI: located by RFC 3263, targets tried in order, and a request
    /// over [`UDP_MTU_LIMIT`] bytes that would go over UDP goes over TCP.
    Uri(String),
}

impl From<Flow> for Target {
    fn from(f: Flow) -> Self {
        Target::Flow(f)
    }
}
impl From<&Flow> for Target {
    fn from(f: &Flow) -> Self {
        Target::Flow(*f)
    }
}
impl From<(Transport, SocketAddr)> for Target {
    fn from((t, a): (Transport, SocketAddr)) -> Self {
        Target::Addr(t, a)
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The socket could not be bound.
    #[error("cannot listen on {spec}: {source} (is another server using this port?)")]
    Io {
        /// The listen spec.
        spec: ListenSpec,
        /// The OS error.
        source: io::Error,
    },
    /// A TLS or WSS listener without a certificate.
    #[error(
        "{0} needs a certificate: set EndpointConfig::tls_server (sip_net::tls::server_config_from_pem_files, or tls::self_signed for testing)"
    )]
    NoCertificate(ListenSpec),
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The message exceeds `Limits::max_message`.
    #[error("message of {size} bytes exceeds the limit of {limit}; raise Limits::max_message")]
    Oversize {
        /// The message size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// No listener of a transport we must send from (UDP sends from a listening socket).
    #[error("no {0} listener to send from; add a {0}: listen spec")]
    NoListener(Transport),
    /// The connection could not be opened.
    #[error("cannot connect over {transport} to {addr}: {reason}")]
    Connect {
        /// The transport.
        transport: Transport,
        /// The peer.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The TLS handshake failed: the peer's certificate was refused (see
    /// [`HandshakeFailure`]), or the peer and we could not agree.
    #[error("TLS with {addr}: {failure}")]
    TlsHandshake {
        /// The peer.
        addr: SocketAddr,
        /// Why, as a person can act on it.
        failure: HandshakeFailure,
    },
    /// Opening the connection took longer than `Limits::connect_timeout`.
    #[error("connecting over {transport} to {addr} timed out")]
    ConnectTimeout {
        /// The transport.
        transport: Transport,
        /// The peer.
        addr: SocketAddr,
    },
    /// The flow's connection is gone and cannot be reopened (a WebSocket client
    /// connection: only the client can connect again).
    #[error("connection {0:?} is closed and cannot be reopened from this side")]
    ConnectionClosed(ConnectionId),
    /// The connection's write queue is full (`Limits::connection_queue`).
    #[error("write queue to {0} is full; the peer is not reading")]
    QueueFull(SocketAddr),
    /// A connection limit refused a new connection.
    #[error("connection limit reached ({0}); raise Limits::max_connections")]
    ConnectionLimit(usize),
    /// TLS to a peer without a client configuration.
    #[error("no TLS client configuration; set EndpointConfig::tls_client")]
    NoTlsClient,
    /// A socket error while sending a datagram.
    #[error("cannot send to {addr}: {source}")]
    Io {
        /// The peer.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The URI could not be located.
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// Every located target failed; the last error is kept.
    #[error("all {tried} targets for {uri} failed; last: {last}")]
    AllTargetsFailed {
        /// The URI.
        uri: String,
        /// How many targets were tried.
        tried: usize,
        /// The last failure.
        last: Box<SendError>,
    },
    /// The endpoint has been shut down.
    #[error("the endpoint is shut down")]
    Shutdown,
}

impl SendError {
    /// Whether the next RFC 3263 target is worth trying after this error.
    fn is_transport_failure(&self) -> bool {
        matches!(
            self,
            SendError::Connect { .. }
                | SendError::TlsHandshake { .. }
                | SendError::ConnectTimeout { .. }
                | SendError::Io { .. }
                | SendError::QueueFull(_)
                | SendError::ConnectionClosed(_)
        )
    }
}

/// Why a TLS handshake we started failed, in words a person can act on. rustls's
/// certificate verdicts are kept apart (with the verdict's name, which is what a search
/// finds), so that a phone can say "certificate not trusted" rather than "no response".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// The peer's certificate was refused: `problem` says how ("not trusted", "not
    /// valid for this address", "expired"...), `verdict` is rustls's name for it
    /// (`UnknownIssuer`, `NotValidForName`...).
    #[error("certificate {problem} ({verdict})")]
    Certificate {
        /// What is wrong with it.
        problem: &'static str,
        /// rustls's `CertificateError` variant.
        verdict: String,
    },
    /// Anything else: an alert from the peer, no common protocol version, the
    /// connection closed during the handshake.
    #[error("handshake failed: {0}")]
    Other(String),
}

impl HandshakeFailure {
    /// Reads the error tokio-rustls returns from a client handshake.
    pub fn from_io(e: &io::Error) -> HandshakeFailure {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::InvalidCertificate(c)) => HandshakeFailure::certificate(c),
            Some(other) => HandshakeFailure::Other(other.to_string()),
            None => HandshakeFailure::Other(e.to_string()),
        }
    }

    fn certificate(c: &rustls::CertificateError) -> HandshakeFailure {
        use rustls::CertificateError as C;
        let problem = match c {
            C::UnknownIssuer | C::BadSignature => "not trusted",
            C::NotValidForName | C::NotValidForNameContext { .. } => "not valid for this address",
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not valid yet",
            C::Revoked => "revoked",
            _ => "refused",
        };
        // The variant's name, without the context some variants carry (that is for
        // logs: the expected name, the times).
        let debug = format!("{c:?}");
        let name = debug
            .split(|ch: char| !ch.is_ascii_alphanumeric())
            .next()
            .unwrap_or_default();
        let verdict = name.strip_suffix("Context").unwrap_or(name).to_owned();
        HandshakeFailure::Certificate { problem, verdict }
    }
}

/// How to build an [`Endpoint`].
pub struct EndpointConfig {
    /// What to listen on.
    pub listen: Vec<ListenSpec>,
    /// Limits; see [`Limits::default`].
    pub limits: Limits,
    /// Certificate for TLS and WSS listeners ([`crate::tls`] builds one).
    pub tls_server: Option<Arc<rustls::ServerConfig>>,
    /// Trust for outbound TLS and WSS connections; without it they are refused.
    pub tls_client: Option<Arc<rustls::ClientConfig>>,
    /// Where every message in and out is reported; [`LogSink`] by default.
    pub trace: Arc<dyn TraceSink>,
    /// DNS for URIs with host names; numeric hosts need none.
    pub resolver: Option<SipResolver>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            listen: Vec::new(),
            limits: Limits::default(),
            tls_server: None,
            tls_client: None,
            trace: Arc::new(LogSink),
            resolver: None,
        }
    }
}

impl EndpointConfig {
    /// A configuration listening on `listen`, everything else default.
    pub fn new(listen: impl IntoIterator<Item = ListenSpec>) -> Self {
        EndpointConfig {
            listen: listen.into_iter().collect(),
            ..Default::default()
        }
    }
}

type ConnKey = (Transport, SocketAddr);

struct ConnEntry {
    tx: mpsc::Sender<Bytes>,
    flow: Flow,
}

#[derive(Default)]
struct ConnTable {
    by_id: HashMap<ConnectionId, ConnEntry>,
    by_remote: HashMap<ConnKey, ConnectionId>,
    per_ip: HashMap<IpAddr, usize>,
}

struct Inner {
    limits: Limits,
    counters: Counters,
    trace: Arc<dyn TraceSink>,
    incoming: mpsc::Sender<Incoming>,
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    bound: Mutex<Vec<ListenSpec>>,
    conns: Mutex<ConnTable>,
    next_id: AtomicU64,
    tls_server: Option<TlsAcceptor>,
    tls_client: Option<TlsConnector>,
    resolver: Option<SipResolver>,
    /// One lock per target being connected to, so that concurrent sends to one new
    /// target open one connection, not several.
    connecting: Mutex<HashMap<ConnKey, Arc<tokio::sync::Mutex<()>>>>,
    shutdown: watch::Receiver<bool>,
}

/// Stops every task when the last [`Endpoint`] handle goes away.
struct ShutdownGuard(watch::Sender<bool>);

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// The transport layer: sockets, connections, and the path of every message between
/// the network and the service. Cheap to clone; all clones share one set of sockets,
/// and the tasks stop when the last clone is dropped (or on [`Endpoint::shutdown`]).
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
    guard: Arc<ShutdownGuard>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("listening", &self.local_addrs())
            .finish_non_exhaustive()
    }
}

/// Locks a std mutex; a poisoned lock (a panic elsewhere while holding it) still holds
/// consistent data here, since every critical section is a few map operations.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Endpoint {
    /// Binds every listen spec and starts serving. Returns the endpoint and the
    /// receiving end of the incoming channel (capacity `Limits::incoming_queue`).
    /// Must be called inside a tokio runtime.
    pub async fn bind(
        config: EndpointConfig,
    ) -> Result<(Endpoint, mpsc::Receiver<Incoming>), BindError> {
        let limits = config.limits;
        let (in_tx, in_rx) = mpsc::channel(limits.incoming_queue.max(1));
        let (sd_tx, sd_rx) = watch::channel(false);

        let mut udp = Vec::new();
        let mut tcp_listeners = Vec::new();
        let mut bound = Vec::new();
        for spec in &config.listen {
            if spec.transport.is_secure() && config.tls_server.is_none() {
                return Err(BindError::NoCertificate(*spec));
            }
            let io_err = |source| BindError::Io {
                spec: *spec,
                source,
            };
            if spec.transport == Transport::Udp {
                let sock = bind_udp(spec.addr).map_err(io_err)?;
                let local = sock.local_addr().map_err(io_err)?;
                bound.push(ListenSpec::new(Transport::Udp, local));
                udp.push((local, Arc::new(sock)));
            } else {
                let l = TcpListener::bind(spec.addr).await.map_err(io_err)?;
                let local = l.local_addr().map_err(io_err)?;
                bound.push(ListenSpec::new(spec.transport, local));
                tcp_listeners.push((spec.transport, local, l));
            }
        }
        let inner = Arc::new(Inner {
            limits,
            counters: Counters::default(),
            trace: config.trace,
            incoming: in_tx,
            udp,
            bound: Mutex::new(bound),
            conns: Mutex::new(ConnTable::default()),
            next_id: AtomicU64::new(1),
            tls_server: config.tls_server.map(TlsAcceptor::from),
            tls_client: config.tls_client.map(TlsConnector::from),
            resolver: config.resolver,
            connecting: Mutex::new(HashMap::new()),
            shutdown: sd_rx,
        });
        for (local, sock) in &inner.udp {
            tokio::spawn(udp_loop(inner.clone(), sock.clone(), *local));
        }
        for (transport, local, l) in tcp_listeners {
            tracing::info!(%transport, %local, "listening");
            tokio::spawn(accept_loop(inner.clone(), l, transport, local));
        }
        Ok((
            Endpoint {
                inner,
                guard: Arc::new(ShutdownGuard(sd_tx)),
            },
            in_rx,
        ))
    }

    /// The addresses actually bound (port 0 replaced by the port the OS chose).
    pub fn local_addrs(&self) -> Vec<ListenSpec> {
        lock(&self.inner.bound).clone()
    }

    /// The first bound address of `transport`.
    pub fn local_addr(&self, transport: Transport) -> Option<SocketAddr> {
        lock(&self.inner.bound)
            .iter()
            .find(|s| s.transport == transport)
            .map(|s| s.addr)
    }

    /// The event counters.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Connections open now (in and out, all connection-oriented transports).
    pub fn connection_count(&self) -> usize {
        lock(&self.inner.conns).by_id.len()
    }

    /// Closes a connection at once; messages still queued for it are dropped.
    /// Returns whether it was open.
    pub fn close_connection(&self, id: ConnectionId) -> bool {
        let mut t = lock(&self.inner.conns);
        // Dropping the sender ends the connection task, which cleans the rest up.
        t.by_id.remove(&id).is_some()
    }

    /// Stops every listener and connection. Also happens when the last handle drops.
    pub fn shutdown(&self) {
        let _ = self.guard.0.send(true);
    }

    /// Sends `bytes` (one whole SIP message) to `target`, and returns the flow it took
    /// (with the connection, for connection-oriented transports).
    ///
    /// Over a connection, the message is queued for the connection's task: `Ok` means
    /// queued, not written. A full queue is an error (and counted), never a wait.
    pub async fn send(&self, target: impl Into<Target>, bytes: Bytes) -> Result<Flow, SendError> {
        if *self.inner.shutdown.borrow() {
            return Err(SendError::Shutdown);
        }
        let limit = self.inner.limits.max_message;
        if bytes.len() > limit {
            self.inner.counters.oversize_msg();
            tracing::warn!(size = bytes.len(), limit, "not sending oversize message");
            return Err(SendError::Oversize {
                size: bytes.len(),
                limit,
            });
        }
        let result = match target.into() {
            Target::Flow(flow) => self.inner.send_flow(flow, bytes, None).await,
            Target::Addr(transport, remote) => {
                let flow = Flow {
                    transport,
                    remote,
                    local: None,
                    connection: None,
                };
                self.inner.send_flow(flow, bytes, None).await
            }
            Target::Uri(uri) => self.send_uri(&uri, bytes).await,
        };
        if result.is_err() {
            self.inner.counters.send_error();
        }
        result
    }

    /// Opens a connection to `remote` over `transport` (TCP, TLS, WS or WSS), or finds
    /// the one open, without sending anything; returns its flow, with our local
    /// address on it. A phone that cannot accept connections over `transport` (it has
    /// no TLS listener) puts that address in its Contact, so that requests for it come
    /// back over this connection.
    pub async fn connect(
        &self,
        transport: Transport,
        remote: SocketAddr,
    ) -> Result<Flow, SendError> {
        if *self.inner.shutdown.borrow() {
            return Err(SendError::Shutdown);
        }
        if transport == Transport::Udp {
            return Err(SendError::Connect {
                transport,
                addr: remote,
                reason: "UDP has no connections".into(),
            });
        }
        let (_, flow) = self.inner.connect(transport, remote, None).await?;
        Ok(flow)
    }

    /// Sends `bytes` over `flow` without ever waiting: a datagram is written now (or, if
    /// the socket's buffer is full, by a task beside the caller), a message for an open
    /// connection is queued on it, and one that needs a new connection (TCP, TLS, WS
    /// connect and handshakes, up to `Limits::connect_timeout`) is handed to a task
    /// that connects and sends, reporting a failure as [`Incoming::SendFailed`] with
    /// `token`. A server's one protocol task sends this way, so a peer that never
    /// answers a SYN cannot stall everybody else's REGISTERs and calls.
    ///
    /// Messages sent this way to one new target keep their order: the tasks take the
    /// target's connect gate first come, first served, and the later ones find the
    /// connection the first opened.
    pub fn send_nowait(&self, flow: Flow, bytes: Bytes, token: u64) -> Result<Dispatch, SendError> {
        if *self.inner.shutdown.borrow() {
            return Err(SendError::Shutdown);
        }
        let limit = self.inner.limits.max_message;
        if bytes.len() > limit {
            self.inner.counters.oversize_msg();
            tracing::warn!(size = bytes.len(), limit, "not sending oversize message");
            return Err(SendError::Oversize {
                size: bytes.len(),
                limit,
            });
        }
        let result = self.inner.try_send_now(flow, &bytes);
        match result {
            Ok(Some(used)) => Ok(Dispatch::Sent(used)),
            Ok(None) => {
                let inner = self.inner.clone();
                tokio::spawn(async move {
                    if let Err(error) = inner.send_flow(flow, bytes, None).await {
                        inner.counters.send_error();
                        tracing::debug!(remote = %flow.remote, "send beside the core failed: {error}");
                        let _ = inner
                            .incoming
                            .send(Incoming::SendFailed { token, flow, error })
                            .await;
                    }
                });
                Ok(Dispatch::Connecting)
            }
            Err(e) => {
                self.inner.counters.send_error();
                Err(e)
            }
        }
    }

    /// Locates `uri` (RFC 3263) without sending anything: numeric hosts directly,
    /// names through the configured resolver.
    pub async fn locate(&self, uri: &str) -> Result<Vec<ResolvedTarget>, DnsError> {
        if let Some(t) = dns::numeric_target(uri)? {
            return Ok(t);
        }
        match &self.inner.resolver {
            Some(r) => r.locate(uri).await,
            None => Err(DnsError::NoResolver(uri.to_owned())),
        }
    }

    async fn send_uri(&self, uri: &str, bytes: Bytes) -> Result<Flow, SendError> {
        let targets = self.locate(uri).await?;
        let is_request = !bytes.starts_with(b"SIP/");
        let mut last = None;
        let mut tried = 0;
        for t in &targets {
            tried += 1;
            let flow = |transport| Flow {
                transport,
                remote: t.addr,
                local: None,
                connection: None,
            };
            let name = Some(t.host.as_str());
            let result = if t.transport == Transport::Udp
                && is_request
                && bytes.len() > UDP_MTU_LIMIT
            {
                // RFC 3261 §18.1.1: too big for UDP, so TCP, with the Via saying so;
                // if TCP is refused, UDP after all.
                tracing::debug!(size = bytes.len(), to = %t.addr, "request over the UDP MTU limit goes over TCP");
                let tcp_bytes = rewrite_via_transport(&bytes, Transport::Tcp);
                match self
                    .inner
                    .send_flow(flow(Transport::Tcp), tcp_bytes, name)
                    .await
                {
                    Err(SendError::Connect { .. }) => {
                        self.inner
                            .send_flow(flow(Transport::Udp), bytes.clone(), name)
                            .await
                    }
                    other => other,
                }
            } else {
                self.inner
                    .send_flow(flow(t.transport), bytes.clone(), name)
                    .await
            };
            match result {
                Ok(f) => return Ok(f),
                Err(e) if e.is_transport_failure() => {
                    tracing::info!(%uri, target = %t.addr, transport = %t.transport, error = %e, "target failed, trying the next");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        match last {
            Some(last) => Err(SendError::AllTargetsFailed {
                uri: uri.to_owned(),
                tried,
                last: Box::new(last),
            }),
            None => Err(SendError::Dns(DnsError::NotFound {
                name: uri.to_owned(),
            })),
        }
    }
}

impl Inner {
    fn trace(&self, direction: Direction, flow: &Flow, bytes: &Bytes) {
        self.trace.record(&TraceEvent {
            time: SystemTime::now(),
            direction,
            transport: flow.transport,
            local: flow.local,
            remote: flow.remote,
            bytes: bytes.clone(),
        });
    }

    /// Parses, stamps and wraps what arrived.
    fn make_incoming(&self, bytes: Bytes, flow: Flow) -> Incoming {
        let received_at = Instant::now();
        self.trace(Direction::In, &flow, &bytes);
        let core_limits = sip_core::Limits {
            max_message: self.limits.max_message,
            ..sip_core::Limits::default()
        };
        match Message::parse_with(bytes.clone(), &core_limits) {
            Ok(msg) => {
                self.counters.received();
                // A request whose top Via does not parse is delivered as it is: the
                // service validates and answers 400.
                let msg = match stamp_via(&msg, flow.remote) {
                    Ok(Some(stamped)) => stamped,
                    _ => msg,
                };
                Incoming::Message {
                    msg,
                    flow,
                    received_at,
                }
            }
            Err(error) => {
                self.counters.parse_error();
                tracing::debug!(remote = %flow.remote, transport = %flow.transport, %error, "message did not parse");
                Incoming::Invalid {
                    bytes,
                    error,
                    flow,
                    received_at,
                }
            }
        }
    }

    /// One datagram received on the UDP socket bound to `local`, in a buffer of
    /// `capacity` bytes: checked, parsed and delivered.
    fn take_datagram(&self, data: &[u8], src: SocketAddr, local: SocketAddr, capacity: usize) {
        if data.len() > self.limits.max_message || data.len() == capacity {
            self.counters.oversize_msg();
            tracing::warn!(%src, size = data.len(), limit = self.limits.max_message, "oversize datagram dropped");
            return;
        }
        // RFC 5626 §4.4.1 keep-alives over UDP (CRLFCRLF, or STUN which we do not
        // answer) carry no message.
        if data.iter().all(|c| matches!(c, b'\r' | b'\n' | b' ')) {
            return;
        }
        let flow = Flow {
            transport: Transport::Udp,
            remote: src,
            local: Some(local),
            connection: None,
        };
        let incoming = self.make_incoming(Bytes::copy_from_slice(data), flow);
        self.deliver_nowait(incoming);
    }

    /// Datagram delivery: never waits. A full channel means the service is behind,
    /// and UDP senders retransmit anyway.
    fn deliver_nowait(&self, incoming: Incoming) {
        match self.incoming.try_send(incoming) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(i)) => {
                self.counters.incoming_drop();
                tracing::warn!(remote = %i.flow().remote, "incoming queue full; message dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Stream delivery waits for room: that stops reading the connection, and TCP flow
    /// control pushes back on the peer, instead of losing a message nobody will resend.
    async fn deliver_wait(&self, incoming: Incoming) {
        let _ = self.incoming.send(incoming).await;
    }

    fn udp_socket_for(&self, flow: &Flow) -> Option<(SocketAddr, Arc<UdpSocket>)> {
        let exact = flow
            .local
            .and_then(|l| self.udp.iter().find(|(a, _)| *a == l));
        exact
            .or_else(|| {
                self.udp
                    .iter()
                    .find(|(a, _)| a.is_ipv4() == flow.remote.is_ipv4())
            })
            .map(|(a, s)| (*a, s.clone()))
    }

    /// The open connection for `flow`: its own, else any to the same transport and
    /// address; with its queue and the flow it is.
    fn open_connection(&self, flow: &Flow) -> Option<(mpsc::Sender<Bytes>, Flow)> {
        let t = lock(&self.conns);
        flow.connection
            .and_then(|id| t.by_id.get(&id))
            .or_else(|| {
                t.by_remote
                    .get(&(flow.transport, flow.remote))
                    .and_then(|id| t.by_id.get(id))
            })
            .map(|e| (e.tx.clone(), e.flow))
    }

    /// The part of a send that needs no waiting: `Ok(Some(flow))` when the datagram was
    /// written or the message queued on an open connection, `Ok(None)` when it needs a
    /// task (a new connection, or a full UDP socket buffer).
    fn try_send_now(&self, flow: Flow, bytes: &Bytes) -> Result<Option<Flow>, SendError> {
        if flow.transport == Transport::Udp {
            let (local, sock) = self
                .udp_socket_for(&flow)
                .ok_or(SendError::NoListener(Transport::Udp))?;
            let used = Flow {
                local: Some(local),
                connection: None,
                ..flow
            };
            return match sock.try_send_to(bytes, flow.remote) {
                Ok(_) => {
                    self.trace(Direction::Out, &used, bytes);
                    self.counters.sent();
                    Ok(Some(used))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(source) => Err(SendError::Io {
                    addr: flow.remote,
                    source,
                }),
            };
        }
        let existing = self.open_connection(&flow);
        let Some((tx, used)) = existing else {
            if let (Some(id), Transport::Ws | Transport::Wss) = (flow.connection, flow.transport) {
                return Err(SendError::ConnectionClosed(id));
            }
            return Ok(None);
        };
        match tx.try_send(bytes.clone()) {
            Ok(()) => {
                self.counters.sent();
                Ok(Some(used))
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.queue_full_drop();
                tracing::warn!(remote = %used.remote, "connection write queue full; message dropped");
                Err(SendError::QueueFull(used.remote))
            }
            // The connection is closing: a task reconnects.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(None),
        }
    }

    async fn send_flow(
        self: &Arc<Self>,
        flow: Flow,
        bytes: Bytes,
        server_name: Option<&str>,
    ) -> Result<Flow, SendError> {
        if flow.transport == Transport::Udp {
            let (local, sock) = self
                .udp_socket_for(&flow)
                .ok_or(SendError::NoListener(Transport::Udp))?;
            let used = Flow {
                local: Some(local),
                connection: None,
                ..flow
            };
            self.trace(Direction::Out, &used, &bytes);
            sock.send_to(&bytes, flow.remote)
                .await
                .map_err(|source| SendError::Io {
                    addr: flow.remote,
                    source,
                })?;
            self.counters.sent();
            return Ok(used);
        }
        let existing = self.open_connection(&flow);
        let (tx, used) = match existing {
            Some(found) => found,
            None => {
                if let (Some(id), Transport::Ws | Transport::Wss) =
                    (flow.connection, flow.transport)
                {
                    return Err(SendError::ConnectionClosed(id));
                }
                self.connect(flow.transport, flow.remote, server_name)
                    .await?
            }
        };
        match tx.try_send(bytes) {
            Ok(()) => {
                self.counters.sent();
                Ok(used)
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.queue_full_drop();
                tracing::warn!(remote = %used.remote, "connection write queue full; message dropped");
                Err(SendError::QueueFull(used.remote))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::ConnectionClosed(
                used.connection.unwrap_or(ConnectionId(0)),
            )),
        }
    }

    /// Opens a connection (one per target at a time) and starts its task.
    async fn connect(
        self: &Arc<Self>,
        transport: Transport,
        remote: SocketAddr,
        server_name: Option<&str>,
    ) -> Result<(mpsc::Sender<Bytes>, Flow), SendError> {
        let key = (transport, remote);
        let gate = lock(&self.connecting).entry(key).or_default().clone();
        let _held = gate.lock().await;
        // Someone else may have connected while we waited.
        let found = {
            let t = lock(&self.conns);
            t.by_remote
                .get(&key)
                .and_then(|id| t.by_id.get(id))
                .map(|e| (e.tx.clone(), e.flow))
        };
        let result = match found {
            Some(f) => Ok(f),
            None => {
                let timeout = self.limits.connect_timeout;
                match tokio::time::timeout(timeout, self.open(transport, remote, server_name)).await
                {
                    Ok(r) => r,
                    Err(_) => Err(SendError::ConnectTimeout {
                        transport,
                        addr: remote,
                    }),
                }
            }
        };
        lock(&self.connecting).remove(&key);
        result
    }

    async fn open(
        self: &Arc<Self>,
        transport: Transport,
        remote: SocketAddr,
        server_name: Option<&str>,
    ) -> Result<(mpsc::Sender<Bytes>, Flow), SendError> {
        let cerr = |e: &dyn std::fmt::Display| SendError::Connect {
            transport,
            addr: remote,
            reason: e.to_string(),
        };
        let tls = match transport {
            Transport::Tls | Transport::Wss => {
                Some(self.tls_client.clone().ok_or(SendError::NoTlsClient)?)
            }
            _ => None,
        };
        let tcp = TcpStream::connect(remote).await.map_err(|e| cerr(&e))?;
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().ok();
        let name_text = server_name
            .map(str::to_owned)
            .unwrap_or_else(|| remote.ip().to_string());
        let (tx, rx, flow, guard) = self
            .admit(transport, remote, local, false)
            .map_err(|_| SendError::ConnectionLimit(self.limits.max_connections))?;
        let tls_stream =
            match tls {
                Some(connector) => {
                    let name = rustls::pki_types::ServerName::try_from(name_text.clone())
                        .map_err(|e| cerr(&e))?;
                    Some(connector.connect(name, tcp).await.map_err(|e| {
                        SendError::TlsHandshake {
                            addr: remote,
                            failure: HandshakeFailure::from_io(&e),
                        }
                    })?)
                }
                None => {
                    if transport == Transport::Tcp {
                        tokio::spawn(run_stream(self.clone(), flow, tcp, rx, guard));
                        self.counters.opened();
                        return Ok((tx, flow));
                    }
                    if transport == Transport::Ws {
                        let ws = ws_client(tcp, "ws", &name_text, remote, self.ws_config())
                            .await
                            .map_err(|e| cerr(&e))?;
                        tokio::spawn(run_ws(self.clone(), flow, ws, rx, guard));
                        self.counters.opened();
                        return Ok((tx, flow));
                    }
                    None
                }
            };
        let Some(tls_stream) = tls_stream else {
            return Err(cerr(&"unsupported transport"));
        };
        if transport == Transport::Wss {
            let ws = ws_client(tls_stream, "wss", &name_text, remote, self.ws_config())
                .await
                .map_err(|e| cerr(&e))?;
            tokio::spawn(run_ws(self.clone(), flow, ws, rx, guard));
        } else {
            tokio::spawn(run_stream(self.clone(), flow, tls_stream, rx, guard));
        }
        self.counters.opened();
        Ok((tx, flow))
    }

    fn ws_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.limits.max_message))
            .max_frame_size(Some(self.limits.max_message))
    }

    /// Registers a connection if the limits allow it.
    fn admit(
        self: &Arc<Self>,
        transport: Transport,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        inbound: bool,
    ) -> Result<(mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>, Flow, ConnGuard), ()> {
        let mut t = lock(&self.conns);
        if t.by_id.len() >= self.limits.max_connections {
            self.counters.over_total();
            tracing::warn!(%remote, %transport, limit = self.limits.max_connections, "connection limit reached; connection refused");
            return Err(());
        }
        if inbound {
            let n = t.per_ip.get(&remote.ip()).copied().unwrap_or(0);
            if n >= self.limits.max_connections_per_ip {
                self.counters.over_per_ip();
                tracing::warn!(%remote, %transport, limit = self.limits.max_connections_per_ip, "per-IP connection limit reached; connection refused");
                return Err(());
            }
            *t.per_ip.entry(remote.ip()).or_default() += 1;
        }
        let id = ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let flow = Flow {
            transport,
            remote,
            local,
            connection: Some(id),
        };
        let (tx, rx) = mpsc::channel(self.limits.connection_queue.max(1));
        t.by_id.insert(
            id,
            ConnEntry {
                tx: tx.clone(),
                flow,
            },
        );
        t.by_remote.insert((transport, remote), id);
        Ok((
            tx,
            rx,
            flow,
            ConnGuard {
                inner: self.clone(),
                id,
                key: (transport, remote),
                ip: remote.ip(),
                inbound,
            },
        ))
    }
}

/// Removes a connection from the table when its task ends, however it ends.
struct ConnGuard {
    inner: Arc<Inner>,
    id: ConnectionId,
    key: ConnKey,
    ip: IpAddr,
    inbound: bool,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut t = lock(&self.inner.conns);
        // The entry may already be gone (close_connection); the per-IP count may not.
        t.by_id.remove(&self.id);
        if t.by_remote.get(&self.key) == Some(&self.id) {
            t.by_remote.remove(&self.key);
        }
        // Only inbound connections count against the per-IP limit.
        let per_ip = if self.inbound {
            t.per_ip.get_mut(&self.ip)
        } else {
            None
        };
        if let Some(n) = per_ip {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.per_ip.remove(&self.ip);
            }
        }
        self.inner.counters.closed();
    }
}

async fn udp_loop(inner: Arc<Inner>, sock: Arc<UdpSocket>, local: SocketAddr) {
    tracing::info!(transport = "udp", %local, "listening");
    let mut shutdown = inner.shutdown.clone();
    // One byte more than the limit, so that an oversize datagram is seen as such
    // rather than silently truncated to a "valid" prefix.
    let mut batches = BatchReceiver::new(inner.limits.max_message.saturating_add(1).min(65_536));
    loop {
        tokio::select! {
            r = sock.readable() => if let Err(e) = r {
                tracing::warn!(%local, error = %e, "udp socket failed; no longer listening");
                break;
            },
            _ = shutdown.changed() => break,
        }
        loop {
            let more = match batches.receive(&sock) {
                Ok(more) => more,
                // Linux reports an ICMP port unreachable for an earlier send as an
                // error on the next receive: not a reason to stop listening.
                Err(e) => {
                    tracing::debug!(%local, error = %e, "udp receive error");
                    true
                }
            };
            for (data, src) in batches.datagrams() {
                let Some(src) = src else { continue };
                inner.take_datagram(data, src, local, batches.capacity());
            }
            if !more {
                break;
            }
        }
    }
}

async fn accept_loop(
    inner: Arc<Inner>,
    listener: TcpListener,
    transport: Transport,
    local: SocketAddr,
) {
    let mut shutdown = inner.shutdown.clone();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, remote)) => {
                    let _ = tcp.set_nodelay(true);
                    let local = tcp.local_addr().unwrap_or(local);
                    match inner.admit(transport, remote, Some(local), true) {
                        Ok((_tx, rx, flow, guard)) => {
                            inner.counters.accepted();
                            tokio::spawn(serve_accepted(inner.clone(), tcp, flow, rx, guard));
                        }
                        Err(()) => drop(tcp),
                    }
                }
                Err(e) => {
                    // Usually out of file descriptors: wait a little rather than spin.
                    tracing::warn!(%local, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

async fn serve_accepted(
    inner: Arc<Inner>,
    tcp: TcpStream,
    flow: Flow,
    rx: mpsc::Receiver<Bytes>,
    guard: ConnGuard,
) {
    let deadline = inner.limits.handshake_timeout;
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        inner.counters.handshake_failure();
        tracing::info!(remote = %flow.remote, transport = %flow.transport, error = %e, "{what} handshake failed; connection closed");
    };
    match flow.transport {
        Transport::Tcp => run_stream(inner.clone(), flow, tcp, rx, guard).await,
        Transport::Ws => {
            match tokio::time::timeout(deadline, ws_accept(tcp, inner.ws_config())).await {
                Ok(Ok(ws)) => run_ws(inner.clone(), flow, ws, rx, guard).await,
                Ok(Err(e)) => fail("WebSocket", &e),
                Err(_) => fail("WebSocket", &"timed out"),
            }
        }
        Transport::Tls | Transport::Wss => {
            let Some(acceptor) = inner.tls_server.clone() else {
                return;
            };
            let tls = match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return fail("TLS", &e),
                Err(_) => return fail("TLS", &"timed out"),
            };
            if flow.transport == Transport::Tls {
                run_stream(inner.clone(), flow, tls, rx, guard).await;
            } else {
                match tokio::time::timeout(deadline, ws_accept(tls, inner.ws_config())).await {
                    Ok(Ok(ws)) => run_ws(inner.clone(), flow, ws, rx, guard).await,
                    Ok(Err(e)) => fail("WebSocket", &e),
                    Err(_) => fail("WebSocket", &"timed out"),
                }
            }
        }
        Transport::Udp => {}
    }
}

/// The server side of the WebSocket handshake, accepting only the `sip` subprotocol
/// (RFC 7118 §4.1: a server must not accept a handshake without it).
async fn ws_accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    config: WebSocketConfig,
) -> Result<WebSocketStream<S>, tungstenite::Error> {
    #[allow(clippy::result_large_err)] // the signature is tungstenite's
    fn check(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
        let offers_sip = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("sip"));
        if !offers_sip {
            let mut err = ErrorResponse::new(Some(
                "the WebSocket subprotocol \"sip\" is required (RFC 7118)".into(),
            ));
            *err.status_mut() = tungstenite::http::StatusCode::BAD_REQUEST;
            return Err(err);
        }
        resp.headers_mut().insert(
            "sec-websocket-protocol",
            tungstenite::http::HeaderValue::from_static("sip"),
        );
        Ok(resp)
    }
    tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config)).await
}

/// The client side of the WebSocket handshake, offering the `sip` subprotocol.
async fn ws_client<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    scheme: &str,
    host: &str,
    remote: SocketAddr,
    config: WebSocketConfig,
) -> Result<WebSocketStream<S>, tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    let authority = if host.parse::<IpAddr>().is_ok() {
        remote.to_string()
    } else {
        format!("{host}:{}", remote.port())
    };
    let mut req = format!("{scheme}://{authority}/").into_client_request()?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        tungstenite::http::HeaderValue::from_static("sip"),
    );
    let (ws, resp) = tokio_tungstenite::client_async_with_config(req, stream, Some(config)).await?;
    let agreed = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("sip"));
    if !agreed {
        return Err(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(
                tungstenite::error::SubProtocolError::NoSubProtocol,
            ),
        ));
    }
    Ok(ws)
}

/// One TCP or TLS connection: read, frame by Content-Length, deliver; write what is
/// queued; answer CRLFCRLF pings; close when idle, on a framing error or at shutdown.
async fn run_stream<S: AsyncRead + AsyncWrite + Unpin>(
    inner: Arc<Inner>,
    flow: Flow,
    mut io: S,
    mut rx: mpsc::Receiver<Bytes>,
    _guard: ConnGuard,
) {
    let mut shutdown = inner.shutdown.clone();
    let limits = FramerLimits {
        max_headers: FramerLimits::default()
            .max_headers
            .min(inner.limits.max_message),
        max_body: inner.limits.max_message,
    };
    let mut framer = StreamFramer::new(limits);
    let mut buf = vec![0u8; 16 * 1024];
    let idle = inner.limits.idle_timeout;
    let mut deadline = tokio::time::Instant::now() + idle;
    'conn: loop {
        tokio::select! {
            r = io.read(&mut buf) => {
                let n = match r {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!(remote = %flow.remote, error = %e, "connection read error");
                        break;
                    }
                };
                deadline = tokio::time::Instant::now() + idle;
                framer.push(&buf[..n]);
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Message(bytes))) => {
                            let incoming = inner.make_incoming(bytes, flow);
                            inner.deliver_wait(incoming).await;
                        }
                        Ok(Some(Frame::Ping)) => {
                            // RFC 5626 §3.5.1: a CRLFCRLF ping is answered with CRLF.
                            if io.write_all(b"\r\n").await.is_err() {
                                break 'conn;
                            }
                            let _ = io.flush().await;
                            inner.counters.ping();
                        }
                        Ok(Some(Frame::Pong)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            inner.counters.framing_error();
                            if matches!(
                                e,
                                sip_core::FramingError::BodyTooLarge { .. } | sip_core::FramingError::HeadersTooLarge { .. }
                            ) {
                                inner.counters.oversize_msg();
                            }
                            tracing::warn!(remote = %flow.remote, transport = %flow.transport, error = %e, "cannot frame the stream; connection closed");
                            break 'conn;
                        }
                    }
                }
            }
            m = rx.recv() => {
                let Some(bytes) = m else { break };
                inner.trace(Direction::Out, &flow, &bytes);
                if let Err(e) = io.write_all(&bytes).await {
                    tracing::debug!(remote = %flow.remote, error = %e, "connection write error");
                    break;
                }
                let _ = io.flush().await;
                deadline = tokio::time::Instant::now() + idle;
            }
            _ = tokio::time::sleep_until(deadline) => {
                inner.counters.idle();
                tracing::debug!(remote = %flow.remote, transport = %flow.transport, "idle connection closed");
                break;
            }
            _ = shutdown.changed() => break,
        }
    }
    let _ = io.shutdown().await;
}

/// One WebSocket connection: each text or binary message is one SIP message
/// (RFC 7118 §5.1).
async fn run_ws<S: AsyncRead + AsyncWrite + Unpin>(
    inner: Arc<Inner>,
    flow: Flow,
    mut ws: WebSocketStream<S>,
    mut rx: mpsc::Receiver<Bytes>,
    _guard: ConnGuard,
) {
    use tungstenite::Message as Ws;
    let mut shutdown = inner.shutdown.clone();
    let idle = inner.limits.idle_timeout;
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        tokio::select! {
            m = ws.next() => {
                deadline = tokio::time::Instant::now() + idle;
                let data: Bytes = match m {
                    Some(Ok(Ws::Text(t))) => t.into(),
                    Some(Ok(Ws::Binary(b))) => b,
                    Some(Ok(Ws::Close(_))) | None => break,
                    Some(Ok(_)) => continue, // ping/pong: tungstenite answers pings itself
                    Some(Err(tungstenite::Error::Capacity(e))) => {
                        inner.counters.oversize_msg();
                        tracing::warn!(remote = %flow.remote, error = %e, "oversize WebSocket message; connection closed");
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(remote = %flow.remote, error = %e, "WebSocket error");
                        break;
                    }
                };
                if data.iter().all(|c| matches!(c, b'\r' | b'\n')) {
                    continue;
                }
                let incoming = inner.make_incoming(data, flow);
                inner.deliver_wait(incoming).await;
            }
            m = rx.recv() => {
                let Some(bytes) = m else { break };
                inner.trace(Direction::Out, &flow, &bytes);
                // Text when it is UTF-8 (what browsers' SIP stacks expect), else binary.
                let frame = match tungstenite::Utf8Bytes::try_from(bytes.clone()) {
                    Ok(text) => Ws::Text(text),
                    Err(_) => Ws::Binary(bytes),
                };
                if let Err(e) = ws.send(frame).await {
                    tracing::debug!(remote = %flow.remote, error = %e, "WebSocket write error");
                    break;
                }
                deadline = tokio::time::Instant::now() + idle;
            }
            _ = tokio::time::sleep_until(deadline) => {
                inner.counters.idle();
                tracing::debug!(remote = %flow.remote, transport = %flow.transport, "idle connection closed");
                break;
            }
            _ = shutdown.changed() => break,
        }
    }
    let _ = ws.close(None).await;
}
