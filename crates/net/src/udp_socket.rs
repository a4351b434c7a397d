//! The synchronous socket shell of the RTP/UDP edge, driven by the media worker that owns the session (see
//! [`crate::udp`] for the design and [`RtpUdpCore`] for what is decided about each packet).
//!
//! At the session's tick the worker calls [`RtpUdpSocket::recv`] until it reports [`RxEvent::Empty`]:
//! non-blocking `recvmsg`, each datagram with its kernel receive timestamp (`SO_TIMESTAMPNS`, CLOCK_REALTIME)
//! mapped onto the worker's monotonic clock, so the jitter buffer sees when a packet really arrived, not when
//! the worker read it. Right after the tick it calls [`RtpUdpSocket::send`] for each outgoing packet (a
//! non-blocking `sendto`; a full socket buffer or an error is a counted drop). Between ticks nothing runs:
//! datagrams wait in the kernel's receive queue (a generous `SO_RCVBUF`), and what the kernel drops from a full
//! queue is counted from `SO_RXQ_OVFL`. No allocation, lock or log line per packet.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;

use crate::error::NetError;
use crate::rxtime;
use crate::server::ntp_now_wallclock;
use crate::stats::SessionStats;
use crate::udp::{RTCP_REPORT_BUFFER, RtpUdpConfig, RtpUdpCore};

pub use crate::rxtime::MAX_KERNEL_WAIT;

/// What one [`RtpUdpSocket::recv`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxEvent {
    /// An RTP packet for the session, `len` bytes at the start of the buffer, that arrived at `arrival`
    /// (the caller's clock).
    Packet {
        /// Length in bytes.
        len: usize,
        /// Kernel receive time on the caller's clock.
        arrival: Duration,
    },
    /// A datagram that the edge took care of (RTCP) or dropped; both counted. Call again.
    Consumed,
    /// Nothing more is queued.
    Empty,
}

/// An RTP/UDP socket owned by one media worker (see the module docs).
#[derive(Debug)]
pub struct RtpUdpSocket {
    sock: std::net::UdpSocket,
    local: SocketAddr,
    core: RtpUdpCore,
    /// Control-message space for one timestamp and one overflow count, allocated once.
    cmsg: Vec<u8>,
}

impl RtpUdpSocket {
    /// Binds the socket (non-blocking, kernel receive timestamps and drop counts on); `now` is the caller's
    /// clock, which every later call uses too.
    pub fn bind(config: &RtpUdpConfig, now: Duration) -> Result<Self, NetError> {
        let bind_err = |source| NetError::Bind {
            addr: config.bind,
            source,
        };
        let sock = bind_udp(config.bind, config.recv_buffer).map_err(bind_err)?;
        rxtime::enable(&sock).map_err(bind_err)?;
        // Drop counts are a nicety: a kernel without SO_RXQ_OVFL still runs the edge.
        let _ = setsockopt(&sock, sockopt::RxqOvfl, &1);
        let local = sock.local_addr()?;
        if !local.ip().is_loopback() {
            warn_unencrypted_once(local);
        }
        Ok(Self {
            sock,
            local,
            core: RtpUdpCore::new(config, now, ntp_now_wallclock()),
            cmsg: nix::cmsg_space!(TimeSpec, u32),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Live statistics.
    pub fn stats(&self) -> &Arc<SessionStats> {
        self.core.stats()
    }

    /// Where the session sends (see [`RtpUdpCore::remote`]).
    pub fn remote(&self) -> Option<SocketAddr> {
        self.core.remote()
    }

    /// Reads the next queued datagram into `buf` (non-blocking) and hands it to the core; `now` is the
    /// caller's clock at the read. Call until [`RxEvent::Empty`] (bound the calls per tick: a flood is left to
    /// the kernel's queue and its drop count).
    pub fn recv(&mut self, now: Duration, buf: &mut [u8]) -> RxEvent {
        let fd = self.sock.as_raw_fd();
        let (len, from, stamp, truncated) = loop {
            let mut iov = [IoSliceMut::new(&mut *buf)];
            match recvmsg::<SockaddrStorage>(
                fd,
                &mut iov,
                Some(&mut self.cmsg),
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(msg) => {
                    let mut stamp = None;
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for cmsg in cmsgs {
                            match cmsg {
                                ControlMessageOwned::ScmTimestampns(ts) => stamp = Some(ts),
                                ControlMessageOwned::RxqOvfl(dropped) => {
                                    self.core.on_kernel_dropped(u64::from(dropped));
                                }
                                _ => {}
                            }
                        }
                    }
                    let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
                    break (
                        msg.bytes,
                        msg.address.and_then(rxtime::socket_addr),
                        stamp,
                        truncated,
                    );
                }
                Err(Errno::EINTR) => continue,
                // EAGAIN: the queue is empty. Another error on an unconnected UDP socket (none is expected)
                // leaves the datagrams to the next tick.
                Err(_) => return RxEvent::Empty,
            }
        };
        let Some(from) = from else {
            return RxEvent::Consumed;
        };
        if truncated {
            self.core.on_truncated();
            return RxEvent::Consumed;
        }
        let arrival = stamp.map_or(now, |ts| arrival_time(now, rxtime::wall_now(), ts));
        if self.core.on_datagram(&buf[..len], from, arrival) {
            RxEvent::Packet { len, arrival }
        } else {
            RxEvent::Consumed
        }
    }

    /// Reads every queued datagram, at most `max` of them, handing each RTP packet and its arrival time to
    /// `deliver`; returns how many it delivered. For callers that do not need the buffer in between.
    pub fn poll_rx(
        &mut self,
        now: Duration,
        buf: &mut [u8],
        max: usize,
        mut deliver: impl FnMut(&[u8], Duration),
    ) -> usize {
        let mut delivered = 0;
        for _ in 0..max {
            match self.recv(now, buf) {
                RxEvent::Packet { len, arrival } => {
                    deliver(&buf[..len], arrival);
                    delivered += 1;
                }
                RxEvent::Consumed => {}
                RxEvent::Empty => break,
            }
        }
        delivered
    }

    /// Sends one RTP packet (queued by the worker at `queued`, sent at `now`) to the session's remote;
    /// false (and counted in `tx_dropped`) when there is no remote yet or the socket did not take it.
    pub fn send(&mut self, pkt: &[u8], queued: Duration, now: Duration) -> bool {
        match self.core.remote() {
            Some(to) if self.sock.send_to(pkt, to).is_ok() => {
                self.core.on_sent(pkt, queued, now);
                true
            }
            _ => {
                self.core.on_send_failed();
                false
            }
        }
    }

    /// Sends an RTCP report when one is due (configured interval; call it from a periodic path).
    pub fn poll_rtcp(&mut self, now: Duration) {
        let mut out = [0u8; RTCP_REPORT_BUFFER];
        if let Some((n, to)) = self.core.poll_report(now, &mut out) {
            // A report that does not go out is sent again at the next interval; nothing to count.
            let _ = self.sock.send_to(&out[..n], to);
        }
    }
}

/// The arrival on the caller's clock of a datagram the kernel stamped at `stamp` (CLOCK_REALTIME), read at
/// `now` on the caller's clock while the wall clock showed `wall`: `now` minus the time it waited in the
/// kernel ([`rxtime::kernel_wait`]: never negative, at most [`MAX_KERNEL_WAIT`]).
pub fn arrival_time(now: Duration, wall: Duration, stamp: TimeSpec) -> Duration {
    now.saturating_sub(rxtime::kernel_wait(wall, stamp))
}

/// A non-blocking UDP socket bound to `addr` with a kernel receive buffer of `buffer` bytes (best effort: the
/// kernel caps it at `net.core.rmem_max`).
fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn warn_unencrypted_once(local: SocketAddr) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            %local,
            "RTP/UDP endpoint bound to a non-loopback address: its media is unencrypted and unauthenticated \
             (strict RTP drops strangers' packets, but anyone on the path can read and spoof); prefer QUIC \
             or a trusted network"
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_stamps_map_to_the_callers_clock() {
        let now = Duration::from_secs(100);
        let wall = Duration::from_secs(1_700_000_000);
        let ts = |d: Duration| TimeSpec::from(d);
        // 7 ms in the kernel: arrived 7 ms before the read.
        let stamp = ts(wall - Duration::from_millis(7));
        assert_eq!(
            arrival_time(now, wall, stamp),
            now - Duration::from_millis(7)
        );
        // A stamp "after" the read (the wall clock stepped back): arrived now.
        assert_eq!(
            arrival_time(now, wall, ts(wall + Duration::from_secs(5))),
            now
        );
        // The wall clock stepped forward an hour: bounded.
        assert_eq!(
            arrival_time(now, wall, ts(wall - Duration::from_secs(3600))),
            now - MAX_KERNEL_WAIT
        );
        // Early in the caller's clock: never before its zero.
        assert_eq!(
            arrival_time(Duration::from_millis(1), wall, stamp),
            Duration::ZERO
        );
    }
}
