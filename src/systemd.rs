//! sd_notify(3) without libsystemd: readiness and watchdog datagrams to `$NOTIFY_SOCKET`.
//!
//! Outside systemd (no `NOTIFY_SOCKET`) every call here does nothing. `READY=1` is sent by
//! [`crate::app`] once the sockets are bound, the recorder and the audio thread are started;
//! `WATCHDOG=1` comes from the SIP driver's own loop, so a stalled loop gets earshot restarted.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one state string (`READY=1`, `WATCHDOG=1`, `STOPPING=1`) to systemd. Failures are
/// logged, never fatal: a lost notification is systemd's problem to time out on.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(err) = send(&path, state) {
        tracing::warn!("sd_notify {state}: {err}");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;

    let socket = UnixDatagram::unbound()?;
    // A leading '@' names a socket in the abstract namespace (Linux only).
    #[cfg(target_os = "linux")]
    if let Some(name) = path.as_bytes().strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
        return Ok(());
    }
    socket.send_to(state.as_bytes(), path)?;
    Ok(())
}

/// `WATCHDOG_USEC`, if it is meant for this process (`WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str() != Some(std::process::id().to_string().as_str())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}
