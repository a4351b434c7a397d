//! Scheduling priority of the media threads: a call must not break because the machine is busy.
//!
//! A media worker needs the CPU for a fraction of a millisecond every 20 ms, at its deadline. Under the default
//! scheduler a busy neighbour (a build, a bot's model, another call's edge) delays that slice by several ms now and
//! then, and the jitter buffer pays for every delay: a late tick, an arrival that looks late, an envelope held high
//! for seconds. Real-time media stacks raise their audio threads for this (PipeWire through rtkit, Chromium's
//! real-time audio threads, Asterisk `-p`), and so does the daemon, as far as it is allowed to:
//!
//! * [`MediaPriority::Realtime`]: `SCHED_FIFO` at [`REALTIME_PRIORITY`] (low in the real-time range, below the
//!   kernel's own threads and audio servers), with `SCHED_RESET_ON_FORK`; refused → as `High`.
//! * [`MediaPriority::High`] (the default): nice [`HIGH_NICE`] (or the process's own, if that is higher already),
//!   the value Chromium gives real-time audio where it cannot use a real-time class; refused → unchanged.
//! * [`MediaPriority::Normal`]: the default scheduler, unchanged.
//!
//! Raising either needs `CAP_SYS_NICE` (or an `RLIMIT_RTPRIO` / `RLIMIT_NICE` that allows it); without it the daemon
//! says so once at start and runs at normal priority. The kernel's real-time throttling (by default 95 % of each
//! second) keeps a `SCHED_FIFO` worker from locking up a machine even if it had work without end; the network runtime
//! (which also serves the HTTP API) gets `High` at most, never a real-time class.

use std::fmt;

use serde::Deserialize;

/// `SCHED_FIFO` priority of the media workers with [`MediaPriority::Realtime`] (1..=99; PipeWire's data threads
/// ask rtkit for 88, the kernel's interrupt threads run at 50).
pub const REALTIME_PRIORITY: i32 = 10;
/// Nice value of the media threads with [`MediaPriority::High`] (-20..=19).
pub const HIGH_NICE: i32 = -10;

/// The scheduling priority asked for the media threads (`media_priority` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaPriority {
    /// `SCHED_FIFO` at [`REALTIME_PRIORITY`], else as `High`.
    Realtime,
    /// Nice [`HIGH_NICE`], else unchanged.
    #[default]
    High,
    /// The default scheduler, unchanged.
    Normal,
}

/// What the calling thread got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// `SCHED_FIFO` at this priority.
    Realtime(i32),
    /// This nice value (the real-time class refused with this error, if it was asked for).
    Nice(i32, Option<String>),
    /// Nothing was changed: `Normal` was asked for, or raising it was refused (with this error).
    Unchanged(Option<String>),
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Applied::Realtime(p) => write!(f, "realtime (SCHED_FIFO {p})"),
            Applied::Nice(n, None) => write!(f, "high (nice {n})"),
            Applied::Nice(n, Some(e)) => write!(f, "high (nice {n}; SCHED_FIFO refused: {e})"),
            Applied::Unchanged(None) => f.write_str("normal"),
            Applied::Unchanged(Some(e)) => write!(
                f,
                "normal (raising it was refused: {e}; grant CAP_SYS_NICE, or set media_priority = \"normal\")"
            ),
        }
    }
}

impl Applied {
    /// True if something asked for was refused (worth a warning at start).
    pub fn was_refused(&self) -> bool {
        matches!(
            self,
            Applied::Nice(_, Some(_)) | Applied::Unchanged(Some(_))
        )
    }
}

/// Raises the calling thread as far as `wanted` and the process's rights allow. `realtime_allowed` false caps it at
/// `High` (threads that serve untrusted requests).
pub fn apply_to_current_thread(wanted: MediaPriority, realtime_allowed: bool) -> Applied {
    let mut refused = None;
    if wanted == MediaPriority::Realtime && realtime_allowed {
        match set_fifo(REALTIME_PRIORITY) {
            Ok(()) => return Applied::Realtime(REALTIME_PRIORITY),
            Err(e) => refused = Some(e.to_string()),
        }
    }
    if wanted == MediaPriority::Normal {
        return Applied::Unchanged(None);
    }
    // Never lower it: a daemon started at nice -15 keeps -15 (`mediaproc load` under `nice -n -15` measured its
    // workers losing to its own load edge at -10 before).
    let nice = current_thread_scheduling().1.min(HIGH_NICE);
    match set_nice(nice) {
        Ok(()) => Applied::Nice(nice, refused),
        Err(e) => Applied::Unchanged(Some(refused.unwrap_or_else(|| e.to_string()))),
    }
}

fn set_fifo(priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `sched_setscheduler` reads `param` (a valid, initialised struct on our stack) and changes only the
    // scheduling of the calling thread (pid 0); it has no memory effects on our side.
    let r = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn set_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: `gettid` and `setpriority` take and return plain integers; the latter changes only the nice value of
    // the calling thread (its own id); neither has memory effects.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The scheduling policy and nice value of the calling thread (for tests and diagnostics): `(policy, nice)`.
pub fn current_thread_scheduling() -> (i32, i32) {
    // SAFETY: these calls take and return plain integers and only read the calling thread's scheduling attributes
    // (`getpriority` may return -1 as a valid nice value, which is fine here).
    let (policy, nice) = unsafe {
        (
            libc::sched_getscheduler(0),
            libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t),
        )
    };
    (policy, nice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_changes_nothing() {
        let before = current_thread_scheduling();
        let applied = std::thread::spawn(|| apply_to_current_thread(MediaPriority::Normal, true))
            .join()
            .unwrap();
        assert_eq!(applied, Applied::Unchanged(None));
        assert_eq!(current_thread_scheduling(), before);
    }

    #[test]
    fn realtime_is_applied_or_falls_back_and_says_why() {
        let (applied, now) = std::thread::spawn(|| {
            let applied = apply_to_current_thread(MediaPriority::Realtime, true);
            (applied, current_thread_scheduling())
        })
        .join()
        .unwrap();
        match &applied {
            Applied::Realtime(p) => {
                assert_eq!(*p, REALTIME_PRIORITY);
                assert_eq!(now.0 & !libc::SCHED_RESET_ON_FORK, libc::SCHED_FIFO);
            }
            Applied::Nice(n, Some(_)) => {
                assert_eq!((now.0, now.1), (libc::SCHED_OTHER, *n));
                assert!(*n <= HIGH_NICE);
            }
            Applied::Unchanged(Some(_)) => assert_eq!(now.0, libc::SCHED_OTHER),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!applied.to_string().is_empty());
    }

    #[test]
    fn without_realtime_rights_the_network_threads_get_high_at_most() {
        let (applied, now) = std::thread::spawn(|| {
            let applied = apply_to_current_thread(MediaPriority::Realtime, false);
            (applied, current_thread_scheduling())
        })
        .join()
        .unwrap();
        assert_eq!(now.0, libc::SCHED_OTHER, "{applied}");
        assert!(
            matches!(applied, Applied::Nice(n, None) if n <= HIGH_NICE && n == now.1)
                || matches!(applied, Applied::Unchanged(Some(_))),
            "{applied:?}"
        );
    }
}
