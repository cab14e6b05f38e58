//! `switchboard serve`: the server process. It binds the configured transports, runs
//! every request through the RFC 3261 transaction layer, and answers: REGISTER by the
//! registrar, OPTIONS with our capabilities, anything else with the status RFC 3261
//! prescribes for a method we do not offer.
//!
//! One task owns all protocol state (transaction table, registrar): messages and timers
//! are handled one at a time, in order, with no locks. The transports run beside it.

use crate::config::Config;
use crate::registrar::{Registrar, RegistrarSettings};
use crate::service::{self, Answer};
use bytes::Bytes;
use sip_core::transaction::{Event, TimerConfig, TransactionLayer};
use sip_core::{Message, Method};
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
    // One thread: all protocol state lives in one task anyway, and at the rates a SIP
    // server sees, handing each datagram between threads costs more than it buys.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
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
    let registrar = open_registrar(&config)?;
    let mut endpoint_config = EndpointConfig::new(specs.clone());
    endpoint_config.limits.max_message = config.limits.max_message_bytes;
    endpoint_config.limits.max_connections = config.limits.max_connections;
    endpoint_config.limits.max_connections_per_ip = config.limits.max_connections_per_ip;
    endpoint_config.limits.idle_timeout = Duration::from_secs(config.limits.idle_timeout_secs);
    if specs.iter().any(|s| s.transport.is_secure()) {
        endpoint_config.tls_server = Some(tls_config(&config)?);
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
    let core = Core {
        endpoint: endpoint.clone(),
        transactions: TransactionLayer::new(TimerConfig::default()),
        registrar,
        server_name: config.sip.server_name.clone(),
        epoch: Instant::now(),
        tag_counter: 0,
    };
    let result = core.run(incoming).await;
    endpoint.shutdown();
    result
}

fn open_registrar(config: &Config) -> Result<BoxedRegistrar, String> {
    let backend =
        Backend::parse(&config.storage.database).map_err(|e| format!("storage.database: {e}"))?;
    let location = backend
        .open_location(Durability::Process)
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

fn tls_config(config: &Config) -> Result<Arc<rustls::ServerConfig>, String> {
    match (&config.tls.certificate, &config.tls.private_key) {
        (Some(cert), Some(key)) => {
            sip_net::tls::server_config_from_pem_files(cert, key).map_err(|e| format!("tls: {e}"))
        }
        _ => {
            tracing::warn!(
                "no [tls] certificate configured: using a self-signed one; phones will not trust it"
            );
            sip_net::tls::self_signed(&[config.sip.domain.as_str(), "localhost"])
                .map(|s| s.server_config)
                .map_err(|e| format!("tls: {e}"))
        }
    }
}

/// All protocol state, owned by one task.
struct Core {
    endpoint: Endpoint,
    transactions: TransactionLayer,
    registrar: BoxedRegistrar,
    server_name: String,
    epoch: Instant,
    tag_counter: u64,
}

impl Core {
    async fn run(mut self, mut incoming: mpsc::Receiver<Incoming>) -> Result<(), String> {
        let mut sweep = tokio::time::interval(Duration::from_secs(15));
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
        loop {
            let next_timer = self.transactions.poll_timeout();
            let sleep = async move {
                match next_timer {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = incoming.recv() => match msg {
                    Some(m) => self.handle_incoming(m).await,
                    None => return Err("the transport layer stopped".into()),
                },
                () = sleep => self.transactions.handle_timeout(Instant::now()),
                _ = sweep.tick() => {
                    match self.registrar.sweep(unix_now()) {
                        Ok(n) if n > 0 => tracing::debug!(removed = n, "expired bindings swept"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!("sweeping expired bindings failed: {e}"),
                    }
                    let stats = self.registrar.stats();
                    tracing::debug!(?stats, bindings = self.registrar.reader().len(), "registrar");
                }
                _ = tokio::signal::ctrl_c() => {
                    tracing::info!("interrupted: stopping");
                    return Ok(());
                }
                _ = terminate.recv() => {
                    tracing::info!("SIGTERM: stopping");
                    return Ok(());
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
                        if let Answer::Respond(resp) = service::answer_invalid(msg.as_bytes(), &e) {
                            let target = sip_net::response_target(&flow, &msg);
                            self.send(Target::Flow(target), resp).await;
                        }
                        return;
                    }
                    let target = sip_net::response_target(&flow, &msg);
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
            _ => {}
        }
    }

    /// Drains the transaction layer: events first (they may produce responses), then
    /// what is to be sent; repeated until both are empty, as the layer's docs require.
    async fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(event) = self.transactions.poll_event() {
                progressed = true;
                self.handle_event(event);
            }
            while let Some(t) = self.transactions.poll_transmit() {
                progressed = true;
                self.send(Target::Flow(t.flow), t.bytes).await;
            }
            if !progressed {
                break;
            }
        }
    }

    fn handle_event(&mut self, event: Event) {
        let Event::Request { key, request, flow } = event else {
            return;
        };
        let response = if request.method() == Some(&Method::Register) {
            // A synchronous SQLite commit: in WAL mode with synchronous=NORMAL it is a
            // write to the log without fsync, microseconds, so it runs inline.
            let outcome =
                self.registrar
                    .handle_register(unix_now(), &request, flow.remote, flow.transport);
            tracing::debug!(
                status = outcome.status,
                aor = outcome.aor.as_deref().unwrap_or("-"),
                source = %flow.remote,
                "REGISTER"
            );
            outcome.response
        } else {
            self.tag_counter += 1;
            let tag = format!(
                "sb{:x}{:x}",
                self.epoch.elapsed().as_micros() as u64 & 0xffff_ffff,
                self.tag_counter
            );
            match service::answer(&request, &self.server_name, &tag) {
                Answer::Respond(bytes) => Some(bytes),
                Answer::Nothing => None,
            }
        };
        let Some(bytes) = response else {
            return;
        };
        match Message::parse(bytes) {
            Ok(msg) => {
                if let Err(e) = self.transactions.send_response(Instant::now(), key, msg) {
                    tracing::warn!("response not sent: {e}");
                }
            }
            Err(e) => tracing::error!("we built a response that does not parse: {e}"),
        }
    }

    async fn send(&self, target: Target, bytes: Bytes) {
        if let Err(e) = self.endpoint.send(target, bytes).await {
            tracing::debug!("send failed: {e}");
        }
    }
}
