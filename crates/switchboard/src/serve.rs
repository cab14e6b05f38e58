//! `switchboard serve`: the server process, as wiring. It reads the configuration,
//! opens the stores, starts the storage writer thread, binds the configured transports,
//! and runs the protocol core (`router::Router`, sans-IO) on one task with
//! `sip_net::Driver` until SIGINT or SIGTERM; then the last staged REGISTERs are stored
//! and answered within a grace period.

use crate::b2bua::{B2bua, B2buaSettings};
use crate::config::Config;
use crate::myself::{self, Myself};
use crate::proxy::{CallTracker, CallTrackerSettings, Interface, Proxy, ProxySettings, WallClock};
use crate::registrar::{Registrar, RegistrarSettings};
use crate::router::{BoxedRegistrar, Commits, Router, RouterInput};
use crate::tls_setup;
use sip_core::ids::IdGenerator;
use sip_core::transaction::TimerConfig;
use sip_net::{Driver, Ended, Endpoint, EndpointConfig, ListenSpec, Now};
use sip_ua::LocalAddrs;
use sip_ua::relay::RelaySettings;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::{Backend, Durability};
use tokio::sync::mpsc;

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
    // The dial plan is checked before anything listens: a plan with faults is named
    // with all of them, and the server does not start on a plan it cannot use.
    let plan = match &config.pbx.dial_plan {
        Some(path) => match pbx::Plan::load(path) {
            Ok(p) => {
                tracing::info!("dial plan {}: {} rules", path.display(), p.len());
                p
            }
            Err(errors) => {
                eprintln!("error: the dial plan cannot be used:\n{errors}");
                return ExitCode::from(2);
            }
        },
        None => pbx::Plan::builtin(),
    };
    let plan = crate::dial_plan::DialPlan::new(plan);
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
    match runtime.block_on(serve(config, plan)) {
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

/// Logs to standard error, filtered by RUST_LOG, else by `default_filter`. Under
/// systemd (standard error going to the journal, `JOURNAL_STREAM` set) each line goes
/// without a time of its own, which the journal adds, and starts with its level as a
/// syslog priority (`<4>` for a warning), which the journal reads: `journalctl -p
/// warning` then shows the warnings and errors.
pub(crate) fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        let format = tracing_subscriber::fmt::format().without_time();
        let _ = builder
            .with_ansi(false)
            .event_format(JournalPriority(format))
            .try_init();
    } else {
        let _ = builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    }
}

/// A log line format with the level as a syslog priority in front, for the journal.
struct JournalPriority<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn serve(config: Config, plan: crate::dial_plan::DialPlan) -> Result<(), String> {
    // Reloaded on SIGHUP and when the file changes; without a file, SIGHUP is ignored
    // (its default action would stop the server).
    let reloader = match &config.pbx.dial_plan {
        Some(path) => crate::dial_plan::spawn_reloader(path.clone(), plan.clone())?,
        None => crate::dial_plan::ignore_hangup()?,
    };
    let specs: Vec<ListenSpec> = config
        .sip
        .listen
        .iter()
        .map(|s| s.parse().map_err(|e| format!("listen \"{s}\": {e}")))
        .collect::<Result<_, _>>()?;
    let mut registrar = open_registrar(&config)?;
    // SQLite commits run on a thread of their own: the protocol loop stages a batch,
    // hands it over and goes on; the outcome comes back on `committed`.
    // The admin API's requests come on the same channel.
    let (committed_tx, committed_rx) = mpsc::channel(64);
    let admin_tx = committed_tx.clone();
    let location = registrar.reader();
    let writer = match registrar.detach_location_backend() {
        Some(backend) => Some(
            store::BackgroundWriter::spawn(backend, move |c| {
                let _ = committed_tx.blocking_send(RouterInput::Committed(c));
            })
            .map_err(|e| format!("cannot start the storage writer: {e}"))?,
        ),
        None => None,
    };
    let cdr_writer = open_cdr_writer(&config);
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
    // Before "ready": whoever waits for that line may use the API at once.
    let admin_server = crate::admin_ops::start(&config, location, admin_tx);
    tracing::info!(
        listen = %bound.join(", "),
        domain = %config.sip.domain,
        // Absolute, as `user` and `location` name it: the file they must be pointed at.
        database = %match Backend::parse(&config.storage.database) {
            Ok(Backend::Sqlite(file)) => std::path::absolute(&file).unwrap_or(file).display().to_string(),
            _ => config.storage.database.clone(),
        },
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
    let mut proxy = open_proxy(&config, &endpoint, me)?.with_dial_plan(plan);
    if let Some(writer) = &cdr_writer {
        proxy = proxy.with_call_records(CallTracker::new(
            CallTrackerSettings {
                max_calls: config.cdr.max_calls,
                max_call: Duration::from_secs(config.cdr.max_call_secs),
            },
            WallClock::new(Instant::now(), unix_now_ms()),
            Box::new(writer.sender()),
        ));
    }
    let timers = TimerConfig {
        timer_c: Some(Duration::from_secs(config.proxy.timer_c_secs)),
        ..TimerConfig::default()
    };
    let commits = if writer.is_some() {
        Commits::Background
    } else {
        Commits::InPlace
    };
    let b2bua = open_b2bua(&config, &listeners, &host_addrs, timers)?;
    let mut router = Router::new(
        Now::from_clocks(),
        timers,
        registrar,
        proxy,
        config.sip.server_name.clone(),
        id_generator()?,
        commits,
    )
    .with_b2bua(b2bua);
    if let Some(writer) = &cdr_writer {
        router = router
            .with_pbx_records(crate::pbx_records::PbxRecorder::new(
                WallClock::new(Instant::now(), unix_now_ms()),
                Box::new(writer.sender()),
            ))
            .with_cdr_counters(writer.sender());
    }
    let stop = stop_signal()?;
    // Each batch goes to the writer thread; one it cannot take is reported failed at
    // once (its REGISTERs are answered 500).
    let submit = move |batch: store::Batch| {
        let id = batch.id;
        let writer = writer.as_ref()?;
        writer
            .submit(batch)
            .err()
            .map(|e| RouterInput::Committed(store::Committed { id, result: Err(e) }))
    };
    let mut driver = Driver::new(router, endpoint.clone(), incoming, committed_rx, submit);
    // Sends never wait (a connection is opened beside the loop), so the signal is
    // watched inside it.
    let result = match driver.run(stop).await {
        Ok(Ended::Stopped(name)) => {
            tracing::info!("{name}: stopping");
            Ok(())
        }
        // The router is never done of itself.
        Ok(Ended::Done) => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    // The HTTP port is freed at once; the SIP side settles below.
    drop(admin_server);
    // REGISTERs of the last batch whose bindings are staged are stored and answered, for
    // as long as `STOP_GRACE` allows (a phone left unanswered sends its REGISTER again).
    if !driver.settle(STOP_GRACE).await {
        tracing::warn!("stopped before the last responses were sent");
    }
    endpoint.shutdown();
    reloader.abort();
    // The records of the calls closed on the way out are stored before the exit.
    drop(driver);
    if let Some(writer) = cdr_writer {
        let (written, dropped) = (writer.written(), writer.dropped());
        drop(writer);
        if dropped > 0 {
            tracing::warn!("call records: {written} stored, {dropped} lost while running");
        }
    }
    result
}

/// The writer thread of the call records, unless `[cdr] enabled = false`. Records that
/// cannot be opened are logged and the server runs without them: calls matter more.
fn open_cdr_writer(config: &Config) -> Option<store::CdrWriter> {
    if !config.cdr.enabled {
        return None;
    }
    let store = match Backend::parse(&config.storage.database).and_then(|b| b.open_cdrs()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("call records are off: {e}");
            return None;
        }
    };
    let keep = (config.cdr.keep_days > 0)
        .then(|| Duration::from_secs(u64::from(config.cdr.keep_days) * 86_400));
    let settings = store::CdrWriterSettings {
        keep,
        ..store::CdrWriterSettings::default()
    };
    let mut log = TroubleLog::default();
    match store::CdrWriter::spawn(store, settings, unix_now_ms, move |t| log.report(&t)) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!("call records are off: cannot start their writer thread: {e}");
            None
        }
    }
}

/// Logs the call records' troubles (a full disk fails every batch) once a minute at
/// most, with the count of those not logged.
#[derive(Default)]
struct TroubleLog {
    last: Option<Instant>,
    unsaid: u64,
}

impl TroubleLog {
    fn report(&mut self, trouble: &store::CdrTrouble) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(60))
        {
            self.unsaid += 1;
            return;
        }
        self.last = Some(now);
        match std::mem::take(&mut self.unsaid) {
            0 => tracing::error!("call records: {trouble}"),
            n => {
                tracing::error!("call records: {trouble} ({n} more problems since the last report)")
            }
        }
    }
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

/// The B2BUA for the dial plan's PBX calls, signalling from our listening addresses
/// (for a wildcard listener, the host's first address that is not a loopback one).
fn open_b2bua(
    config: &Config,
    listeners: &[(sip_core::Transport, std::net::SocketAddr)],
    host_addrs: &[std::net::IpAddr],
    timers: TimerConfig,
) -> Result<B2bua, String> {
    let concrete = |addr: std::net::SocketAddr| {
        if !addr.ip().is_unspecified() {
            return addr;
        }
        let ip = host_addrs
            .iter()
            .find(|ip| !ip.is_loopback() && ip.is_ipv4() == addr.is_ipv4())
            .copied()
            .unwrap_or(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        std::net::SocketAddr::new(ip, addr.port())
    };
    let listener = |t: sip_core::Transport| {
        listeners
            .iter()
            .find(|(lt, _)| *lt == t)
            .map(|(_, a)| concrete(*a))
    };
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness for the B2BUA: {e}"))?;
    let pbx = &config.pbx;
    let settings = B2buaSettings {
        ring_timeout: Duration::from_secs(pbx.ring_timeout_secs),
        relay: RelaySettings {
            local: LocalAddrs {
                udp: listener(sip_core::Transport::Udp),
                tcp: listener(sip_core::Transport::Tcp),
            },
            listeners: [
                sip_core::Transport::Tls,
                sip_core::Transport::Ws,
                sip_core::Transport::Wss,
            ]
            .into_iter()
            .filter_map(|t| Some((t, listener(t)?)))
            .collect(),
            contact_user: "pbx".into(),
            user_agent: config.sip.server_name.clone(),
            session_expires: (pbx.session_expires > 0).then_some(pbx.session_expires),
            timers,
        },
    };
    Ok(B2bua::new(settings, seed))
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
        myself::host_addresses()
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
