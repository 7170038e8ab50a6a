//! A small load balancer in front of several replicas, as production would have: the shared
//! `PUBLIC_BASE_URL`, so Apollo's webhooks (and clients) reach any live replica. Round robin over
//! the replicas whose `/readyz` answered 200 at the last check (every 100 ms, as a balancer's
//! health check: a replica shutting down answers 503 and gets no new requests); a replica that
//! refuses the connection (down) is skipped for the next one. Each request opens its own
//! connection, so none is sent on a connection a stopping replica has just closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use tokio::task::JoinHandle;

struct Backends {
    urls: Vec<String>,
    ready: Vec<AtomicBool>,
    next: AtomicUsize,
    http: reqwest::Client,
}

/// The running balancer.
pub struct Proxy {
    /// Its base URL.
    pub url: String,
    server: ServerHandle,
    task: JoinHandle<std::io::Result<()>>,
    health: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and spreads requests over `backends` (base URLs).
    pub async fn start(backends: Vec<String>) -> anyhow::Result<Proxy> {
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
        let ready = backends.iter().map(|_| AtomicBool::new(true)).collect();
        let data = web::Data::new(Backends { urls: backends, ready, next: AtomicUsize::new(0), http });
        let checked = data.clone().into_inner();
        let health = tokio::spawn(async move {
            loop {
                for (url, ready) in checked.urls.iter().zip(&checked.ready) {
                    let probe = checked.http.get(format!("{url}/readyz")).timeout(Duration::from_secs(1)).send().await;
                    ready.store(probe.is_ok_and(|r| r.status().is_success()), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        // Bodies as big as the service takes (a 20,000-person job is over actix's 256 KiB default).
        let payload = web::PayloadConfig::new(256 * 1024 * 1024);
        let server = HttpServer::new(move || {
            App::new().app_data(data.clone()).app_data(payload.clone()).default_service(web::to(forward))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        Ok(Proxy { url: format!("http://127.0.0.1:{port}"), server: handle, task: tokio::spawn(server), health })
    }

    /// Stops it.
    pub async fn stop(self) {
        self.health.abort();
        self.server.stop(true).await;
        let _ = self.task.await;
    }
}

async fn forward(req: HttpRequest, body: web::Bytes, backends: web::Data<Backends>) -> HttpResponse {
    let b: Arc<Backends> = backends.into_inner();
    let first = b.next.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).expect("method");
    let n = b.urls.len();
    // Ready replicas first, in turn; the others only if none of those answers.
    let mut order: Vec<usize> = (0..n).map(|i| (first + i) % n).collect();
    order.sort_by_key(|i| !b.ready[*i].load(Ordering::Relaxed));
    for i in order {
        let base = &b.urls[i];
        let mut out = b.http.request(method.clone(), format!("{base}{path}")).body(body.clone());
        for (name, value) in req.headers() {
            if !matches!(name.as_str(), "host" | "content-length" | "connection") {
                out = out.header(name.as_str(), value.as_bytes());
            }
        }
        let resp = match out.send().await {
            Ok(r) => r,
            // Down: the next replica takes it, as a load balancer's health check would arrange.
            Err(e) if e.is_connect() => continue,
            Err(e) => return HttpResponse::BadGateway().body(e.to_string()),
        };
        let mut answer =
            HttpResponse::build(actix_web::http::StatusCode::from_u16(resp.status().as_u16()).expect("status"));
        for (name, value) in resp.headers() {
            if !matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection") {
                answer.insert_header((name.as_str(), value.as_bytes()));
            }
        }
        return answer.body(resp.bytes().await.unwrap_or_default());
    }
    HttpResponse::BadGateway().body("no replica answered")
}
