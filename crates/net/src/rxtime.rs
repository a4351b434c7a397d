//! Kernel receive timestamps: when a datagram reached the host, not when a task got round to reading it.
//!
//! A jitter buffer steers by arrival times. Read with `Instant::now()` after `recv`, they carry the reader's own
//! scheduling delay (a busy 2-core machine delays a task by several ms now and then; a media worker reads its
//! RTP/UDP socket only at its tick), and one such delay raises the on-time envelope and with it the playout delay for
//! seconds. With `SO_TIMESTAMPNS` the kernel stamps each datagram as it is queued. Both UDP shells use this module:
//! the RTP/UDP socket of the media workers ([`crate::udp_socket`]) and the WebRTC peer's task ([`crate::webrtc`],
//! through [`recv_stamped`]).
//!
//! The stamp is on `CLOCK_REALTIME`: what counts is its age, the wall clock at the read minus the stamp
//! ([`kernel_wait`]), taken off the reader's monotonic clock. A wall-clock step between the stamp and the read can
//! only make a datagram look younger (never below zero) or older (never beyond [`MAX_KERNEL_WAIT`]).

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;

/// Longest a datagram is taken to have waited in the kernel: a wall-clock step between the kernel's stamp and the
/// read (NTP correcting the clock) must not move an arrival further back than a worker stall could.
pub const MAX_KERNEL_WAIT: Duration = Duration::from_secs(2);

/// Room for the timestamp control message (a `timespec` with its `cmsghdr`, aligned).
pub const CMSG_SPACE: usize = 64;

/// Asks the kernel to stamp every datagram `sock` receives.
pub fn enable(sock: &impl AsFd) -> io::Result<()> {
    setsockopt(sock, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// The wall clock now, as a duration since the epoch (a vDSO read, no syscall).
pub fn wall_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// How long a datagram the kernel stamped at `stamp` (`CLOCK_REALTIME`) waited before the read at wall time `wall`:
/// never negative, at most [`MAX_KERNEL_WAIT`].
pub fn kernel_wait(wall: Duration, stamp: TimeSpec) -> Duration {
    wall.saturating_sub(Duration::from(stamp))
        .min(MAX_KERNEL_WAIT)
}

/// The IP source of a received datagram (`None` for another address family).
pub fn socket_addr(addr: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    addr.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

/// One datagram read without blocking: its length, source and arrival time (the kernel's stamp on the monotonic
/// clock, or `Instant::now()` without one). `cmsg` is the caller's reusable control buffer (no allocation per
/// datagram). `WouldBlock` when nothing is queued.
pub fn recv_stamped(
    sock: &impl AsRawFd,
    buf: &mut [u8],
    cmsg: &mut [u8; CMSG_SPACE],
) -> io::Result<(usize, SocketAddr, Instant)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg[..]),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let now = Instant::now();
    let source = msg
        .address
        .and_then(socket_addr)
        .ok_or_else(|| io::Error::other("a datagram without an IP source address"))?;
    let mut at = now;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                at = now.checked_sub(kernel_wait(wall_now(), ts)).unwrap_or(now);
            }
        }
    }
    Ok((msg.bytes, source, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_the_stamps_age_and_never_negative_or_beyond_the_cap() {
        let wall = Duration::from_secs(1_800_000_000);
        let spec = |d: Duration| TimeSpec::from_duration(d);
        assert_eq!(
            kernel_wait(wall, spec(wall - Duration::from_millis(7))),
            Duration::from_millis(7)
        );
        assert_eq!(
            kernel_wait(wall, spec(wall + Duration::from_secs(1))),
            Duration::ZERO
        );
        assert_eq!(
            kernel_wait(wall, spec(wall - Duration::from_secs(10))),
            MAX_KERNEL_WAIT
        );
    }

    #[test]
    fn a_loopback_datagram_is_stamped_when_it_arrived() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(&rx).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        let sent = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        let mut buf = [0u8; 64];
        let mut cmsg = [0u8; CMSG_SPACE];
        let (n, from, at) = recv_stamped(&rx, &mut buf, &mut cmsg).unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], tx.local_addr().unwrap()));
        // Stamped on arrival (right after the send), not at the read 30 ms later. (The kernel turns stamping on
        // asynchronously for the first socket of a process; a datagram before that carries no stamp.)
        let read = Instant::now();
        if read - at < Duration::from_millis(25) {
            println!("no kernel stamp on the first datagram (stamping not switched on yet)");
        } else {
            assert!(at.saturating_duration_since(sent) < Duration::from_millis(5));
        }
        let err = recv_stamped(&rx, &mut buf, &mut cmsg).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
