//! Receiving UDP datagrams in batches: one `recvmmsg` system call takes every datagram
//! waiting on the socket (up to [`BATCH`]).
//!
//! Tokio's `recv_from` learns that a socket is drained only from a receive that fails
//! with `EAGAIN`, so each wake-up of a busy server costs one system call that returns
//! nothing. `recvmmsg` says more: when it returns fewer datagrams than asked for, the
//! queue was empty, and the socket's readiness is cleared without that last call. Any
//! datagram (or ICMP error) arriving after that raises a new readiness event, so
//! nothing is left waiting.

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The most datagrams taken by one system call.
pub(crate) const BATCH: usize = 16;

/// Buffers for one socket's batches.
pub(crate) struct BatchReceiver {
    buffers: [Vec<u8>; BATCH],
    /// Per datagram of the last batch: its length and where it came from.
    received: Vec<(usize, Option<SocketAddr>)>,
}

impl BatchReceiver {
    /// Buffers of `capacity` bytes each (a datagram filling one whole is too large).
    pub(crate) fn new(capacity: usize) -> BatchReceiver {
        BatchReceiver {
            buffers: std::array::from_fn(|_| vec![0u8; capacity]),
            received: Vec::with_capacity(BATCH),
        }
    }

    /// The capacity of each buffer.
    pub(crate) fn capacity(&self) -> usize {
        self.buffers[0].len()
    }

    /// Takes what is waiting on `sock` without waiting, and returns whether more may be
    /// there (a full batch). An error other than "nothing waiting" is returned as is:
    /// Linux reports an ICMP error for an earlier send on the next receive.
    pub(crate) fn receive(&mut self, sock: &UdpSocket) -> io::Result<bool> {
        self.received.clear();
        let fd = sock.as_raw_fd();
        let (buffers, received) = (&mut self.buffers, &mut self.received);
        // Made for each call: it holds raw pointers, so it may not live across the
        // awaits of the task that receives (two small allocations a wake-up).
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let outcome = sock.try_io(Interest::READABLE, || {
            let mut slices = buffers
                .each_mut()
                .map(|b| [IoSliceMut::new(b.as_mut_slice())]);
            let batch = recvmmsg(fd, &mut headers, slices.iter_mut(), MsgFlags::empty(), None)
                .map_err(io::Error::from)?;
            received.extend(batch.map(|m| (m.bytes, m.address.and_then(socket_addr))));
            if received.len() < BATCH {
                // Fewer than asked for: the queue is empty. Saying WouldBlock clears the
                // readiness this call acted on, as the failed receive would have.
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match outcome {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The datagrams of the last batch, with their sources (`None`: an address family
    /// we do not speak, never seen on an IP socket).
    pub(crate) fn datagrams(&self) -> impl Iterator<Item = (&[u8], Option<SocketAddr>)> {
        self.received
            .iter()
            .zip(&self.buffers)
            .map(|(&(len, src), buf)| (&buf[..len.min(buf.len())], src))
    }
}

fn socket_addr(s: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_batch_takes_every_waiting_datagram_and_then_the_next_ones() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = sender.local_addr().unwrap();
        for i in 0..BATCH + 3 {
            sender
                .send_to(format!("datagram {i}").as_bytes(), addr)
                .unwrap();
        }
        let mut rx = BatchReceiver::new(100);
        let mut got = Vec::new();
        while got.len() < BATCH + 3 {
            tokio::time::timeout(Duration::from_secs(5), sock.readable())
                .await
                .unwrap()
                .unwrap();
            let more = rx.receive(&sock).unwrap();
            assert!(more == (rx.received.len() == BATCH));
            for (bytes, src) in rx.datagrams() {
                assert_eq!(src, Some(from));
                got.push(String::from_utf8(bytes.to_vec()).unwrap());
            }
        }
        let want: Vec<String> = (0..BATCH + 3).map(|i| format!("datagram {i}")).collect();
        assert_eq!(got, want);
        // Drained and cleared: the next datagram wakes the socket again.
        sender.send_to(b"later", addr).unwrap();
        tokio::time::timeout(Duration::from_secs(5), sock.readable())
            .await
            .expect("a datagram after a short batch makes the socket readable again")
            .unwrap();
        assert!(!rx.receive(&sock).unwrap());
        let later: Vec<&[u8]> = rx.datagrams().map(|(b, _)| b).collect();
        assert_eq!(later, vec![&b"later"[..]]);
    }

    #[tokio::test]
    async fn an_icmp_error_for_an_earlier_send_loses_no_datagram() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        // A port nobody listens on: the kernel answers our send with an ICMP error,
        // reported on a later receive.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        sock.send_to(b"to nobody", closed_addr).await.unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"after the error", addr).unwrap();
        let mut rx = BatchReceiver::new(100);
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while got.is_empty() {
            tokio::time::timeout_at(deadline, sock.readable())
                .await
                .expect("the datagram is not lost behind the error")
                .unwrap();
            // The error, if the kernel reports it first, is one call's answer.
            if rx.receive(&sock).is_ok() {
                got.extend(rx.datagrams().map(|(b, _)| b.to_vec()));
            }
        }
        assert_eq!(got, vec![b"after the error".to_vec()]);
    }
}
