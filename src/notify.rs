//! The systemd notification protocol (sd_notify): one datagram per state change to the socket
//! named by `$NOTIFY_SOCKET`, and the watchdog interval from `$WATCHDOG_USEC`. A few lines of
//! std instead of a crate; without `$NOTIFY_SOCKET` (not under systemd, tests) it does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::debug;

/// Where notifications go. Cheap to clone; every clone talks to the same socket.
#[derive(Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
    watchdog: Option<Duration>,
}

struct Inner {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("enabled", &self.inner.is_some()).field("watchdog", &self.watchdog).finish()
    }
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Notifier::default()
    }

    /// From `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace) and
    /// `$WATCHDOG_USEC`/`$WATCHDOG_PID` (the watchdog is ours only if the pid is ours or unset).
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|s| s.into_string().ok());
        let watchdog = watchdog_from(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        match socket.as_deref().map(Self::connect) {
            Some(Ok(mut n)) => {
                n.watchdog = watchdog;
                n
            }
            Some(Err(e)) => {
                // Logging may not be set up yet; stderr reaches the journal under systemd.
                eprintln!("preloadd: NOTIFY_SOCKET is set but unusable: {e}");
                Notifier::default()
            }
            None => Notifier::default(),
        }
    }

    /// Talks to the socket at `path` (`@name`: abstract namespace).
    pub fn connect(path: &str) -> std::io::Result<Self> {
        let addr = match path.strip_prefix('@') {
            Some(name) => abstract_addr(name.as_bytes())?,
            None => SocketAddr::from_pathname(path)?,
        };
        let socket = UnixDatagram::unbound()?;
        Ok(Notifier { inner: Some(Arc::new(Inner { socket, addr })), watchdog: None })
    }

    pub fn with_watchdog(mut self, every: Option<Duration>) -> Self {
        self.watchdog = every;
        self
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// `WatchdogSec=` as systemd passed it, when the watchdog is on for this process.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines). Errors are logged, never fatal:
    /// a daemon must not die because its supervisor went away.
    pub fn notify(&self, state: &str) {
        if let Some(inner) = &self.inner {
            if let Err(e) = inner.socket.send_to_addr(state.as_bytes(), &inner.addr) {
                debug!(error = %e, "sd_notify failed");
            }
        }
    }

    pub fn ready(&self) {
        self.notify("READY=1");
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC` systemd needs to tell this reload from an older one.
    pub fn reloading(&self) {
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }

    /// One line for `systemctl status`.
    pub fn status(&self, line: &str) {
        self.notify(&format!("STATUS={}", line.replace('\n', " ")));
    }

    /// A watchdog pinger for the engine loop: pings at most every `WatchdogSec/4`; the loop
    /// wakes at least that often (see [`Notifier::loop_period`]), so pings are never more than
    /// `WatchdogSec/2` apart while the loop turns — and stop when it is stuck.
    pub fn watchdog_pinger(&self) -> impl Fn() + Send + 'static {
        let me = self.clone();
        let min_gap = self.loop_period();
        let last: Mutex<Option<Instant>> = Mutex::new(None);
        move || {
            if me.watchdog.is_none() || !me.enabled() {
                return;
            }
            let mut last = last.lock().expect("watchdog lock");
            let now = Instant::now();
            if last.map_or(true, |t| now.duration_since(t) >= min_gap) {
                *last = Some(now);
                me.notify("WATCHDOG=1");
            }
        }
    }

    /// The longest the engine loop may sleep so the watchdog is fed in time.
    pub fn loop_period(&self) -> Duration {
        match self.watchdog {
            Some(w) => (w / 4).max(Duration::from_millis(10)),
            None => Duration::from_secs(30),
        }
    }
}

/// `WATCHDOG_USEC` applies to us when `WATCHDOG_PID` is unset or is our pid.
pub fn watchdog_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    match pid.map(|p| p.trim().parse::<u32>()) {
        None => Some(Duration::from_micros(usec)),
        Some(Ok(p)) if p == me => Some(Duration::from_micros(usec)),
        _ => None,
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "abstract sockets are Linux-only"))
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
/// (std's `Instant` reads the same clock but does not expose its value.)
#[cfg(target_os = "linux")]
pub fn monotonic_usec() -> u64 {
    use std::os::raw::{c_int, c_long};
    #[repr(C)]
    struct Timespec {
        tv_sec: c_long,
        tv_nsec: c_long,
    }
    extern "C" {
        fn clock_gettime(clock: c_int, tp: *mut Timespec) -> c_int;
    }
    const CLOCK_MONOTONIC: c_int = 1;
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer; CLOCK_MONOTONIC
    // always exists on Linux.
    let rc = unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(not(target_os = "linux"))]
pub fn monotonic_usec() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_pid_must_be_ours() {
        assert_eq!(watchdog_from(Some("20000000"), None, 7), Some(Duration::from_secs(20)));
        assert_eq!(watchdog_from(Some("20000000"), Some("7"), 7), Some(Duration::from_secs(20)));
        assert_eq!(watchdog_from(Some("20000000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(None, None, 7), None);
    }

    #[test]
    fn abstract_and_path_sockets_receive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::connect(path.to_str().unwrap()).unwrap().ready();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("preloadd-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&abstract_addr(name.as_bytes()).unwrap()).unwrap();
        Notifier::connect(&format!("@{name}")).unwrap().stopping();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn monotonic_clock_moves() {
        let a = monotonic_usec();
        assert!(a > 0);
        assert!(monotonic_usec() >= a);
    }
}
