//! `earshot doctor`: checks that the box can run earshot with this configuration — ports free,
//! the audio device present, the store openable, the recording folder writable, enough free
//! disk, a sane clock — and says what to do about each problem.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::config::{AudioOutput, Config};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, but worth a look.
    Warn,
    /// earshot will not work as configured.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name,
            status,
            detail: detail.into(),
        }
    }
}

/// Runs every check. Blocking: call it outside the async runtime.
pub fn run(config: &Config) -> Vec<Check> {
    vec![
        port_check("sip port", config.sip.listen, true),
        port_check("http port", config.http.listen, false),
        rtp_ports(config),
        audio(config),
        store(config),
        recording_dir(config),
        disk(config),
        clock(),
    ]
}

fn port_check(name: &'static str, addr: SocketAddr, udp_too: bool) -> Check {
    let tcp = TcpListener::bind(addr);
    let udp = if udp_too {
        UdpSocket::bind(addr).map(|_| ())
    } else {
        Ok(())
    };
    match (tcp, udp) {
        (Ok(_), Ok(())) => Check::new(name, Status::Ok, format!("{addr} is free")),
        (Err(e), _) | (_, Err(e)) => Check::new(
            name,
            Status::Fail,
            format!(
                "cannot bind {addr}: {e} (another earshot or SIP server running? a port below 1024 needs CAP_NET_BIND_SERVICE)"
            ),
        ),
    }
}

fn rtp_ports(config: &Config) -> Check {
    let range = config.rtp.ports;
    let ip = config.sip.listen.ip();
    let free = (range.start..range.end)
        .step_by(2)
        .take(64)
        .filter(|p| UdpSocket::bind(SocketAddr::new(ip, *p)).is_ok())
        .count();
    let checked = range.pairs().min(64);
    match free {
        0 => Check::new(
            "rtp ports",
            Status::Fail,
            format!("none of the first {checked} RTP ports of {range} can be bound"),
        ),
        n if n < checked => Check::new(
            "rtp ports",
            Status::Warn,
            format!("{n} of the first {checked} RTP ports of {range} are free"),
        ),
        _ => Check::new(
            "rtp ports",
            Status::Ok,
            format!("{range}: {} call(s) fit", range.pairs()),
        ),
    }
}

fn audio(config: &Config) -> Check {
    let devices = || crate::audio::list_devices();
    match &config.audio.output {
        AudioOutput::None => Check::new(
            "audio",
            Status::Ok,
            "audio output disabled (output = \"none\")",
        ),
        AudioOutput::Default => match devices().iter().find(|d| d.is_default) {
            Some(d) => Check::new("audio", Status::Ok, format!("default output: {}", d.name)),
            None => Check::new(
                "audio",
                Status::Warn,
                "no default output device: calls run and record, but nothing plays (is the user in the audio group? see `earshot devices`)",
            ),
        },
        AudioOutput::Device(name) => match devices().iter().find(|d| &d.name == name) {
            Some(_) => Check::new("audio", Status::Ok, format!("output {name:?} found")),
            None => Check::new(
                "audio",
                Status::Warn,
                format!("output {name:?} not found; `earshot devices` lists what is there"),
            ),
        },
    }
}

fn store(config: &Config) -> Check {
    use crate::store::{OpenError, Store};
    let path = config.store.path.as_path();
    if !path.exists() {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return match std::fs::metadata(parent) {
            Ok(meta) if meta.is_dir() => Check::new(
                "store",
                Status::Ok,
                format!("{} will be created at the first start", path.display()),
            ),
            _ => Check::new(
                "store",
                Status::Fail,
                format!(
                    "{} does not exist to hold {}",
                    parent.display(),
                    path.display()
                ),
            ),
        };
    }
    match Store::open_with(path, crate::webhooks::outbox_hook(config)) {
        Ok(_) => Check::new("store", Status::Ok, format!("{} opens", path.display())),
        // A running earshot holds the file: the store is fine, the check cannot look inside.
        Err(err @ OpenError::Locked { .. }) => Check::new("store", Status::Warn, err.to_string()),
        Err(err) => Check::new("store", Status::Fail, err.to_string()),
    }
}

fn recording_dir(config: &Config) -> Check {
    if !config.recording.enabled {
        return Check::new("recordings", Status::Ok, "recording disabled");
    }
    let dir = &config.recording.dir;
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Check::new(
            "recordings",
            Status::Fail,
            format!("cannot create {}: {e}", dir.display()),
        );
    }
    let probe = dir.join(".earshot-doctor-probe");
    match std::fs::write(&probe, b"probe") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Check::new(
                "recordings",
                Status::Ok,
                format!("{} is writable", dir.display()),
            )
        }
        Err(e) => Check::new(
            "recordings",
            Status::Fail,
            format!("{} is not writable: {e}", dir.display()),
        ),
    }
}

fn disk(config: &Config) -> Check {
    let dir = if config.recording.dir.exists() {
        config.recording.dir.as_path()
    } else {
        Path::new(".")
    };
    match fs4::available_space(dir).map(|bytes| bytes / (1024 * 1024)) {
        Ok(free) if free < config.recording.min_free_mb => Check::new(
            "disk",
            Status::Fail,
            format!(
                "{free} MiB free under {}: below recording.min_free_mb ({}), recordings will not start",
                dir.display(),
                config.recording.min_free_mb
            ),
        ),
        Ok(free) if free < config.recording.min_free_mb * 4 => Check::new(
            "disk",
            Status::Warn,
            format!("{free} MiB free under {}", dir.display()),
        ),
        Ok(free) => Check::new(
            "disk",
            Status::Ok,
            format!("{free} MiB free under {}", dir.display()),
        ),
        Err(e) => Check::new(
            "disk",
            Status::Warn,
            format!("cannot read free space of {}: {e}", dir.display()),
        ),
    }
}

/// A clock far in the past breaks call times and TLS-free but signed Twilio timestamps; an
/// unsynchronized clock drifts.
fn clock() -> Check {
    // The build date is a floor no correct clock is below.
    const FLOOR: Duration = Duration::from_secs(1_767_225_600); // 2026-01-01
    let now = crate::clock::wallclock();
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    if since_epoch < FLOOR {
        return Check::new(
            "clock",
            Status::Fail,
            "the system clock is before 2026: set the time (NTP)",
        );
    }
    if Path::new("/run/systemd/timesync/synchronized").exists() {
        Check::new("clock", Status::Ok, "synchronized (systemd-timesyncd)")
    } else {
        Check::new(
            "clock",
            Status::Warn,
            "plausible, but no NTP synchronization is confirmed (timedatectl status)",
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_port_fails_and_a_free_one_passes() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        assert_eq!(port_check("http port", addr, false).status, Status::Fail);
        drop(taken);
        assert_eq!(port_check("http port", addr, false).status, Status::Ok);
    }

    #[test]
    fn an_unwritable_recording_dir_fails() {
        let mut config = Config::default();
        config.recording.dir = "/proc/earshot-cannot-write-here".into();
        assert_eq!(recording_dir(&config).status, Status::Fail);
    }
}
