//! A callback receiver: an HTTP server on loopback that records every final callback and checks
//! its Standard Webhooks signature. The demo and the end-to-end tests use it as the client.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use tokio::sync::Notify;

use crate::core::signing::SigningSecret;

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: i64,
    /// `webhook-signature`.
    pub signature: String,
    /// Whether the signature verified against the receiver's secret.
    pub verified: bool,
    /// The raw body.
    pub body: Vec<u8>,
    /// The status the receiver answered.
    pub answered: u16,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Statuses to answer, in order, before answering 200 for good.
    script: Vec<u16>,
    /// `Location` sent with 3xx answers (tests that redirects are not followed).
    location: Option<String>,
}

/// A running receiver.
pub struct CallbackReceiver {
    url: String,
    secret: SigningSecret,
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    server: actix_web::dev::ServerHandle,
}

impl CallbackReceiver {
    /// Starts a receiver on `127.0.0.1:0` that checks signatures with `secret`.
    pub async fn start(secret: SigningSecret) -> std::io::Result<CallbackReceiver> {
        CallbackReceiver::start_on(0, secret).await
    }

    /// Starts a receiver on a given loopback port (to bring one back where an earlier one stopped).
    pub async fn start_on(port: u16, secret: SigningSecret) -> std::io::Result<CallbackReceiver> {
        let state = Arc::new(Mutex::new(State::default()));
        let notify = Arc::new(Notify::new());
        let (s, n, sec) = (state.clone(), notify.clone(), secret.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new((s.clone(), n.clone(), sec.clone())))
                .app_data(web::PayloadConfig::new(256 * 1024 * 1024))
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", port))?;
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(CallbackReceiver { url: format!("http://127.0.0.1:{port}/callback"), secret, state, notify, server: handle })
    }

    /// The URL to give as `callback_url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The secret it verifies with.
    pub fn secret(&self) -> &SigningSecret {
        &self.secret
    }

    /// Answer these statuses to the next requests, in order, then 200.
    pub fn script(&self, statuses: &[u16]) {
        self.state.lock().expect("receiver state").script = statuses.to_vec();
    }

    /// Sends `Location: url` with every 3xx answer from now on.
    pub fn redirect_to(&self, url: &str) {
        self.state.lock().expect("receiver state").location = Some(url.to_string());
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("receiver state").received.clone()
    }

    /// Waits until at least `n` requests arrived or `timeout` passes; returns what arrived.
    pub async fn wait_for(&self, n: usize, timeout: std::time::Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.received();
            }
        }
    }

    /// Stops the server.
    pub async fn stop(&self) {
        self.server.stop(false).await;
    }
}

type Shared = (Arc<Mutex<State>>, Arc<Notify>, SigningSecret);

async fn receive(req: HttpRequest, body: web::Bytes, data: web::Data<Shared>) -> HttpResponse {
    let (state, notify, secret) = data.get_ref();
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let id = header("webhook-id");
    let timestamp = header("webhook-timestamp").parse().unwrap_or(0);
    let signature = header("webhook-signature");
    let verified = secret.verify(&id, timestamp, &body, &signature);
    let (answered, location) = {
        let mut st = state.lock().expect("receiver state");
        let answered = if st.script.is_empty() { 200 } else { st.script.remove(0) };
        st.received.push(Received {
            id,
            timestamp,
            signature,
            verified,
            body: body.to_vec(),
            answered,
            at: Instant::now(),
        });
        (answered, st.location.clone().filter(|_| (300..400).contains(&answered)))
    };
    notify.notify_waiters();
    let mut response =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(answered).unwrap_or(actix_web::http::StatusCode::OK));
    if let Some(location) = location {
        response.insert_header(("location", location));
    }
    response.body(if answered < 300 { "ok" } else { "try again" })
}
