//! Building and running the application: the HTTP server and the workers, on one store.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{ServerHandle, Service};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use apollo_client::ApolloClient;
use job_store::writer::group_commit::{AnswerWriter, DeliveryWriter};
use job_store::writer::thread::WriterThread;
use job_store::{Store, StoreOptions};
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinHandle;
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Config;
use crate::core::keys::KeySet;
use crate::core::signing::SigningSecret;
use crate::error::ApiError;
use crate::shutdown::{self, Drain};
use crate::state::{AppState, Wakers};
use crate::telemetry;
use crate::v1::endpoints::{admin, docs, events, health, jobs, suppressions, usage, webhooks};
use crate::worker::{self, dispatch::Dispatcher};

/// Installs the process-wide TLS provider once (reqwest is built without one).
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A built application, bound to its port, not yet running.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

/// How long after a shutdown signal the HTTP server keeps serving at least, so that load
/// balancers polling `/readyz` stop sending before it closes (cut to a quarter of the grace).
const OUT_OF_ROTATION: Duration = Duration::from_secs(1);

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
    /// Runs until the process exits: calls answering during a drain keep their leases.
    heartbeat: JoinHandle<()>,
    /// PostgreSQL: wakes this replica's dispatcher when another one takes work.
    listener: Option<JoinHandle<()>>,
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
        let store = match &config.suppression_key {
            Some(k) => store.with_suppression_key(
                rules::suppression::SuppressionKey::new(k.expose_secret()).context("SUPPRESSION_KEY")?,
            ),
            None => {
                tracing::warn!("SUPPRESSION_KEY is not set: the do-not-enrich list is off");
                store
            }
        };
        let apollo = ApolloClient::with_timeout(&config.apollo_base_url, key, config.apollo_timeout)?;
        // The pause is shared by every replica: one of them restarting does not lift it, an
        // operator's `POST /v1/admin/resume` does.
        if let Some(reason) = store.pause_reason().await? {
            tracing::warn!(%reason, "dispatch is paused; POST /v1/admin/resume lifts the pause");
        }
        if store.holds_process_lock() {
            // Nobody else can hold a lease on this store: the last process's are dead now, not
            // a lease later.
            let released = store.release_orphans(store.clock_now().await?).await?;
            if released > 0 {
                metrics::counter!("enrichd_possible_double_charges_total").increment(released);
                tracing::warn!(batches = released, "calls the last process left unanswered: outcome unknown, retrying");
            }
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
            drain: Drain::default(),
            held: Arc::default(),
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
                .service(events::events)
                .service(usage::usage)
                .service(webhooks::apollo)
                .service(health::healthz)
                .service(health::readyz)
                .service(admin::resume)
                .service(suppressions::add)
                .service(suppressions::import)
                .service(suppressions::list)
                .service(suppressions::remove_by_id)
                .service(suppressions::remove)
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
        // Requests still running when the drain ends get this long to finish.
        .shutdown_timeout(2)
        .listen(self.listener)?
        .run();
        let server_handle = server.handle();
        let server_task = tokio::spawn(server);
        let metrics_server = metrics_server.map(|m| (m.handle(), tokio::spawn(m)));
        let mut workers = vec![
            tokio::spawn(worker::dispatch::run(state.clone(), dispatcher.clone())),
            tokio::spawn(worker::rescue::run(state.clone())),
            tokio::spawn(worker::ingest::run(state.clone())),
            tokio::spawn(worker::reconcile::run(state.clone())),
            tokio::spawn(worker::callbacks::run(state.clone())),
            tokio::spawn(worker::person_events::run(state.clone())),
        ];
        // Work submitted to another replica wakes this one's dispatcher at once.
        let listener = state.store.is_shared().then(|| {
            let s = state.clone();
            tokio::spawn(async move { s.store.listen_for_work(|| s.wake.dispatch.notify_one()).await })
        });
        if state.config.retention_days.is_some() {
            workers.push(tokio::spawn(worker::retention::run(state.clone())));
        }
        let heartbeat = tokio::spawn(worker::heartbeat::run(state.clone()));
        Ok(Running {
            port,
            state,
            dispatcher,
            server: server_handle,
            server_task,
            workers,
            heartbeat,
            listener,
            metrics_server,
        })
    }
}

impl Running {
    /// The API's base URL on loopback.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether every worker task is still running (none panicked or returned).
    pub fn workers_alive(&self) -> bool {
        self.workers.iter().chain(&self.listener).all(|w| !w.is_finished())
            && !self.heartbeat.is_finished()
            && !self.server_task.is_finished()
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully ([`Running::shutdown`] within
    /// `SHUTDOWN_GRACE`); a second signal exits at once. Returns early if the server fails.
    pub async fn serve_until_signalled(mut self) -> anyhow::Result<()> {
        let signal = tokio::select! {
            result = &mut self.server_task => {
                for w in self.workers.iter().chain([&self.heartbeat]).chain(&self.listener) {
                    w.abort();
                }
                result??;
                return Ok(());
            }
            signal = shutdown::signalled() => signal,
        };
        let grace = self.state.config.shutdown_grace;
        tracing::info!(signal, ?grace, "shutdown begins");
        tokio::select! {
            _ = self.shutdown(grace) => {}
            again = shutdown::signalled() => {
                tracing::warn!(signal = again, "second signal: exiting at once");
                std::process::exit(1);
            }
        }
        Ok(())
    }

    /// Graceful shutdown, each step logged: `/readyz` answers 503; dispatch stops claiming and
    /// the other workers stop starting work; calls already sent are answered and recorded and
    /// callbacks already started finish, while batches claimed but not sent and callbacks not
    /// started are handed back; task leases are released; then the HTTP server (which served
    /// webhooks and reads throughout) stops. Whatever is still running at `grace` is left as a
    /// crash leaves it (its lease lapses). Returns whether everything finished in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let signalled = Instant::now();
        let deadline = signalled + grace;
        // Kept for closing the HTTP server's connections.
        let reserve = (grace / 10).min(Duration::from_secs(2));
        let state = &self.state;
        state.drain.begin();
        tracing::info!("shutdown 1/5: not ready (/readyz answers 503); webhooks and reads are still served");
        if let Some(listener) = &self.listener {
            listener.abort();
        }
        for mut w in self.workers {
            let left = deadline.saturating_duration_since(Instant::now() + reserve);
            if tokio::time::timeout(left, &mut w).await.is_err() {
                w.abort();
            }
        }
        tracing::info!(
            in_flight = state.drain.in_flight(),
            "shutdown 2/5: dispatch stopped claiming; callbacks, ingest, reconcile and retention start no new work"
        );
        let left = deadline.saturating_duration_since(Instant::now() + reserve);
        let settled = state.drain.settled(left).await;
        if settled {
            tracing::info!("shutdown 3/5: every call sent was answered and recorded; unsent work handed back");
        } else {
            tracing::warn!(
                in_flight = state.drain.in_flight(),
                "shutdown 3/5: the grace ran out: what is still in flight is left to its lease (an unknown outcome)"
            );
        }
        match state.store.release_tasks(&state.owner).await {
            Ok(n) => tracing::info!(tasks = n, "shutdown 4/5: task leases released"),
            Err(e) => tracing::warn!(error = %e, "shutdown 4/5: could not release task leases; they will lapse"),
        }
        self.heartbeat.abort();
        // A balancer takes the replica out of rotation when it sees `/readyz` fail; requests it
        // sends until then are still served rather than refused.
        tokio::time::sleep_until((signalled + OUT_OF_ROTATION.min(grace / 4)).into()).await;
        self.server.stop(true).await;
        let _ = self.server_task.await;
        if let Some((handle, task)) = self.metrics_server {
            handle.stop(true).await;
            let _ = task.await;
        }
        tracing::info!(clean = settled, "shutdown 5/5: exiting");
        settled
    }

    /// Stops the server and the workers; in-flight calls are abandoned to lease expiry, as a crash would.
    pub async fn stop(self) {
        for w in self.workers.iter().chain([&self.heartbeat]).chain(&self.listener) {
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
