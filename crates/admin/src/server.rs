//! The HTTP(S) server: a thread with a tokio runtime of its own, an accept loop that
//! bounds connections and their slowness, and a clean stop that frees the port.

use crate::api::{Peer, router};
use crate::ops::Operations;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, oneshot};

/// Connections held at once; beyond, new ones are closed as they come.
const MAX_CONNECTIONS: usize = 1024;
/// How long a client may take to send a request's headers, or to finish the TLS
/// handshake: a client that sends nothing is dropped after this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long stopping waits for requests in progress.
const STOP_GRACE: Duration = Duration::from_millis(300);

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The address to listen on, e.g. 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// Serve HTTPS with this configuration; plain HTTP without one.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Why the server did not start.
#[derive(Debug)]
pub enum StartError {
    /// The address could not be bound (in use, not ours, no permission).
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The thread or its runtime could not be made.
    Runtime(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            StartError::Runtime(e) => write!(f, "cannot start the HTTP thread: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A running admin server; dropping it (or [`AdminServer::stop`]) stops it and frees
/// its port.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    scheme: &'static str,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `config.listen` here (so a busy port is reported to the caller at once)
    /// and serves the API over `ops` on a thread of its own.
    pub fn start(config: AdminConfig, ops: Arc<dyn Operations>) -> Result<AdminServer, StartError> {
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        listener
            .set_nonblocking(true)
            .map_err(StartError::Runtime)?;
        let addr = listener.local_addr().map_err(StartError::Runtime)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(8)
            .thread_name("admin-blocking")
            .build()
            .map_err(StartError::Runtime)?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let tls = config.tls.map(|c| {
            let mut c = (*c).clone();
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(c))
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let app = router(ops, tls.is_some());
        let thread = std::thread::Builder::new()
            .name("admin-http".into())
            .spawn(move || {
                runtime.block_on(accept_loop(listener, app, tls, stop_rx));
                runtime.shutdown_timeout(STOP_GRACE);
            })
            .map_err(StartError::Runtime)?;
        Ok(AdminServer {
            addr,
            scheme,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Stops accepting, drops every connection, and waits for the thread: the port is
    /// free when this returns.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    app: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("admin API: cannot listen: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close.
                tracing::debug!("admin API: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "admin API: too many connections, closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, tls) = (app.clone(), tls.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => serve(TokioIo::new(stream), peer, app).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve(TokioIo::new(s), peer, app).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "admin API: TLS handshake failed: {e}")
                        }
                        Err(_) => tracing::debug!(%peer, "admin API: TLS handshake too slow"),
                    }
                }
            }
        });
    }
}

/// Serves HTTP/1.1 on one connection.
async fn serve<I>(io: TokioIo<I>, peer: SocketAddr, app: axum::Router)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            let mut app = app.clone();
            async move { tower::Service::call(&mut app, req).await }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    if let Err(e) = builder.serve_connection(io, service).await {
        tracing::debug!(%peer, "admin API: connection ended: {e}");
    }
}
