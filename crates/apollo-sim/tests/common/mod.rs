//! Shared helpers of the simulator's integration tests: a fast configuration, a client, and a
//! webhook receiver that records what it gets.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apollo_client::{ApolloClient, PersonDetail};
use apollo_sim::{SimConfig, SimHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A configuration with millisecond delays and no randomness in the population rates that the
/// tests assert on.
pub fn fast_config() -> SimConfig {
    SimConfig {
        match_rate: 1.0,
        placeholder_email_rate: 0.0,
        delivery_delay_ms: 50,
        delivery_jitter_ms: 0,
        retry_backoff_ms: 10,
        reorder_window_ms: 2_000,
        ..SimConfig::default()
    }
}

/// A simulator and a client for it.
pub async fn start(config: SimConfig) -> (SimHandle, ApolloClient) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = config.api_key.clone();
    let sim = apollo_sim::spawn(config).await.expect("simulator starts");
    let client = ApolloClient::new(sim.url(), key.into()).expect("client builds");
    (sim, client)
}

/// The bulk_match route's `[minute, hour, day]` in the simulator's `api_usage_stats` answer, as
/// `(limit, consumed, left_over)` read off the wire (the key is a stringified route pair).
pub async fn bulk_match_usage(sim: &SimHandle, api_key: &str) -> [(Option<i64>, i64, Option<i64>); 3] {
    let stats: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/v1/usage_stats/api_usage_stats", sim.url()))
        .header("x-api-key", api_key)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("usage stats answer")
        .json()
        .await
        .expect("usage stats JSON");
    let entry = stats
        .as_object()
        .and_then(|o| {
            o.iter().find(|(k, _)| {
                serde_json::from_str::<Vec<String>>(k).ok() == Some(vec!["api/v1/people".into(), "bulk_match".into()])
            })
        })
        .map(|(_, v)| v.clone())
        .expect("the bulk_match route");
    ["minute", "hour", "day"].map(|w| {
        let v = &entry[w];
        (v["limit"].as_i64(), v["consumed"].as_i64().unwrap_or(0), v["left_over"].as_i64())
    })
}

/// `n` distinct people identified by email.
pub fn people(tag: &str, n: usize) -> Vec<PersonDetail> {
    (0..n)
        .map(|i| PersonDetail { email: Some(format!("{tag}.person{i}@acme-{tag}.com")), ..Default::default() })
        .collect()
}

/// One POST the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    /// Path and query, as sent.
    pub target: String,
    /// The body.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

/// A minimal HTTP/1.1 receiver on 127.0.0.1 answering every request with a settable status.
#[derive(Clone)]
pub struct Receiver {
    /// Base URL.
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    /// Starts on a free port, answering 200.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let (g, s, q) = (got.clone(), status.clone(), script.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, g.clone(), s.clone(), q.clone()));
            }
        });
        Receiver { url, got, status, script }
    }

    /// Makes every later request answer `status`.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Answers the next requests with these statuses, in order, before the settable one.
    pub fn script(&self, statuses: &[u16]) {
        self.script.lock().unwrap().extend(statuses);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived (or `timeout` passes), then returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        while self.received().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.received()
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    script: Arc<Mutex<VecDeque<u16>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // One request per connection: read the head, then Content-Length bytes of body.
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + 4 + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let target = head.lines().next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or_default().to_string();
        let body = buf[head_end + 4..head_end + 4 + length].to_vec();
        got.lock().unwrap().push(Received { target, body, at: Instant::now() });
        let scripted = script.lock().unwrap().pop_front();
        let code = scripted.unwrap_or_else(|| status.load(Ordering::SeqCst));
        let reply = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
        return;
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
