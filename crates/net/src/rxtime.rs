//! Kernel receive timestamps: when a datagram reached the host, not when a task got round to reading it.
//!
//! A jitter buffer steers by arrival times. Read with `Instant::now()` after `recv`, they carry the reader's own
//! scheduling delay (a busy 2-core machine delays a task by several ms now and then), and one such delay raises the
//! on-time envelope and with it the playout delay for seconds. With `SO_TIMESTAMPNS` the kernel stamps each
//! datagram as it is queued; [`recv_stamped`] returns the stamp mapped onto the monotonic clock.
//!
//! The stamp is on `CLOCK_REALTIME`: it is mapped by taking its age against the real-time clock read at the same
//! moment as the monotonic one, so a step of the wall clock can only make a stamp look younger or older by the step;
//! an age outside `0..=MAX_AGE` (a stepped clock, a missing stamp) falls back to the time of the read.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;

/// Oldest stamp taken as true: a datagram that waited longer than this in the socket is stamped with the read.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// Room for the timestamp control message (a `timespec` with its `cmsghdr`, aligned).
pub const CMSG_SPACE: usize = 64;

/// Asks the kernel to stamp every datagram `sock` receives.
pub fn enable(sock: &impl AsFd) -> io::Result<()> {
    setsockopt(sock, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// One datagram read without blocking: its length, source and arrival time (the kernel's stamp, or `Instant::now()`
/// without one). `cmsg` is the caller's reusable control buffer (no allocation per datagram). `WouldBlock` when
/// nothing is queued.
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
        .as_ref()
        .and_then(to_socket_addr)
        .ok_or_else(|| io::Error::other("a datagram without an IP source address"))?;
    let mut at = now;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                at = stamp_to_instant(ts, now, SystemTime::now());
            }
        }
    }
    Ok((msg.bytes, source, at))
}

/// Maps a `CLOCK_REALTIME` stamp onto the monotonic clock, given both clocks read at (about) the same moment.
pub fn stamp_to_instant(ts: TimeSpec, now: Instant, real_now: SystemTime) -> Instant {
    let (Ok(secs), Ok(nanos)) = (u64::try_from(ts.tv_sec()), u32::try_from(ts.tv_nsec())) else {
        return now;
    };
    let Some(stamp) = UNIX_EPOCH.checked_add(Duration::new(secs, nanos.min(999_999_999))) else {
        return now;
    };
    match real_now.duration_since(stamp) {
        Ok(age) if age <= MAX_AGE => now.checked_sub(age).unwrap_or(now),
        _ => now,
    }
}

fn to_socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from(std::net::SocketAddrV4::from(*v4)));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(d: Duration) -> TimeSpec {
        TimeSpec::from_duration(d)
    }

    #[test]
    fn a_stamp_maps_to_its_age_before_now() {
        let now = Instant::now();
        let real = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = stamp_to_instant(
            spec(Duration::from_secs(1_800_000_000) - Duration::from_millis(7)),
            now,
            real,
        );
        assert_eq!(now - at, Duration::from_millis(7));
    }

    #[test]
    fn a_stamp_from_the_future_or_too_old_is_the_read_time() {
        let now = Instant::now();
        let real = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let future = spec(Duration::from_secs(1_800_000_001));
        assert_eq!(stamp_to_instant(future, now, real), now);
        let old = spec(Duration::from_secs(1_799_999_990));
        assert_eq!(stamp_to_instant(old, now, real), now);
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
        // Stamped on arrival (right after the send), not at the read 30 ms later.
        let read = Instant::now();
        assert!(read - at >= Duration::from_millis(25), "{:?}", read - at);
        assert!(at.saturating_duration_since(sent) < Duration::from_millis(5));
        let err = recv_stamped(&rx, &mut buf, &mut cmsg).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
