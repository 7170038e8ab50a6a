//! Building and running the application: the HTTP server and the workers, on one store.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::{ServerHandle, Service};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use apollo_client::ApolloClient;
use job_store::{Store, StoreOptions};
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinHandle;
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Config;
use crate::core::signing::SigningSecret;
use crate::error::ApiError;
use crate::group_commit::{AnswerWriter, DeliveryWriter};
use crate::state::{AppState, Wakers};
use crate::telemetry;
use crate::v1::auth::KeySet;
use crate::v1::endpoints::{admin, docs, health, jobs, usage, webhooks};
use crate::worker::{self, dispatch::Dispatcher};
use crate::writer_thread::WriterThread;

/// Installs the process-wide TLS provider once (reqwest is built without one).
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A built application, bound to its port, not yet running.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

/// A running application: the server and its workers.
pub struct Running {
    /// The port the API listens on.
    pub port: u16,
    /// Shared state (the store, for tests and the demo).
    pub state: AppState,
    /// The dispatcher's counters.
    pub dispatcher: Arc<Dispatcher>,
    server: ServerHandle,
    server_task: JoinHandle<std::io::Result<()>>,
    workers: Vec<JoinHandle<()>>,
    metrics_server: Option<(ServerHandle, JoinHandle<std::io::Result<()>>)>,
}

impl Application {
    /// Connects the store (migrating unless disabled), builds the client and binds the port.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        install_tls();
        let key = config.apollo_api_key.clone().context("APOLLO_API_KEY is required")?;
        let (keys, admin_keys) = parse_keys(&config)?;
        let signer = config.callback_signing_secret.as_ref().context(
            "CALLBACK_SIGNING_SECRET is required: callbacks are always signed (e.g. `whsec_$(openssl rand -base64 32)`)",
        )?;
        let signer = SigningSecret::parse(signer.expose_secret()).context("CALLBACK_SIGNING_SECRET")?;
        let options =
            StoreOptions { run_migrations: !config.skip_migrations, single_process: true, ..Default::default() };
        let store = Store::connect_with(&config.database_url, options)
            .await
            .with_context(|| format!("connecting to the database ({})", redact_url(&config.database_url)))?;
        let apollo = ApolloClient::with_timeout(&config.apollo_base_url, key, config.apollo_timeout)?;
        // The pause is shared by every replica: one of them restarting does not lift it, an
        // operator's `POST /v1/admin/resume` does.
        if let Some(reason) = store.pause_reason().await? {
            tracing::warn!(%reason, "dispatch is paused; POST /v1/admin/resume lifts the pause");
        }
        let listener = TcpListener::bind(config.bind).with_context(|| format!("binding {}", config.bind))?;
        let writer = Arc::new(WriterThread::start(&store).context("starting the writer thread")?);
        let state = AppState {
            deliveries: DeliveryWriter::start(store.clone(), &writer),
            answers: AnswerWriter::start(store.clone(), &writer),
            writer,
            webhook_secrets: Arc::default(),
            store,
            config: Arc::new(config),
            apollo,
            keys: Arc::new(keys),
            admin_keys: Arc::new(admin_keys),
            signer,
            wake: Arc::new(Wakers::default()),
            owner: format!("enrichd-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        };
        Ok(Application { listener, state })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Sets the URL Apollo calls back on, once the port is known (tests and the demo bind port 0).
    pub fn set_public_base_url(&mut self, url: String) {
        Arc::make_mut(&mut self.state.config).public_base_url = Some(url);
    }

    /// Starts the HTTP server and the workers on the current runtime.
    pub fn start(self) -> anyhow::Result<Running> {
        let port = self.port();
        let state = self.state;
        let data = web::Data::new(state.clone());
        // The system page reads the dispatcher's limiter.
        let dispatcher = Dispatcher::new(&state);
        let dispatcher_data = web::Data::from(dispatcher.clone());
        telemetry::handle();
        telemetry::describe();
        let separate_metrics = state.config.metrics_bind.is_some();
        let metrics_server = match state.config.metrics_bind {
            Some(addr) => {
                let data = data.clone();
                let server = HttpServer::new(move || App::new().app_data(data.clone()).service(telemetry::scrape))
                    .workers(1)
                    .disable_signals()
                    .bind(addr)
                    .with_context(|| format!("binding METRICS_BIND {addr}"))?
                    .run();
                Some(server)
            }
            None => None,
        };
        let server = HttpServer::new(move || {
            // One list: each handler registered here is routed and documented.
            let (app, doc) = App::new()
                .into_utoipa_app()
                .openapi(docs::ApiDoc::openapi())
                .service(jobs::create)
                .service(jobs::list)
                .service(jobs::get)
                .service(jobs::people)
                .service(jobs::cancel)
                .service(jobs::erase)
                .service(jobs::redeliver)
                .service(jobs::retry)
                .service(usage::usage)
                .service(webhooks::apollo)
                .service(health::healthz)
                .service(health::readyz)
                .service(admin::resume)
                .split_for_parts();
            app.app_data(data.clone())
                .app_data(dispatcher_data.clone())
                .app_data(web::Data::new(docs::PathMethods::from_doc(&doc)))
                .app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::invalid_field("query", e.to_string()).into()))
                .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::NotFound("route").into()))
                .wrap_fn(|req, srv| {
                    // Log the path without the query: webhook URLs carry their token there.
                    let (method, path, started) = (req.method().clone(), req.path().to_string(), Instant::now());
                    let request_id = request_id(req.headers());
                    let span = tracing::info_span!("request", request_id = %request_id);
                    let fut = srv.call(req).instrument(span.clone());
                    async move {
                        let mut res = fut.await?;
                        let status = res.status().as_u16();
                        telemetry::record_request(res.request().match_pattern().as_deref(), method.as_str(), status, started.elapsed());
                        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&request_id) {
                            res.headers_mut().insert(actix_web::http::header::HeaderName::from_static("x-request-id"), v);
                        }
                        span.in_scope(|| tracing::info!(%method, %path, status, ms = started.elapsed().as_millis() as u64, "request"));
                        Ok(res)
                    }
                })
                .configure(crate::ui::routes)
                .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", doc))
                .route("/docs", web::get().to(|| async { HttpResponse::Found().insert_header(("location", "/docs/")).finish() }))
                .configure(|cfg| {
                    if !separate_metrics {
                        cfg.service(telemetry::scrape);
                    }
                })
                .default_service(web::to(docs::unrouted))
        })
        .disable_signals()
        .listen(self.listener)?
        .run();
        let server_handle = server.handle();
        let server_task = tokio::spawn(server);
        let metrics_server = metrics_server.map(|m| (m.handle(), tokio::spawn(m)));
        let mut workers = vec![
            tokio::spawn(worker::dispatch::run(state.clone(), dispatcher.clone())),
            tokio::spawn(worker::ingest::run(state.clone())),
            tokio::spawn(worker::reconcile::run(state.clone())),
            tokio::spawn(worker::callbacks::run(state.clone())),
        ];
        if state.store.is_shared() {
            // Work submitted to another replica wakes this one's dispatcher at once.
            let s = state.clone();
            workers.push(tokio::spawn(async move { s.store.listen_for_work(|| s.wake.dispatch.notify_one()).await }));
        }
        if state.config.retention_days.is_some() {
            workers.push(tokio::spawn(worker::retention::run(state.clone())));
        }
        Ok(Running { port, state, dispatcher, server: server_handle, server_task, workers, metrics_server })
    }
}

impl Running {
    /// The API's base URL on loopback.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether every worker task is still running (none panicked or returned).
    pub fn workers_alive(&self) -> bool {
        self.workers.iter().all(|w| !w.is_finished()) && !self.server_task.is_finished()
    }

    /// Waits until the server stops (a signal handled by the caller, or an error).
    pub async fn wait(self) -> anyhow::Result<()> {
        let result = self.server_task.await;
        for w in &self.workers {
            w.abort();
        }
        result??;
        Ok(())
    }

    /// Stops the server and the workers; in-flight calls are abandoned to lease expiry, as a crash would.
    pub async fn stop(self) {
        for w in &self.workers {
            w.abort();
        }
        self.server.stop(true).await;
        let _ = self.server_task.await;
        if let Some((handle, task)) = self.metrics_server {
            handle.stop(true).await;
            let _ = task.await;
        }
    }
}

/// The client and admin keys, checked before anything else starts: clients exist, and no key is both.
fn parse_keys(config: &Config) -> anyhow::Result<(KeySet, KeySet)> {
    let text = |s: &Option<SecretString>| s.as_ref().map(|s| s.expose_secret().to_string());
    let keys = KeySet::parse("ENRICHD_API_KEYS", text(&config.api_keys).as_deref())?;
    if keys.is_empty() {
        anyhow::bail!("ENRICHD_API_KEYS is empty: no client could authenticate");
    }
    let admin_keys = KeySet::parse("ENRICHD_ADMIN_KEYS", text(&config.admin_keys).as_deref())?;
    if admin_keys.shares_a_key_with(&keys) {
        anyhow::bail!("a key is in both ENRICHD_API_KEYS and ENRICHD_ADMIN_KEYS: give operators their own keys");
    }
    Ok((keys, admin_keys))
}

/// The caller's `X-Request-Id` when it is short visible ASCII, else a new one.
fn request_id(headers: &actix_web::http::header::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// A database URL without its password, for error messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A `SecretString` from text.
pub fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}
