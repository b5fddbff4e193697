//! The integration-test harness: runs the real `earshot` binary and talks SIP to it.
//!
//! Use it from a test crate with `mod support;`:
//!
//! ```ignore
//! let earshot = support::Earshot::start("[calls]\nmax_concurrent = 10\n");
//! assert!(earshot.options_ok(), "{}", earshot.stderr_log());
//! ```
//!
//! [`Earshot::start`] writes a configuration into a fresh temporary directory (SIP on a free
//! loopback port, HTTP on another, a random RTP range, store and recordings inside the
//! directory, no audio output) merged with the test's own TOML, starts the binary with its
//! stdout and stderr going to `earshot.log` in that directory, and returns once earshot answers
//! an OPTIONS. Dropping the value kills the process; when the test is panicking the end of the
//! log is printed and the directory kept. [`in_netns`] runs a test body inside a private network
//! namespace. The `sip` helpers build and read the few messages the tests need; `sipp` runs
//! SIPp scenarios, `pcap` reads and writes captures, and `caller` is a raw SIP/RTP caller.

// Each test crate uses a different part of the harness, and `pub` here means "for the test
// crates", which is all that can reach it.
#![allow(dead_code, unreachable_pub)]
// Tests wait on real processes and sockets, so they read the real clock and sleep.
#![allow(clippy::disallowed_methods)]

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The binary under test, built by Cargo for this test run.
pub const EARSHOT_BIN: &str = env!("CARGO_BIN_EXE_earshot");

/// Set in the environment of a test process re-executed inside its own network namespace.
pub const NETNS_ENV: &str = "EARSHOT_IN_NETNS";
/// Names a file the re-executed test creates, so the parent knows the test really ran.
const NETNS_MARKER_ENV: &str = "EARSHOT_NETNS_MARKER";

/// How long [`Earshot::start`] waits for the first answer to OPTIONS.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`Earshot::options`] waits for an answer.
pub const OPTIONS_TIMEOUT: Duration = Duration::from_secs(2);

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A token unique within this test process and very likely across processes: for Call-IDs,
/// branches, tags and directory names.
pub fn unique(prefix: &str) -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}{}x{n}x{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The names of the files in `dir` ending in `suffix`, sorted: a data table's rows are checked
/// against them, so no file goes untested.
pub fn data_files(dir: &Path, suffix: &str) -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(suffix))
        .collect();
    files.sort();
    files
}

/// A running earshot. Killed on drop.
pub struct Earshot {
    child: Child,
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    sip: SocketAddr,
    http: SocketAddr,
    /// Source address of the liveness probes of [`Earshot::options`].
    probe_from: IpAddr,
}

impl Earshot {
    /// Starts earshot with the harness defaults overridden by `extra_toml` (any sections, e.g.
    /// `"[sip]\nmax_tcp_connections = 8\n"`; tables are merged key by key), and waits until it
    /// answers an OPTIONS from 127.0.0.1. Panics, with the log, if it does not.
    pub fn start(extra_toml: &str) -> Earshot {
        Earshot::start_probing_from(extra_toml, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Like [`Earshot::start`], with readiness (and [`Earshot::options`]) probed from
    /// `probe_from`: for configurations whose `[sip] allow` excludes 127.0.0.1.
    pub fn start_probing_from(extra_toml: &str, probe_from: IpAddr) -> Earshot {
        // A free port can be taken by another process between our check and earshot's bind;
        // such a start is retried with new ports.
        let mut last = String::new();
        for _ in 0..3 {
            match Earshot::try_start(extra_toml, probe_from) {
                Ok(earshot) => return earshot,
                Err(StartError::PortRace(log)) => last = log,
                Err(StartError::Failed(why)) => panic!("earshot did not start: {why}"),
            }
        }
        panic!("earshot could not bind its ports three times; last log:\n{last}");
    }

    fn try_start(extra_toml: &str, probe_from: IpAddr) -> Result<Earshot, StartError> {
        let dir = temp_dir("earshot-test");
        let fail = |why: String| StartError::Failed(why);
        let extra: toml::Table = extra_toml
            .parse()
            .map_err(|e| fail(format!("extra TOML does not parse: {e}\n{extra_toml}")))?;
        let sip_port = free_udp_tcp_port(Ipv4Addr::LOCALHOST).map_err(|e| fail(e.to_string()))?;
        let http_port = free_tcp_port(Ipv4Addr::LOCALHOST).map_err(|e| fail(e.to_string()))?;
        let mut config = base_config(&dir, sip_port, http_port);
        merge(&mut config, extra);
        fit_rtp_range(&mut config);
        let sip = listen_addr(&config, "sip", sip_port);
        let http = listen_addr(&config, "http", http_port);
        let text = toml::to_string(&config).map_err(|e| fail(e.to_string()))?;
        let config_path = dir.join("earshot.toml");
        fs::write(&config_path, &text).map_err(|e| fail(e.to_string()))?;
        let log = dir.join("earshot.log");
        let out = File::create(&log).map_err(|e| fail(e.to_string()))?;
        let err = out.try_clone().map_err(|e| fail(e.to_string()))?;
        let child = Command::new(EARSHOT_BIN)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .current_dir(&dir)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| fail(format!("cannot run {EARSHOT_BIN}: {e}")))?;
        let mut earshot = Earshot {
            child,
            dir,
            config: config_path,
            log,
            sip,
            http,
            probe_from,
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = earshot.child.try_wait() {
                let log = earshot.stderr_log();
                let _ = fs::remove_dir_all(&earshot.dir);
                if log.contains("cannot bind") || log.contains("in use") {
                    return Err(StartError::PortRace(log));
                }
                return Err(fail(format!(
                    "exited with {status} before answering OPTIONS\nconfig:\n{text}\nlog:\n{log}"
                )));
            }
            let probe = Duration::from_millis(200);
            if earshot.options_from(probe_from, probe).is_some() {
                return Ok(earshot);
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                return Err(fail(format!(
                    "no answer to OPTIONS on {sip} within {STARTUP_TIMEOUT:?}\nconfig:\n{text}\nlog:\n{}",
                    earshot.stderr_log()
                )));
            }
        }
    }

    /// Where earshot takes SIP, over UDP and TCP.
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip
    }

    /// Where earshot's HTTP API listens (if this build serves it).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The temporary directory holding the config, store, recordings and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything earshot wrote to stdout and stderr so far.
    pub fn stderr_log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log.display()))
    }

    /// Polls `done` every 100 ms until it holds; fails the test with `what` and the end of the
    /// log after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "{what} within {limit:?}\n{}",
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.stderr_log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills earshot with SIGKILL (no cleanup, as a crash) and waits until it is gone.
    #[allow(dead_code)]
    pub fn kill_9(&mut self) {
        let killed = Command::new("kill")
            .args(["-KILL", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(killed.success(), "kill -9 failed");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.is_running() {
            assert!(Instant::now() < deadline, "kill -9 did not stop earshot");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Log lines reporting a panic. A panic in a tokio task does not end the process, so a
    /// test that only checks [`Earshot::is_running`] would miss it.
    pub fn panics(&self) -> Vec<String> {
        self.stderr_log()
            .lines()
            .filter(|l| l.contains("panicked"))
            .map(str::to_owned)
            .collect()
    }

    /// Whether the process is still running (it has not exited or crashed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit status, if the process has ended.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends an OPTIONS over UDP from the probe address and returns the final status, or
    /// `None` without an answer within [`OPTIONS_TIMEOUT`].
    pub fn options(&self) -> Option<u16> {
        self.options_from(self.probe_from, OPTIONS_TIMEOUT)
    }

    /// Whether earshot answers OPTIONS with 200.
    pub fn options_ok(&self) -> bool {
        self.options() == Some(200)
    }

    /// Sends an OPTIONS over UDP from a fresh socket on `from` and returns the status of the
    /// first final response to it, or `None` after `timeout`.
    pub fn options_from(&self, from: IpAddr, timeout: Duration) -> Option<u16> {
        let socket = UdpSocket::bind(SocketAddr::new(from, 0)).ok()?;
        let local = socket.local_addr().ok()?;
        let call_id = unique("probe-");
        let request = sip::options(local, self.sip, &call_id, "udp");
        socket.send_to(&request, self.sip).ok()?;
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let Ok((n, _)) = socket.recv_from(&mut buf) else {
                if Instant::now() >= deadline {
                    return None;
                }
                continue;
            };
            let Some(msg) = sip::Message::parse(&buf[..n]) else {
                continue;
            };
            if msg.header("call-id") != Some(call_id.as_str()) {
                continue;
            }
            match msg.status() {
                Some(status) if status >= 200 => return Some(status),
                _ => continue,
            }
        }
    }

    /// Stops earshot with SIGTERM (a graceful shutdown) and waits up to `timeout`; kills it
    /// after that. Returns the exit status, `None` if it had to be killed.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Earshot {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if std::thread::panicking() || std::env::var_os("EARSHOT_KEEP_TEST_DIR").is_some() {
            eprintln!(
                "--- earshot (pid {}) log tail; everything kept in {} ---\n{}\n--- end of earshot log ---",
                self.child.id(),
                self.dir.display(),
                self.log_tail(80)
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

enum StartError {
    /// earshot could not bind a port we believed free: try again with other ports.
    PortRace(String),
    Failed(String),
}

/// The harness defaults: everything in `dir`, loopback only, no sound card needed.
fn base_config(dir: &Path, sip_port: u16, http_port: u16) -> toml::Table {
    let text = format!(
        r#"
[sip]
listen = "127.0.0.1:{sip_port}"
[calls]
max_concurrent = 100
[audio]
output = "none"
[recording]
dir = {recordings:?}
[store]
path = {store:?}
[http]
listen = "127.0.0.1:{http_port}"
[log]
level = {level:?}
format = "text"
"#,
        recordings = dir.join("recordings").display().to_string(),
        store = dir.join("earshot.redb").display().to_string(),
        level = std::env::var("EARSHOT_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
    );
    let _ = fs::create_dir_all(dir.join("recordings"));
    text.parse().unwrap_or_default()
}

/// Merges `extra` into `base`, table by table; values of `extra` win.
fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(into)), toml::Value::Table(from)) => merge(into, from),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Unless the test chose `[rtp] ports`, picks a random range just large enough for
/// `[calls] max_concurrent` (the config requires one even/odd pair per call), so earshots of
/// parallel tests rarely compete for the same ports.
fn fit_rtp_range(config: &mut toml::Table) {
    let rtp_set = config
        .get("rtp")
        .and_then(toml::Value::as_table)
        .is_some_and(|t| t.contains_key("ports"));
    if rtp_set {
        return;
    }
    let calls = config
        .get("calls")
        .and_then(|c| c.get("max_concurrent"))
        .and_then(toml::Value::as_integer)
        .unwrap_or(100)
        .clamp(1, 10_000);
    let ports = u32::try_from(calls.max(100) * 2).unwrap_or(20_000);
    let first = 20_000u32;
    let last_start = 65_534 - ports;
    let span = (last_start - first) / 2;
    let start = first + 2 * (rand::random::<u32>() % span.max(1));
    let range = format!("{start}-{}", start + ports - 1);
    let rtp = config
        .entry("rtp")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(rtp) = rtp.as_table_mut() {
        rtp.insert("ports".to_owned(), toml::Value::String(range));
    }
}

/// The address in `[section] listen`, or loopback on `default_port`.
fn listen_addr(config: &toml::Table, section: &str, default_port: u16) -> SocketAddr {
    let listen = config
        .get(section)
        .and_then(|s| s.get("listen"))
        .and_then(toml::Value::as_str)
        .and_then(|s| s.parse::<SocketAddr>().ok())
        .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, default_port)));
    if listen.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
    } else {
        listen
    }
}

/// A new, empty directory under the system temp dir.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(&format!("{prefix}-")));
    if let Err(e) = fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir
}

/// A port free for both UDP and TCP on `ip` (SIP binds both).
pub fn free_udp_tcp_port(ip: Ipv4Addr) -> io::Result<u16> {
    for _ in 0..100 {
        let udp = UdpSocket::bind((ip, 0))?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no port free for both UDP and TCP",
    ))
}

/// A port free for TCP on `ip`.
pub fn free_tcp_port(ip: Ipv4Addr) -> io::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// Runs `body` inside a private network namespace that has only a loopback interface, so that
/// nothing earshot sends (RTP to the addresses in torture SDPs, responses to made-up Via hosts)
/// can leave the machine.
///
/// The first call re-executes the current test binary as
/// `unshare --net sh -c 'ip link set lo up && exec "$0" "$@"' <exe> <test_name> --exact ...`
/// with [`NETNS_ENV`] set, and asserts that the test passed there; inside, `body` runs.
/// `test_name` is the test's path as libtest prints it (`my_test`, or `module::my_test`).
/// Needs util-linux (`unshare`), iproute2 (`ip`) and root or unprivileged user namespaces.
pub fn in_netns(test_name: &str, body: impl FnOnce()) {
    if std::env::var_os(NETNS_ENV).is_some() {
        if let Some(marker) = std::env::var_os(NETNS_MARKER_ENV) {
            let _ = fs::write(marker, test_name);
        }
        body();
        return;
    }
    let exe = std::env::current_exe().expect("current test executable");
    let marker = std::env::temp_dir().join(unique("earshot-netns-ran-"));
    let mut command = Command::new("unshare");
    command.arg("--net");
    if !is_root() {
        command.arg("--map-root-user");
    }
    command
        .arg("sh")
        .arg("-c")
        .arg(r#"ip link set lo up && exec "$0" "$@""#)
        .arg(&exe)
        .arg(test_name)
        .args([
            "--exact",
            "--nocapture",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(NETNS_ENV, "1")
        .env(NETNS_MARKER_ENV, &marker);
    let status = match command.status() {
        Ok(status) => status,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "`unshare` not found: this test runs in a private network namespace and needs \
             util-linux (unshare) and iproute2 (ip); scripts/test.sh installs them"
        ),
        Err(e) => panic!("cannot run unshare: {e}"),
    };
    let ran = marker.exists();
    let _ = fs::remove_file(&marker);
    assert!(
        status.success(),
        "{test_name} failed inside its network namespace ({status}); its output is above. \
         (Exit status 1 right after an unshare/ip error means the namespace could not be made: \
         it needs util-linux, iproute2 and root or user namespaces.)"
    );
    assert!(
        ran,
        "{test_name} did not run inside the network namespace: is {test_name:?} its exact libtest name?"
    );
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Writes one SIP message on a TCP connection and reads whole messages back.
pub struct SipTcp {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl SipTcp {
    pub fn connect(to: SocketAddr) -> io::Result<SipTcp> {
        let stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        stream.set_nodelay(true)?;
        Ok(SipTcp {
            stream,
            buf: Vec::new(),
        })
    }

    /// Wraps a connection made elsewhere (e.g. from a chosen source address).
    pub fn from_stream(stream: TcpStream) -> SipTcp {
        let _ = stream.set_nodelay(true);
        SipTcp {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends an OPTIONS to `target` on this connection and returns the final status of its
    /// answer; `None` when the connection fails or nothing comes within 5 s.
    pub fn options_status(&mut self, target: SocketAddr) -> Option<u16> {
        let local = self.stream.local_addr().ok()?;
        let call_id = unique("tcp-");
        self.send(&sip::options(local, target, &call_id, "tcp"))
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.recv(Duration::from_millis(200)) {
                Ok(Some(msg)) if msg.header("call-id") == Some(call_id.as_str()) => {
                    if let Some(status) = msg.status().filter(|s| *s >= 200) {
                        return Some(status);
                    }
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// The next complete message, or `Ok(None)` after `timeout`; an error or `UnexpectedEof`
    /// when the peer closed or reset the connection.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Option<sip::Message>> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(len) = sip::framed_len(&self.buf) {
                let rest = self.buf.split_off(len);
                let bytes = std::mem::replace(&mut self.buf, rest);
                if let Some(msg) = sip::Message::parse(&bytes) {
                    return Ok(Some(msg));
                }
                continue;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(None);
            };
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits up to `timeout` for the peer to close the connection: true on EOF or reset,
    /// false if it stays open (data received meanwhile is discarded).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            if self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .is_err()
            {
                return true;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}

/// Just enough SIP to drive earshot from tests: build requests, read responses.
pub mod sip {
    use std::net::SocketAddr;

    use super::unique;

    /// A message split into start line, unfolded headers (names lower-cased, compact forms
    /// expanded) and body. Lenient: anything with a start line parses.
    #[derive(Debug, Clone)]
    pub struct Message {
        pub start: String,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Message {
        pub fn parse(bytes: &[u8]) -> Option<Message> {
            let (head, body) = match find(bytes, b"\r\n\r\n") {
                Some(i) => (&bytes[..i], &bytes[i + 4..]),
                None => (bytes, &[][..]),
            };
            let head = String::from_utf8_lossy(head);
            let mut lines = head.split("\r\n");
            let start = lines.next()?.to_owned();
            let mut headers: Vec<(String, String)> = Vec::new();
            for line in lines {
                if line.starts_with([' ', '\t']) {
                    if let Some((_, value)) = headers.last_mut() {
                        value.push(' ');
                        value.push_str(line.trim());
                    }
                    continue;
                }
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let name = expand(&name.trim().to_ascii_lowercase()).to_owned();
                headers.push((name, value.trim().to_owned()));
            }
            Some(Message {
                start,
                headers,
                body: body.to_vec(),
            })
        }

        /// The status code of a response; `None` for a request.
        pub fn status(&self) -> Option<u16> {
            let mut parts = self.start.splitn(3, ' ');
            if parts.next()? != "SIP/2.0" {
                return None;
            }
            parts.next()?.parse().ok()
        }

        /// The first value of a header (`name` lower-case, long form).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }

        /// Every value of a header, in order.
        pub fn header_all(&self, name: &str) -> Vec<&str> {
            self.headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        }

        /// The method named in CSeq (`INVITE` for `CSeq: 1 INVITE`).
        pub fn cseq_method(&self) -> Option<&str> {
            self.header("cseq")?.split_whitespace().nth(1)
        }

        /// The number in CSeq.
        pub fn cseq_number(&self) -> Option<u32> {
            self.header("cseq")?.split_whitespace().next()?.parse().ok()
        }

        /// The URI of the first Contact, without `<>` and header parameters.
        pub fn contact_uri(&self) -> Option<String> {
            let contact = self.header("contact")?;
            let uri = match (contact.find('<'), contact.find('>')) {
                (Some(a), Some(b)) if a < b => &contact[a + 1..b],
                _ => contact.split(';').next()?,
            };
            Some(uri.trim().to_owned())
        }

        /// The audio address of an SDP body: the `c=` address and the `m=audio` port.
        pub fn sdp_audio(&self) -> Option<SocketAddr> {
            let body = String::from_utf8_lossy(&self.body);
            let mut ip = None;
            let mut port = None;
            for line in body.lines() {
                if let Some(c) = line.strip_prefix("c=IN IP4 ") {
                    ip = ip.or(c.trim().parse().ok());
                }
                if let Some(m) = line.strip_prefix("m=audio ") {
                    port = m.split_whitespace().next().and_then(|p| p.parse().ok());
                }
            }
            Some(SocketAddr::new(ip?, port?))
        }
    }

    fn expand(name: &str) -> &str {
        match name {
            "v" => "via",
            "f" => "from",
            "t" => "to",
            "i" => "call-id",
            "m" => "contact",
            "l" => "content-length",
            "c" => "content-type",
            "k" => "supported",
            "s" => "subject",
            "e" => "content-encoding",
            other => other,
        }
    }

    pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    /// The length of the first whole message in a TCP byte stream (headers plus
    /// Content-Length), if it is all there.
    pub fn framed_len(buf: &[u8]) -> Option<usize> {
        let end = find(buf, b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&buf[..end]);
        let length = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| {
                let n = n.trim();
                n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l")
            })
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        (buf.len() >= end + length).then_some(end + length)
    }

    /// `transport` as written in Via: `"udp"` or `"tcp"`.
    fn via(local: SocketAddr, transport: &str) -> String {
        format!(
            "SIP/2.0/{} {local};branch={};rport",
            transport.to_ascii_uppercase(),
            unique("z9hG4bK")
        )
    }

    /// An OPTIONS to `target` from `local`.
    pub fn options(
        local: SocketAddr,
        target: SocketAddr,
        call_id: &str,
        transport: &str,
    ) -> Vec<u8> {
        format!(
            "OPTIONS sip:earshot@{target} SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:probe@{local}>;tag={tag}\r\n\
             To: <sip:earshot@{target}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Accept: application/sdp\r\n\
             Content-Length: 0\r\n\r\n",
            via = via(local, transport),
            tag = unique("t"),
        )
        .into_bytes()
    }

    /// An INVITE from `local` offering PCMU/PCMA with media at `rtp`.
    pub fn invite(
        local: SocketAddr,
        target: SocketAddr,
        call_id: &str,
        rtp: SocketAddr,
    ) -> Vec<u8> {
        let sdp = format!(
            "v=0\r\n\
             o=test 1 1 IN IP4 {ip}\r\n\
             s=-\r\n\
             c=IN IP4 {ip}\r\n\
             t=0 0\r\n\
             m=audio {port} RTP/AVP 0 8 101\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=sendrecv\r\n",
            ip = rtp.ip(),
            port = rtp.port(),
        );
        format!(
            "INVITE sip:earshot@{target} SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:caller@{local}>;tag={tag}\r\n\
             To: <sip:earshot@{target}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:caller@{local}>\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{sdp}",
            via = via(local, "udp"),
            tag = unique("t"),
            len = sdp.len(),
        )
        .into_bytes()
    }

    /// An in-dialog request (`ACK` or `BYE`) for the dialog a 2xx to an INVITE created: sent
    /// to the 2xx's Contact with its From, To and Call-ID. `cseq` is the number to use.
    pub fn in_dialog(method: &str, ok: &Message, local: SocketAddr, cseq: u32) -> Vec<u8> {
        let uri = ok
            .contact_uri()
            .unwrap_or_else(|| "sip:earshot@127.0.0.1".to_owned());
        format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            via = via(local, "udp"),
            from = ok.header("from").unwrap_or_default(),
            to = ok.header("to").unwrap_or_default(),
            call_id = ok.header("call-id").unwrap_or_default(),
        )
        .into_bytes()
    }

    /// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same Request-URI and top Via
    /// as the INVITE, the response's To (with its tag).
    pub fn ack_for_failure(request_uri: &str, resp: &Message) -> Vec<u8> {
        format!(
            "ACK {request_uri} SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} ACK\r\n\
             Content-Length: 0\r\n\r\n",
            via = resp.header("via").unwrap_or_default(),
            from = resp.header("from").unwrap_or_default(),
            to = resp.header("to").unwrap_or_default(),
            call_id = resp.header("call-id").unwrap_or_default(),
            cseq = resp.cseq_number().unwrap_or(1),
        )
        .into_bytes()
    }
}

pub mod baresip;
pub mod caller;
pub mod pcap;
pub mod sipp;
pub mod tls;

/// The one recording earshot made in `dir/recordings`; panics unless there is exactly one.
pub fn only_recording(dir: &Path) -> PathBuf {
    let wavs: Vec<PathBuf> = fs::read_dir(dir.join("recordings"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    assert_eq!(wavs.len(), 1, "recordings: {wavs:?}");
    wavs.into_iter().next().unwrap()
}

/// Writes `samples` as a mono 8 kHz 16-bit WAV (greetings, agent replies, fallback messages).
pub fn write_wav_8k(path: &Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("WAV created");
    for &s in samples {
        w.write_sample(s).expect("WAV written");
    }
    w.finalize().expect("WAV finalized");
}

/// 20 ms blocks of `samples` that are loud and almost all at `hz` (Goertzel power over the
/// block's energy; 160 samples hold a whole number of periods of the tones used here).
pub fn tone_blocks(samples: &[i16], hz: f64) -> usize {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * hz / 8000.0).cos();
    samples
        .chunks_exact(160)
        .filter(|block| {
            let (mut s1, mut s2) = (0.0f64, 0.0f64);
            let mut energy = 0.0;
            for &x in *block {
                let x = f64::from(x);
                energy += x * x;
                let s0 = x + coeff * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
            let n = block.len() as f64;
            let rms = (energy / n).sqrt();
            rms > 1000.0 && 2.0 * power / (n * energy) > 0.9
        })
        .count()
}

/// The one recording in earshot's directory not in `seen`, once it is finished (its length
/// unchanged over three reads); adds it to `seen`.
#[allow(dead_code)]
pub fn next_recording(e: &Earshot, seen: &mut Vec<std::path::PathBuf>) -> std::path::PathBuf {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut last = (None, 0);
    loop {
        let fresh: Vec<_> = std::fs::read_dir(e.dir().join("recordings"))
            .unwrap()
            .flatten()
            .map(|f| f.path())
            .filter(|p| p.extension().is_some_and(|x| x == "wav") && !seen.contains(p))
            .collect();
        assert!(fresh.len() <= 1, "recordings: {fresh:?}");
        if let Some(path) = fresh.first() {
            let len = hound::WavReader::open(path).map(|r| r.len()).ok();
            if len.is_some() && len == last.0 {
                last.1 += 1;
                if last.1 >= 3 {
                    seen.push(path.clone());
                    return path.clone();
                }
            } else {
                last = (len, 0);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no finished recording\n{}",
            e.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
