//! `switchboard serve`: the server process. It binds the configured transports, runs
//! every request through the RFC 3261 transaction layer (except REGISTERs without
//! credentials, challenged statelessly as §8.2.7 advises), and answers: REGISTER by the
//! registrar; requests for users and dialogs by the stateful proxy (`proxy`); OPTIONS
//! and whatever is addressed to the server itself as a UAS (`service`).
//!
//! One task owns all protocol state (transaction table, registrar, proxy contexts):
//! messages and timers
//! are handled one at a time, in order, with no locks. The transports run beside it.

use crate::config::Config;
use crate::myself::{self, Myself};
use crate::proxy::{self, Handled, Interface, Proxy, ProxySettings};
use crate::registrar::{RegisterOutcome, Registrar, RegistrarSettings};
use crate::service::{self, Answer};
use crate::tls_setup;
use bytes::Bytes;
use sip_core::ids::IdGenerator;
use sip_core::transaction::{Event, TimerConfig, TransactionKey, TransactionLayer};
use sip_core::{Flow, Message, Method};
use sip_net::{Endpoint, EndpointConfig, Incoming, ListenSpec, Target};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::{Backend, Durability, LocationStore, UserStore};
use tokio::sync::mpsc;

type BoxedRegistrar = Registrar<Box<dyn LocationStore>, Box<dyn UserStore>>;

/// Runs the server until SIGINT or SIGTERM.
pub fn run(config_path: Option<&Path>) -> ExitCode {
    let config = match config_path {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    init_logging("info");
    // No transparent huge pages: the first touch of a fresh 2 MiB page zeroes all of it
    // at once (and on a virtual machine has the host back it), a pause of milliseconds on
    // the thread that reads the sockets, while memory grows with the transactions. The
    // `transaction_pause` bench of sip-core measured 5-8 ms pauses with them and 1 ms
    // without, for the same CPU per REGISTER; Redis turns them off for the same reason.
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::debug!("transparent huge pages stay on: {e}");
    }
    // One thread: all protocol state lives in one task anyway, and at the rates a SIP
    // server sees, handing each datagram between threads costs more than it buys.
    let Some(runtime) = single_thread_runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A tokio runtime on the calling thread (for `serve` and `phone`); `None`, said on
/// standard error, if it cannot be built.
pub(crate) fn single_thread_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            None
        }
    }
}

/// Logs to standard error, filtered by RUST_LOG, else by `default_filter`.
pub(crate) fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn serve(config: Config) -> Result<(), String> {
    let specs: Vec<ListenSpec> = config
        .sip
        .listen
        .iter()
        .map(|s| s.parse().map_err(|e| format!("listen \"{s}\": {e}")))
        .collect::<Result<_, _>>()?;
    let mut registrar = open_registrar(&config)?;
    // SQLite commits run on a thread of their own: the protocol loop stages a batch,
    // hands it over and goes on; the outcome comes back on `committed`.
    let (committed_tx, committed_rx) = mpsc::channel(64);
    let writer = match registrar.detach_location_backend() {
        Some(backend) => Some(
            store::BackgroundWriter::spawn(backend, move |c| {
                let _ = committed_tx.blocking_send(c);
            })
            .map_err(|e| format!("cannot start the storage writer: {e}"))?,
        ),
        None => None,
    };
    let mut endpoint_config = EndpointConfig::new(specs.clone());
    endpoint_config.limits.max_message = config.limits.max_message_bytes;
    endpoint_config.limits.max_connections = config.limits.max_connections;
    endpoint_config.limits.max_connections_per_ip = config.limits.max_connections_per_ip;
    endpoint_config.limits.idle_timeout = Duration::from_secs(config.limits.idle_timeout_secs);
    if config.proxy.forward_foreign_domains {
        // RFC 3263 for other domains; local users' contacts are addresses.
        match sip_net::SipResolver::from_system_conf() {
            Ok(r) => endpoint_config.resolver = Some(r),
            Err(e) => tracing::warn!("no DNS resolver, foreign domains unreachable: {e}"),
        }
    }
    if specs.iter().any(|s| s.transport.is_secure()) {
        endpoint_config.tls_server = Some(tls_config(&config, &specs)?);
    }
    let (endpoint, incoming) = Endpoint::bind(endpoint_config)
        .await
        .map_err(|e| format!("cannot listen: {e}"))?;
    let bound: Vec<String> = endpoint
        .local_addrs()
        .iter()
        .map(|s| s.to_string())
        .collect();
    tracing::info!(
        listen = %bound.join(", "),
        domain = %config.sip.domain,
        database = %config.storage.database,
        "switchboard serve is ready"
    );
    // Who we are: the domain, its aliases and every address we listen on (all of the
    // host's for a wildcard listener), for the registrar and the proxy alike.
    let listeners: Vec<(sip_core::Transport, std::net::SocketAddr)> = endpoint
        .local_addrs()
        .iter()
        .map(|s| (s.transport, s.addr))
        .collect();
    let host_addrs = if listeners.iter().any(|(_, a)| a.ip().is_unspecified()) {
        myself::host_addresses()
    } else {
        Vec::new()
    };
    let me = Myself::new(
        &config.sip.domain,
        &config.registrar.aliases,
        &listeners,
        &host_addrs,
    );
    let registrar = registrar.with_myself(me.clone());
    let proxy = open_proxy(&config, &endpoint, me)?;
    let timers = TimerConfig {
        timer_c: Some(Duration::from_secs(config.proxy.timer_c_secs)),
        ..TimerConfig::default()
    };
    let (resolved_tx, resolved_rx) = mpsc::channel(1024);
    let mut core = Core {
        resolved_tx,
        endpoint: endpoint.clone(),
        transactions: TransactionLayer::new(timers),
        location: registrar.reader(),
        registrar,
        proxy,
        server_name: config.sip.server_name.clone(),
        ids: id_generator()?,
        awaiting_commit: Vec::new(),
        in_commit: Vec::new(),
        commit_due: None,
        writer,
        committed: committed_rx,
    };
    let stop = stop_signal()?;
    // The core waits on sends (a TCP or TLS connect to a phone that does not answer may
    // take `connect_timeout`, 5 s): a signal watched only inside its loop went unseen
    // that long, and a restart meanwhile found the port still taken. So the signal is
    // watched here, beside the core, which is left wherever it waits.
    let result = tokio::select! {
        result = core.run(incoming, resolved_rx) => result,
        name = stop => {
            tracing::info!("{name}: stopping");
            Ok(())
        }
    };
    // REGISTERs of the last batch whose bindings are staged are stored and answered, for
    // as long as `STOP_GRACE` allows (a phone left unanswered sends its REGISTER again).
    if tokio::time::timeout(STOP_GRACE, core.commit_now())
        .await
        .is_err()
    {
        tracing::warn!("stopped before the last responses were sent");
    }
    endpoint.shutdown();
    result
}

/// How long stopping may wait for the last batch's responses to be sent.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// A future that ends with the name of the first of SIGINT (Ctrl-C) or SIGTERM to arrive.
/// Built before it is awaited, so that a signal from then on is not missed.
fn stop_signal() -> Result<impl std::future::Future<Output = &'static str>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "interrupted",
        }
    })
}

fn open_registrar(config: &Config) -> Result<BoxedRegistrar, String> {
    let backend =
        Backend::parse(&config.storage.database).map_err(|e| format!("storage.database: {e}"))?;
    let location = backend
        .open_server_location(Durability::Process, Duration::from_secs(1))
        .map_err(|e| format!("cannot open the location store: {e}"))?;
    let users = backend
        .open_users()
        .map_err(|e| format!("cannot open the user store: {e}"))?;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness for nonces: {e}"))?;
    Registrar::new(
        RegistrarSettings::from_config(config),
        location,
        users,
        &key,
        unix_now(),
    )
    .map_err(|e| format!("registrar: {e}"))
}

/// A source of tags and branches keyed by 128 fresh random bits (RFC 3261 §19.3).
fn id_generator() -> Result<IdGenerator, String> {
    let mut key = [0u8; 16];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness for tags: {e}"))?;
    IdGenerator::new(&key).map_err(|e| e.to_string())
}

/// The proxy, advertising the addresses the endpoint is bound to. It authenticates
/// with the registrar's authenticator (lent in each `proxy::Env`).
fn open_proxy(config: &Config, endpoint: &Endpoint, myself: Myself) -> Result<Proxy, String> {
    let interfaces = endpoint
        .local_addrs()
        .iter()
        .map(|s| Interface::new(s.transport, s.addr, &config.sip.domain))
        .collect();
    let settings = ProxySettings {
        myself,
        server_name: config.sip.server_name.clone(),
        require_auth: config.proxy.require_auth,
        trusted: config
            .proxy
            .trusted()
            .map_err(|e| format!("trusted_networks: {e}"))?,
        forward_foreign: config.proxy.forward_foreign_domains,
        max_recursions: config.proxy.max_recursions,
    };
    Ok(Proxy::new(settings, interfaces, id_generator()?))
}

/// The certificate of the `tls:` and `wss:` listeners: the configured one, else the
/// self-signed one kept beside the database (see `tls_setup`).
fn tls_config(config: &Config, specs: &[ListenSpec]) -> Result<Arc<rustls::ServerConfig>, String> {
    if let (Some(cert), Some(key)) = (&config.tls.certificate, &config.tls.private_key) {
        return sip_net::tls::server_config_from_pem_files(cert, key)
            .map_err(|e| format!("tls: {e}"));
    }
    let listen_ips: Vec<std::net::IpAddr> = specs.iter().map(|s| s.addr.ip()).collect();
    let host_addrs = if listen_ips.iter().any(std::net::IpAddr::is_unspecified) {
        tls_setup::host_addresses()
    } else {
        Vec::new()
    };
    let names = tls_setup::certificate_names(
        &config.sip.domain,
        &config.registrar.aliases,
        &listen_ips,
        &host_addrs,
    );
    let folder = tls_setup::folder_for(&config.storage.database);
    let files = tls_setup::load_or_make(&folder, &names)
        .map_err(|e| format!("tls: no [tls] certificate configured, and {e}"))?;
    let cert = files.cert_path.display();
    match &files.made_because {
        Some(why) => tracing::info!(
            "no [tls] certificate configured: made a self-signed one ({why}), {cert}, for {}",
            names.join(", ")
        ),
        None => tracing::info!(
            "no [tls] certificate configured: using the self-signed {cert}, for {}",
            names.join(", ")
        ),
    }
    tracing::info!(
        "phones must trust {cert} to reach us over TLS (switchboard phone --ca {cert}), \
         or set [tls] certificate and private_key"
    );
    Ok(files.server_config)
}

/// The targets found for a proxied request's Request-URI (empty when none).
type Resolved = (
    TransactionKey,
    Vec<(sip_core::Transport, std::net::SocketAddr)>,
);

/// All protocol state, owned by one task.
struct Core {
    endpoint: Endpoint,
    transactions: TransactionLayer,
    registrar: BoxedRegistrar,
    /// The registrar's bindings, read by the proxy.
    location: store::LocationReader,
    proxy: Proxy,
    /// Where RFC 3263 lookups started for the proxy report back.
    resolved_tx: mpsc::Sender<Resolved>,
    server_name: String,
    /// The To tags of the responses `service` makes.
    ids: IdGenerator,
    /// REGISTERs answered 200 on staged bindings: their responses go out once the
    /// batch holding their changes is stored (group commit, see `drain`).
    awaiting_commit: Vec<Waiting>,
    /// REGISTERs whose 200s wait for the batch the writer thread is storing.
    in_commit: Vec<Waiting>,
    /// When the staged REGISTERs are handed to the writer at the latest.
    commit_due: Option<Instant>,
    /// The thread that stores batches (`None`: the registrar commits itself).
    writer: Option<store::BackgroundWriter>,
    /// What the writer thread stored, or failed to.
    committed: mpsc::Receiver<store::Committed>,
}

/// A REGISTER whose 200 waits for its bindings to be stored.
type Waiting = (TransactionKey, Message, RegisterOutcome);

/// The token of a send that belongs to no transaction (see `Core::send_nowait`).
const NO_TRANSACTION: u64 = u64::MAX;

/// Messages taken from the transports at once before their events are handled.
const MAX_BATCH: usize = 64;
/// Group commit: how long a REGISTER's changes may wait for others to share their
/// SQLite transaction. Each commit costs tens of microseconds whatever it holds, so at
/// a few thousand REGISTERs a second sharing it halves the server's CPU per
/// registration, for at most this much more time before the 200.
const COMMIT_DELAY: Duration = Duration::from_millis(1);
/// A batch this large is committed without waiting for `COMMIT_DELAY`.
const MAX_COMMIT: usize = 256;

impl Core {
    /// Handles messages and timers until the transport layer stops; a signal to stop is
    /// watched by the caller, which may drop this future at any of its waits.
    async fn run(
        &mut self,
        mut incoming: mpsc::Receiver<Incoming>,
        mut resolved: mpsc::Receiver<Resolved>,
    ) -> Result<(), String> {
        let mut sweep = tokio::time::interval(Duration::from_secs(15));
        let mut proxy_log = proxy::StatsLog::new(Duration::from_secs(60));
        loop {
            let next_timer = self.transactions.poll_timeout();
            let sleep = async move {
                match next_timer {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let commit_due = self.commit_due;
            let commit = async move {
                match commit_due {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = incoming.recv() => match msg {
                    Some(m) => {
                        self.handle_incoming(m).await;
                        // Whatever else has arrived joins this batch, so that its
                        // REGISTERs share one commit (see `drain`).
                        for _ in 1..MAX_BATCH {
                            match incoming.try_recv() {
                                Ok(m) => self.handle_incoming(m).await,
                                Err(_) => break,
                            }
                        }
                    }
                    None => return Err("the transport layer stopped".into()),
                },
                () = sleep => self.transactions.handle_timeout(Instant::now()),
                // `drain` below commits the staged REGISTERs.
                () = commit => {}
                Some(committed) = self.committed.recv() => self.finish_commit(committed),
                Some((key, targets)) = resolved.recv() => {
                    self.proxy.on_resolved(Instant::now(), &mut self.transactions, key, &targets);
                }
                _ = sweep.tick() => {
                    match self.registrar.sweep(unix_now()) {
                        Ok(n) if n > 0 => tracing::debug!(removed = n, "expired bindings swept"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!("sweeping expired bindings failed: {e}"),
                    }
                    let stats = self.registrar.stats();
                    tracing::debug!(?stats, bindings = self.registrar.reader().len(), "registrar");
                    let p = self.proxy.stats();
                    tracing::debug!(
                        calls_routed = p.calls_routed,
                        forwarded = p.requests_forwarded,
                        responses = ?p.responses,
                        challenges = p.challenges,
                        contexts = p.contexts,
                        transactions = self.transactions.len(),
                        "proxy"
                    );
                    if let Some(line) = proxy_log.due(Instant::now(), &p, self.transactions.len()) {
                        tracing::info!("proxy: {line}");
                    }
                }
            }
            self.drain().await;
        }
    }

    async fn handle_incoming(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Invalid {
                bytes, error, flow, ..
            } => {
                tracing::debug!(remote = %flow.remote, "unparseable message: {error}");
                // An ACK is never answered (RFC 3261 §17.2.1), however broken.
                if bytes.starts_with(b"ACK ") {
                    return;
                }
                if let Answer::Respond(resp) = service::answer_invalid(&bytes, &error) {
                    self.send(Target::Flow(flow), resp).await;
                }
            }
            Incoming::Message { msg, flow, .. } => {
                if self.registrar.is_banned(flow.remote.ip(), unix_now()) {
                    // Refused for a while after too many failed authentications; the
                    // registrar logged the ban and counts what it refuses.
                    return;
                }
                if msg.is_request() {
                    // A request that fails validation is answered statelessly: it may lack
                    // what a transaction is keyed by.
                    if let Err(e) = msg.validate() {
                        tracing::debug!(remote = %flow.remote, "invalid request: {e}");
                        if msg.method() == Some(&Method::Ack) {
                            return;
                        }
                        if let Answer::Respond(resp) = service::answer_invalid(msg.as_bytes(), &e) {
                            let target = sip_core::response_target(&flow, &msg);
                            self.send(Target::Flow(target), resp).await;
                        }
                        return;
                    }
                    let target = sip_core::response_target(&flow, &msg);
                    if let Some(resp) = service::refuse_unmatchable(&msg) {
                        self.send(Target::Flow(target), resp).await;
                        return;
                    }
                    // §16.10: a CANCEL that matches no INVITE of ours is forwarded
                    // statelessly, without a transaction of its own.
                    if msg.method() == Some(&Method::Cancel)
                        && self.transactions.find_cancelled(&msg).is_none()
                    {
                        let (users, auth) = self.registrar.users_and_auth();
                        let env = proxy::Env {
                            now: Instant::now(),
                            unix: unix_now(),
                            users,
                            auth,
                            location: &self.location,
                        };
                        self.proxy
                            .on_stray_cancel(&env, &mut self.transactions, &msg, target);
                        return;
                    }
                    // A REGISTER without credentials is challenged without a transaction
                    // (RFC 3261 §8.2.7): a flood of them leaves no state behind.
                    if let Some(outcome) = self.registrar.answer_statelessly(
                        unix_now(),
                        &msg,
                        flow.remote,
                        flow.transport,
                    ) {
                        tracing::debug!(status = outcome.status, source = %flow.remote, "REGISTER answered statelessly");
                        if let Some(bytes) = outcome.response {
                            self.send(Target::Flow(target), bytes).await;
                        }
                        return;
                    }
                    if let Err(e) = self
                        .transactions
                        .handle_message(Instant::now(), msg, target)
                    {
                        tracing::debug!(remote = %flow.remote, "request not taken by the transaction layer: {e}");
                    }
                } else if let Err(e) = self.transactions.handle_message(Instant::now(), msg, flow) {
                    tracing::debug!(remote = %flow.remote, "response dropped: {e}");
                }
            }
            Incoming::SendFailed { token, error, .. } if token != NO_TRANSACTION => {
                tracing::debug!("send failed: {error}");
                let key = TransactionKey::from_token(token);
                let _ = self
                    .transactions
                    .handle_transport_error(Instant::now(), key);
            }
            _ => {}
        }
    }

    /// Drains the transaction layer in the order its docs give: what is to be sent
    /// first (a retransmission the layer makes on its own leaves before anything reacts),
    /// then the events (which may produce responses), then the commit of the REGISTERs
    /// among them and their 200s; repeated until all are empty.
    async fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.transactions.poll_transmit() {
                progressed = true;
                let token = t.key.map_or(NO_TRANSACTION, TransactionKey::to_token);
                let sent = self.send_nowait(t.flow, t.bytes, token);
                // The transaction's user hears of it (the proxy tries another address
                // or counts the branch as 503); an ended transaction is no matter. A
                // send that needs a connection reports a failure later, as
                // `Incoming::SendFailed`.
                if !sent && let Some(key) = t.key {
                    let _ = self
                        .transactions
                        .handle_transport_error(Instant::now(), key);
                }
            }
            while let Some(event) = self.transactions.poll_event() {
                progressed = true;
                self.handle_event(event);
            }
            if !self.awaiting_commit.is_empty() || self.registrar.has_staged() {
                let now = Instant::now();
                let due = *self.commit_due.get_or_insert(now + COMMIT_DELAY);
                if (now >= due || self.awaiting_commit.len() >= MAX_COMMIT)
                    && self.commit_registrations()
                {
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// Hands the proxy what is its: every request but REGISTER and those addressed to
    /// us, and the client-side events. Returns the event when it is not the proxy's.
    fn proxy_event(&mut self, event: Event) -> Option<Event> {
        let now = Instant::now();
        let txl = &mut self.transactions;
        match event {
            Event::Request { key, request, flow }
                if request.method() != Some(&Method::Register) =>
            {
                let (users, auth) = self.registrar.users_and_auth();
                let mut env = proxy::Env {
                    now,
                    unix: unix_now(),
                    users,
                    auth,
                    location: &self.location,
                };
                match self.proxy.on_request(&mut env, txl, key, &request, flow) {
                    Handled::Yes => None,
                    Handled::ForUs => Some(Event::Request { key, request, flow }),
                    Handled::Resolve(uri) => {
                        let (endpoint, done) = (self.endpoint.clone(), self.resolved_tx.clone());
                        tokio::spawn(async move {
                            let targets = match endpoint.locate(&uri).await {
                                Ok(t) => t.into_iter().map(|t| (t.transport, t.addr)).collect(),
                                Err(e) => {
                                    tracing::debug!(%uri, "cannot resolve: {e}");
                                    Vec::new()
                                }
                            };
                            let _ = done.send((key, targets)).await;
                        });
                        None
                    }
                }
            }
            Event::Ack { request, flow, .. } => {
                let (users, auth) = self.registrar.users_and_auth();
                let env = proxy::Env {
                    now,
                    unix: unix_now(),
                    users,
                    auth,
                    location: &self.location,
                };
                self.proxy.on_ack(&env, txl, &request, flow);
                None
            }
            Event::Response { key, response } => {
                self.proxy.on_response(now, txl, key, response);
                None
            }
            Event::Timeout { key, timer } => {
                self.proxy.on_timeout(now, txl, key, timer);
                None
            }
            Event::TransportError { key } => {
                self.proxy.on_transport_error(now, txl, key);
                None
            }
            Event::Terminated { key } => {
                self.proxy.on_terminated(now, txl, key);
                None
            }
            Event::StrayResponse { response, .. } => {
                self.proxy.on_stray_response(txl, &response);
                None
            }
            other => Some(other),
        }
    }

    fn handle_event(&mut self, event: Event) {
        let Some(event) = self.proxy_event(event) else {
            return;
        };
        let Event::Request { key, request, flow } = event else {
            return;
        };
        let response = if request.method() == Some(&Method::Register) {
            // Changes are staged; `commit_registrations` stores the batch's at once.
            let outcome =
                self.registrar
                    .stage_register(unix_now(), &request, flow.remote, flow.transport);
            tracing::debug!(
                status = outcome.status,
                aor = outcome.aor.as_deref().unwrap_or("-"),
                source = %flow.remote,
                "REGISTER"
            );
            if outcome.awaits_commit {
                self.awaiting_commit.push((key, request, outcome));
                return;
            }
            outcome.response
        } else {
            let tag = self.ids.tag();
            match service::answer(&request, &self.server_name, &tag) {
                Answer::Respond(bytes) => Some(bytes),
                Answer::Nothing => None,
            }
        };
        if let Some(bytes) = response {
            self.respond(key, bytes);
        }
    }

    /// Group commit: the changes of every REGISTER staged so far go to the writer
    /// thread as one batch (one SQLite transaction: in WAL mode with synchronous=NORMAL,
    /// a write to the log without fsync), and their 200s wait for it
    /// ([`Core::finish_commit`]). One batch is out at a time; while it is, the next
    /// gathers. A 200 never leaves before its bindings are stored. Whether anything
    /// could be sent.
    fn commit_registrations(&mut self) -> bool {
        let Some(writer) = &self.writer else {
            return self.commit_here();
        };
        if self.registrar.commit_in_flight() {
            if !self.registrar.has_staged() {
                // Nothing new staged: what they wait for is the batch already out.
                self.in_commit.append(&mut self.awaiting_commit);
                self.commit_due = None;
            }
            return false;
        }
        self.commit_due = None;
        match self.registrar.begin_commit() {
            Some(batch) => {
                let id = batch.id;
                self.in_commit.append(&mut self.awaiting_commit);
                if let Err(e) = writer.submit(batch) {
                    self.finish_commit(store::Committed { id, result: Err(e) });
                    return true;
                }
                false
            }
            // Nothing staged and nothing out: what they saw is stored already.
            None => {
                let ready = std::mem::take(&mut self.awaiting_commit);
                let any = !ready.is_empty();
                for (key, _, outcome) in ready {
                    if let Some(bytes) = outcome.response {
                        self.respond(key, bytes);
                    }
                }
                any
            }
        }
    }

    /// The writer thread's report on the batch that was out: its REGISTERs get their
    /// 200s, or 500s if it failed (and so do those staged since, built on it).
    fn finish_commit(&mut self, committed: store::Committed) {
        let stored = self.registrar.end_commit(committed).is_ok();
        let mut done = std::mem::take(&mut self.in_commit);
        if !stored {
            done.append(&mut self.awaiting_commit);
        }
        for (key, request, outcome) in done {
            let outcome = if stored {
                outcome
            } else {
                self.registrar.failed_commit(&request, outcome)
            };
            if let Some(bytes) = outcome.response {
                self.respond(key, bytes);
            }
        }
        if !self.awaiting_commit.is_empty() || self.registrar.has_staged() {
            // The next batch gathered meanwhile: out now.
            self.commit_due = Some(Instant::now());
        }
    }

    /// Group commit on this task, for a registrar that stores its own changes.
    fn commit_here(&mut self) -> bool {
        self.commit_due = None;
        if self.awaiting_commit.is_empty() {
            return false;
        }
        let stored = self.registrar.commit().is_ok();
        let mut awaiting = std::mem::take(&mut self.awaiting_commit);
        for (key, request, outcome) in awaiting.drain(..) {
            let outcome = if stored {
                outcome
            } else {
                self.registrar.failed_commit(&request, outcome)
            };
            if let Some(bytes) = outcome.response {
                self.respond(key, bytes);
            }
        }
        // Kept for its capacity.
        self.awaiting_commit = awaiting;
        true
    }

    /// Stores what is staged and sends what that releases: for stopping. Waits for the
    /// writer thread (the caller bounds how long).
    async fn commit_now(&mut self) {
        loop {
            self.commit_due = Some(Instant::now());
            self.drain().await;
            if !self.registrar.commit_in_flight() {
                if self.awaiting_commit.is_empty() && !self.registrar.has_staged() {
                    return;
                }
                continue;
            }
            match self.committed.recv().await {
                Some(c) => self.finish_commit(c),
                None => return,
            }
        }
    }

    /// Hands a response we built to its transaction as it is: its status is read from
    /// the start line we wrote, so the bytes are not parsed a second time.
    fn respond(&mut self, key: TransactionKey, bytes: Bytes) {
        let Some(status) = sip_core::builder::status_of_built(&bytes) else {
            tracing::error!("we built a response without a status line");
            return;
        };
        if let Err(e) = self
            .transactions
            .send_built_response(Instant::now(), key, status, bytes)
        {
            tracing::warn!("response not sent: {e}");
        }
    }

    /// Sends a message that belongs to no transaction (a stateless answer); `false`
    /// when it failed (logged here).
    async fn send(&self, target: Target, bytes: Bytes) -> bool {
        match target {
            Target::Flow(flow) => self.send_nowait(flow, bytes, NO_TRANSACTION),
            other => match self.endpoint.send(other, bytes).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::debug!("send failed: {e}");
                    false
                }
            },
        }
    }

    /// Sends without waiting: a connection that must be opened first is opened beside
    /// this task (a phone whose TCP contact never answers holds up nobody else), and a
    /// failure there comes back as `Incoming::SendFailed` with `token`. `false` when it
    /// failed at once (logged here).
    fn send_nowait(&self, flow: Flow, bytes: Bytes, token: u64) -> bool {
        match self.endpoint.send_nowait(flow, bytes, token) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!("send failed: {e}");
                false
            }
        }
    }
}
