//! One driver loop for sans-IO machines (the server's router, and any other that keeps
//! its state free of I/O): it feeds a [`Machine`] from an [`Endpoint`]'s incoming
//! channel, the machine's own timer and a side channel, and carries out what the machine
//! asks for: messages sent with [`Endpoint::send_nowait`] (so the task never waits on a
//! TCP or TLS connect), RFC 3263 lookups run beside it, and effects of the machine's own
//! kind handed to a closure (e.g. a storage batch to a writer thread).
//!
//! Everything runs on one task, one turn at a time, each turn with one [`Now`] read from
//! the clocks here, so the machine itself never reads a clock. Up to [`MAX_BATCH`]
//! messages that are waiting are handed over in one turn before the machine processes
//! them: a machine that groups work (the registrar's group commit) sees them together.
//!
//! The server's router runs until a signal stops it; the phone's user agent runs until
//! it says it is done ([`Machine::is_done`]), its keys, signals and media events coming
//! in on the side channel.

use crate::dns::ResolvedTarget;
use crate::endpoint::{Endpoint, Incoming, SendError};
use bytes::Bytes;
use sip_core::Flow;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Messages taken from the transports at once before the machine processes them.
pub const MAX_BATCH: usize = 64;

/// The token of a send that nobody needs to hear failed of.
pub const NO_TOKEN: u64 = u64::MAX;

/// The time of one turn: the monotonic clock for timers, and the wall clock in Unix
/// seconds for what is stored or compared with other hosts (binding expiry, nonces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// For timers.
    pub instant: Instant,
    /// Seconds since the Unix epoch.
    pub unix_secs: u64,
}

impl Now {
    /// Both clocks, read now.
    pub fn from_clocks() -> Now {
        Now {
            instant: Instant::now(),
            unix_secs: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// This time moved on by `by` (for tests with a fake clock).
    pub fn advanced(self, by: Duration) -> Now {
        Now {
            instant: self.instant + by,
            unix_secs: self.unix_secs + by.as_secs(),
        }
    }
}

/// One message a machine wants sent.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Over which flow (for a connection-oriented transport, a connection is opened if
    /// none is).
    pub flow: Flow,
    /// The whole message.
    pub bytes: Bytes,
    /// Given back in [`Machine::handle_send_failed`] if it cannot be sent
    /// ([`NO_TOKEN`]: nobody needs to know).
    pub token: u64,
}

/// A sans-IO state machine the [`Driver`] runs: inputs through `handle_*`, each with
/// the turn's [`Now`]; outputs through `poll_*`.
pub trait Machine {
    /// Inputs of the machine's own kind, from the side channel (e.g. a storage report).
    type Side;
    /// Outputs of the machine's own kind, for the driver's effect closure.
    type Effect;

    /// A message (or bytes that did not parse) from the endpoint. A send that failed
    /// beside the loop ([`Incoming::SendFailed`]) comes to
    /// [`Machine::handle_send_failed`] instead.
    fn handle_incoming(&mut self, now: Now, incoming: Incoming);
    /// A message given with `token` could not be sent, for `error`: at once, or later
    /// when the connection it needed failed.
    fn handle_send_failed(&mut self, now: Now, token: u64, error: SendError);
    /// The deadline given by [`Machine::poll_timeout`] has come.
    fn handle_timeout(&mut self, now: Now);
    /// What a lookup asked for by [`Machine::poll_resolve`] found (empty: nothing).
    fn handle_resolved(&mut self, now: Now, token: u64, targets: Vec<ResolvedTarget>) {
        let _ = (now, token, targets);
    }
    /// An input from the side channel.
    fn handle_side(&mut self, now: Now, input: Self::Side);
    /// Processes what the inputs of this turn left pending; `true` if anything was done
    /// (then the driver sends what it produced and asks again).
    fn process(&mut self, now: Now) -> bool;
    /// The next message to send.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// The next SIP URI to locate (RFC 3263), with the token its result comes back with.
    fn poll_resolve(&mut self) -> Option<(u64, String)> {
        None
    }
    /// The next effect of the machine's own kind.
    fn poll_effect(&mut self) -> Option<Self::Effect>;
    /// When [`Machine::handle_timeout`] is due next.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Whether the machine has done its work: [`Driver::run`] ends with
    /// [`Ended::Done`] (a phone whose task is over). A server never is.
    fn is_done(&self) -> bool {
        false
    }
    /// The driver stops taking messages: finish what is held (e.g. store what is
    /// staged, so its answers can go out).
    fn begin_stop(&mut self, now: Now) {
        let _ = now;
    }
    /// Nothing is held any more that [`Machine::begin_stop`] asked to finish.
    fn is_settled(&self) -> bool {
        true
    }
}

/// How [`Driver::run`] ended, other than by an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended<T> {
    /// The stop future ended, with this.
    Stopped(T),
    /// The machine said it is done ([`Machine::is_done`]).
    Done,
}

/// Why [`Driver::run`] ended other than by the stop future.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriveError {
    /// The endpoint's incoming channel closed.
    #[error("the transport layer stopped")]
    TransportStopped,
}

/// Runs a [`Machine`] on one task: see the module documentation.
pub struct Driver<M: Machine, E> {
    /// The machine (public so that its owner can read it between runs).
    pub machine: M,
    endpoint: Endpoint,
    incoming: mpsc::Receiver<Incoming>,
    side: mpsc::Receiver<M::Side>,
    on_effect: E,
    resolved_tx: mpsc::Sender<(u64, Vec<ResolvedTarget>)>,
    resolved_rx: mpsc::Receiver<(u64, Vec<ResolvedTarget>)>,
}

impl<M, E> Driver<M, E>
where
    M: Machine,
    E: FnMut(M::Effect) -> Option<M::Side>,
{
    /// A driver of `machine` fed by `incoming` (the endpoint's) and `side`. Each effect
    /// goes to `on_effect`, which may answer with an input for the machine at once (e.g.
    /// a failure to hand the effect on).
    pub fn new(
        machine: M,
        endpoint: Endpoint,
        incoming: mpsc::Receiver<Incoming>,
        side: mpsc::Receiver<M::Side>,
        on_effect: E,
    ) -> Self {
        let (resolved_tx, resolved_rx) = mpsc::channel(1024);
        Driver {
            machine,
            endpoint,
            incoming,
            side,
            on_effect,
            resolved_tx,
            resolved_rx,
        }
    }

    /// Runs turns until `stop` ends, the machine is done or the endpoint stops. What
    /// the machine holds before the first turn (a phone's first REGISTER) goes out first.
    pub async fn run<S: Future>(&mut self, stop: S) -> Result<Ended<S::Output>, DriveError> {
        tokio::pin!(stop);
        self.flush(Now::from_clocks());
        loop {
            if self.machine.is_done() {
                return Ok(Ended::Done);
            }
            let deadline = self.machine.poll_timeout();
            let sleep = async move {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let now = tokio::select! {
                out = &mut stop => return Ok(Ended::Stopped(out)),
                msg = self.incoming.recv() => {
                    let Some(first) = msg else {
                        return Err(DriveError::TransportStopped);
                    };
                    let now = Now::from_clocks();
                    self.hand_over(now, first);
                    // Whatever else has arrived joins this turn.
                    for _ in 1..MAX_BATCH {
                        match self.incoming.try_recv() {
                            Ok(m) => self.hand_over(now, m),
                            Err(_) => break,
                        }
                    }
                    now
                }
                () = sleep => {
                    let now = Now::from_clocks();
                    self.machine.handle_timeout(now);
                    now
                }
                Some(input) = self.side.recv() => {
                    let now = Now::from_clocks();
                    self.machine.handle_side(now, input);
                    now
                }
                Some((token, targets)) = self.resolved_rx.recv() => {
                    let now = Now::from_clocks();
                    self.machine.handle_resolved(now, token, targets);
                    now
                }
            };
            self.flush(now);
        }
    }

    /// After [`Driver::run`]: asks the machine to finish what it holds
    /// ([`Machine::begin_stop`]) and runs it on its side channel and timer (no new
    /// messages) until it is settled or `grace` has passed; whether it settled.
    pub async fn settle(&mut self, grace: Duration) -> bool {
        let give_up = tokio::time::Instant::now() + grace;
        let now = Now::from_clocks();
        self.machine.begin_stop(now);
        self.flush(now);
        while !self.machine.is_settled() {
            let deadline = self.machine.poll_timeout();
            let sleep = async move {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let now = tokio::select! {
                () = tokio::time::sleep_until(give_up) => return false,
                () = sleep => {
                    let now = Now::from_clocks();
                    self.machine.handle_timeout(now);
                    now
                }
                input = self.side.recv() => {
                    let Some(input) = input else { return self.machine.is_settled() };
                    let now = Now::from_clocks();
                    self.machine.handle_side(now, input);
                    now
                }
            };
            self.flush(now);
        }
        true
    }

    /// Gives the machine what the endpoint delivered.
    fn hand_over(&mut self, now: Now, incoming: Incoming) {
        match incoming {
            Incoming::SendFailed { token, error, .. } => {
                if token != NO_TOKEN {
                    self.machine.handle_send_failed(now, token, error);
                }
            }
            other => self.machine.handle_incoming(now, other),
        }
    }

    /// Sends what the machine has to send, then lets it process what is pending (the
    /// order the transaction layer documents: a retransmission it made leaves before
    /// anything reacts), until a pass does nothing.
    fn flush(&mut self, now: Now) {
        loop {
            let mut busy = false;
            while let Some(t) = self.machine.poll_transmit() {
                busy = true;
                // A send that needs a connection reports a failure later, as
                // `Incoming::SendFailed` with the same token.
                if let Err(e) = self.endpoint.send_nowait(t.flow, t.bytes, t.token) {
                    tracing::debug!("send failed: {e}");
                    if t.token != NO_TOKEN {
                        self.machine.handle_send_failed(now, t.token, e);
                    }
                }
            }
            while let Some((token, uri)) = self.machine.poll_resolve() {
                busy = true;
                let (endpoint, done) = (self.endpoint.clone(), self.resolved_tx.clone());
                tokio::spawn(async move {
                    let targets = match endpoint.locate(&uri).await {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::debug!(%uri, "cannot resolve: {e}");
                            Vec::new()
                        }
                    };
                    let _ = done.send((token, targets)).await;
                });
            }
            while let Some(effect) = self.machine.poll_effect() {
                busy = true;
                if let Some(input) = (self.on_effect)(effect) {
                    self.machine.handle_side(now, input);
                }
            }
            if !self.machine.process(now) && !busy {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::{EndpointConfig, ListenSpec};
    use sip_core::Transport;
    use std::net::SocketAddr;

    /// Holds one message for a TCP peer that refuses connections, before any turn;
    /// done once it hears why the send failed.
    struct OneSend {
        to: SocketAddr,
        pending: Option<Transmit>,
        failed: Option<(u64, String)>,
    }

    impl Machine for OneSend {
        type Side = ();
        type Effect = ();
        fn handle_incoming(&mut self, _: Now, _: Incoming) {}
        fn handle_send_failed(&mut self, _: Now, token: u64, error: SendError) {
            self.failed = Some((token, error.to_string()));
        }
        fn handle_timeout(&mut self, _: Now) {}
        fn handle_side(&mut self, _: Now, (): ()) {}
        fn process(&mut self, _: Now) -> bool {
            false
        }
        fn poll_transmit(&mut self) -> Option<Transmit> {
            self.pending.take()
        }
        fn poll_effect(&mut self) -> Option<()> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn is_done(&self) -> bool {
            self.failed.is_some()
        }
    }

    #[tokio::test]
    async fn what_is_held_goes_out_first_and_a_failed_connect_comes_back_with_its_error() {
        let spec: ListenSpec = "udp:127.0.0.1:0".parse().unwrap();
        let (endpoint, incoming) = Endpoint::bind(EndpointConfig::new([spec])).await.unwrap();
        // A port nobody listens on: the connect is refused, beside the loop.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = closed.local_addr().unwrap();
        drop(closed);
        let flow = Flow {
            transport: Transport::Tcp,
            remote: to,
            local: None,
            connection: None,
        };
        let machine = OneSend {
            to,
            pending: Some(Transmit {
                flow,
                bytes: Bytes::from_static(b"OPTIONS sip:x SIP/2.0\r\n\r\n"),
                token: 7,
            }),
            failed: None,
        };
        let (_side_tx, side) = mpsc::channel(1);
        let mut driver = Driver::new(machine, endpoint, incoming, side, |()| None);
        let ended = tokio::time::timeout(
            Duration::from_secs(10),
            driver.run(std::future::pending::<()>()),
        )
        .await
        .expect("the machine is done once told the send failed");
        assert_eq!(ended, Ok(Ended::Done));
        let (token, why) = driver.machine.failed.clone().unwrap();
        assert_eq!(token, 7);
        assert!(
            why.contains(&driver.machine.to.to_string()),
            "the error names the peer: {why}"
        );
    }
}
