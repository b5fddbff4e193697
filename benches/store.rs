//! Call history at scale: fills a store with 100 000 calls (three events each), then measures
//! `GET /api/calls` latency over real HTTP (p50/p99: the first page, deep pages by cursor, a
//! number search that scans everything), one call with its events, analytics over 30 days,
//! and the file size per 1000 calls.
//!
//! `cargo bench --bench store` runs it at full size; under `cargo test` (no `--bench`) it runs
//! a 2000-call smoke version so the target stays correct.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)]

#[path = "../tests/console/http.rs"]
mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use earshot::api::{self, ApiState};
use earshot::call::{CallEvent, CallId, CallInfo, CallStats, Registry, Source};
use earshot::config::HttpConfig;
use earshot::metrics::Metrics;
use earshot::store::Store;
use tokio_util::sync::CancellationToken;

/// Calls written per transaction while filling.
const FILL_BATCH: usize = 1000;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let calls = if full { 100_000 } else { 2_000 };
    let samples = if full { 500 } else { 20 };
    let dir = std::env::temp_dir().join(format!("earshot-bench-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bench.redb");
    let store = Store::open(&path).unwrap();

    let started = Instant::now();
    let ids = fill(&store, calls);
    let fill_secs = started.elapsed().as_secs_f64();
    drop(store);
    let bytes = std::fs::metadata(&path).unwrap().len();
    let compacted = {
        let mut db = redb::Database::open(&path).unwrap();
        db.compact().unwrap();
        drop(db);
        std::fs::metadata(&path).unwrap().len()
    };
    let store = Store::open(&path).unwrap();
    println!(
        "store: {calls} calls (3 events each) written in {fill_secs:.1} s ({:.0} calls/s, {FILL_BATCH} per commit)",
        calls as f64 / fill_secs
    );
    let per_1000 = |b: u64| b as f64 / 1024.0 / (calls as f64 / 1000.0);
    println!(
        "store: file {:.1} MiB = {:.0} KiB per 1000 calls as written; {:.1} MiB = {:.0} KiB per 1000 after compaction",
        bytes as f64 / 1048576.0,
        per_1000(bytes),
        compacted as f64 / 1048576.0,
        per_1000(compacted),
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let http_config = HttpConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..HttpConfig::default()
    };
    let state = ApiState::new(
        &http_config,
        store.clone(),
        Arc::new(Registry::default()),
        Arc::new(Metrics::default()),
        shutdown.clone(),
    );
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(api::serve(
        listener,
        api::router(state),
        api::ConnLimits::from_config(&http_config),
        Arc::new(Metrics::default()),
        shutdown.clone(),
    ));

    let first_page = measure(samples, |_| check(addr, "/api/calls?limit=50"));
    report("GET /api/calls?limit=50 (newest page)", &first_page);
    let deep = measure(samples, |i| {
        let id = &ids[(i * 7919) % ids.len()];
        let ms = u64::from_str_radix(&id.as_str()[1..13], 16).unwrap();
        check(addr, &format!("/api/calls?limit=50&cursor={ms}.{id}"))
    });
    report("GET /api/calls?limit=50&cursor=… (random depth)", &deep);
    let filtered = measure(samples.min(50), |_| {
        check(
            addr,
            "/api/calls?limit=50&status=ended&source=sip&q=5550199",
        )
    });
    report(
        "GET /api/calls?q=…&status&source (few matches: full scan)",
        &filtered,
    );
    let one = measure(samples, |i| {
        check(
            addr,
            &format!("/api/calls/{}", ids[(i * 104_729) % ids.len()]),
        )
    });
    report("GET /api/calls/{id} (record + events)", &one);
    let analytics = measure(samples.min(50), |_| {
        check(addr, "/api/analytics?interval=day")
    });
    report("GET /api/analytics?interval=day (last 30 days)", &analytics);

    shutdown.cancel();
    drop(runtime);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `n` ended SIP calls spread over the last 100 days; returns their ids.
fn fill(store: &Store, n: usize) -> Vec<CallId> {
    let now = SystemTime::now();
    let span = Duration::from_secs(100 * 86_400);
    let metrics = Metrics::default();
    let mut ids = Vec::with_capacity(n);
    let mut batch = Vec::with_capacity(FILL_BATCH * 3);
    for i in 0..n {
        let at = now - span + span.mul_f64(i as f64 / n as f64);
        let id = CallId::new(at, rand::random());
        let info = CallInfo {
            id: id.clone(),
            source: if i % 10 == 0 {
                Source::Twilio
            } else {
                Source::Sip
            },
            external_id: format!("{:016x}@trunk.example.net", rand::random::<u64>()),
            caller: format!("+1555{:07}", rand::random::<u32>() % 10_000_000),
            callee: "+15550001000".to_owned(),
            started_at: at,
        };
        let stats = CallStats {
            packets_received: 3000,
            packets_sent: 3000,
            jitter_ms: 2.5,
            jitter_delay_ms: 60,
            ..CallStats::default()
        };
        batch.push(CallEvent::Started { info });
        batch.push(CallEvent::Answered {
            id: id.clone(),
            codec: earshot::call::Codec::Pcmu,
        });
        batch.push(CallEvent::Ended {
            id: id.clone(),
            reason: earshot::call::EndReason::RemoteHangup,
            stats,
        });
        ids.push(id);
        if batch.len() == FILL_BATCH * 3 {
            store
                .write_events(std::mem::take(&mut batch), &metrics)
                .unwrap();
        }
    }
    if !batch.is_empty() {
        store.write_events(batch, &metrics).unwrap();
    }
    ids
}

fn check(addr: SocketAddr, path: &str) {
    let r = http::get(addr, path);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
}

fn measure(samples: usize, mut f: impl FnMut(usize)) -> Vec<Duration> {
    f(0);
    let mut times: Vec<Duration> = (0..samples)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn report(what: &str, sorted: &[Duration]) {
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    println!(
        "{what}: p50 {:.2} ms, p99 {:.2} ms ({} samples)",
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        sorted.len()
    );
}
