//! The end-to-end harness: the real service (on port 0, a fresh database each), the Apollo
//! simulator and a callback receiver, all talking real HTTP on loopback.

use std::time::{Duration, Instant};

use apollo_sim::{SimConfig, SimHandle};
use enrichd::config::Config;
use enrichd::core::signing::SigningSecret;
use enrichd::demo::demo_config;
use enrichd::demo::receiver::CallbackReceiver;
use enrichd::startup::{Application, Running};
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;

/// The client key every test app accepts.
pub const CLIENT_KEY: &str = "e2e-client-key-0001";
/// The second client's API key, to check that clients only see their own jobs.
pub const OTHER_KEY: &str = "other-client-key";
/// The operator key every test app accepts on `/v1/admin/*`.
pub const ADMIN_KEY: &str = "e2e-admin-key-0001";

/// Runs each scenario (an `async fn(Backend)` in scope) as two tests, `<scenario>::sqlite` and
/// `<scenario>::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario($crate::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario($crate::Backend::Postgres).await;
            }
        }
    )+};
}

static PG_ADMIN_URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Points this process's PostgreSQL tests at another server (set once, before the first test app).
pub fn set_pg_admin_url(url: &str) {
    let _ = PG_ADMIN_URL.set(url.to_string());
}

/// The PostgreSQL server tests create their databases on: the override, else `TEST_PG_URL`, else
/// the local server.
pub fn pg_admin_url() -> String {
    PG_ADMIN_URL.get().cloned().unwrap_or_else(|| {
        std::env::var("TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
    })
}

/// Which database a test app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the PostgreSQL server at `TEST_PG_URL`.
    Postgres,
}

/// A fresh database, dropped by [`TestApp::stop`].
pub struct TestDb {
    /// Its URL.
    pub url: String,
    cleanup: Option<(String, String)>,
    dir: Option<std::path::PathBuf>,
}

impl TestDb {
    /// Creates one. PostgreSQL being unreachable is a failure, never a skip.
    pub async fn create(backend: Backend) -> anyhow::Result<TestDb> {
        let name = format!("enrichd_e2e_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir)?;
                let url = format!("sqlite://{}?mode=rwc", dir.join("e2e.db").display());
                Ok(TestDb { url, cleanup: None, dir: Some(dir) })
            }
            Backend::Postgres => {
                let admin = pg_admin_url();
                let conn =
                    Database::connect(&admin).await.map_err(|e| anyhow::anyhow!("PostgreSQL at {admin}: {e}"))?;
                conn.execute_unprepared(&format!("CREATE DATABASE {name}")).await?;
                conn.close().await?;
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin.clone());
                Ok(TestDb { url: format!("{base}/{name}"), cleanup: Some((admin, name)), dir: None })
            }
        }
    }

    /// Drops the database or removes the directory.
    pub async fn drop_db(&mut self) {
        if let Some((admin, name)) = self.cleanup.take()
            && let Ok(conn) = Database::connect(&admin).await
        {
            let _ = conn.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
            let _ = conn.close().await;
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub mod cluster;
pub mod process;
pub mod proxy;
pub mod rate_matrix;
pub mod stand;
pub mod truth;

/// Builds the service binary (a no-op when fresh) and returns its path beside this binary (a
/// test's in `target/<profile>/deps`, or a harness binary's such as `enrichd-soak`), in the same
/// profile. `ENRICHD_BIN` names another binary to run instead (a candidate build), unbuilt.
pub fn enrichd_binary() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("ENRICHD_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test binary path");
    let mut dir = exe.parent().expect("target directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target profile directory");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    // The same command as scripts/test.sh runs first, so this is a no-op there; without the
    // variables `cargo test` set for this test (build scripts such as ring's track
    // CARGO_MANIFEST_DIR), or it would rebuild every dependency, and the next outer build again.
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        let set_by_cargo_test =
            n == "OUT_DIR" || (n.starts_with("CARGO_") && !matches!(n.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR"));
        if set_by_cargo_test {
            build.env_remove(&name);
        }
    }
    build.args(["build", "--quiet", "--workspace", "--bins"]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo build");
    assert!(status.success(), "building enrichd failed");
    let bin = dir.join("enrichd");
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

/// A client of the API at some base URL with the test key (in-process app or a child process).
#[derive(Clone, Debug)]
pub struct Api {
    /// Base URL.
    pub base: String,
    /// HTTP client.
    pub http: reqwest::Client,
}

impl Api {
    /// A client for `base`.
    pub fn new(base: String) -> Api {
        Api { base, http: reqwest::Client::new() }
    }

    /// `POST /v1/jobs` with the test key.
    pub async fn submit(&self, body: &Value) -> reqwest::Response {
        self.submit_bytes(serde_json::to_vec(body).expect("JSON")).await.expect("submit")
    }

    /// `POST /v1/jobs` of a body already serialised as JSON, with the test key: for bodies too big
    /// to build as a `Value`, or deliberately malformed.
    pub async fn submit_bytes(&self, body: Vec<u8>) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(format!("{}/v1/jobs", self.base))
            .bearer_auth(CLIENT_KEY)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
    }

    /// `GET` a path with the test key, as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self.http.get(format!("{}{path}", self.base)).bearer_auth(CLIENT_KEY).send().await.expect("get");
        resp.json().await.expect("JSON")
    }

    /// Like [`Api::get_json`], but `None` while the service is unreachable (restarting).
    pub async fn try_get_json(&self, path: &str) -> Option<Value> {
        let resp = self.http.get(format!("{}{path}", self.base)).bearer_auth(CLIENT_KEY).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    /// Polls the job until it is completed, failed or cancelled (riding out restarts).
    pub async fn wait_done(&self, id: &str, timeout: Duration) -> Value {
        self.try_wait_done(id, timeout).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Api::wait_done`], but an error instead of a panic when the job is not done in time.
    pub async fn try_wait_done(&self, id: &str, timeout: Duration) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            let job = self.try_get_json(&format!("/v1/jobs/{id}")).await;
            if let Some(job) = &job
                && matches!(job["status"].as_str(), Some("completed" | "failed" | "cancelled"))
            {
                return Ok(job.clone());
            }
            anyhow::ensure!(started.elapsed() < timeout, "job {id} not done after {timeout:?}: {job:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every person of a job, following the cursor.
    pub async fn all_people(&self, id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.get_json(&format!("/v1/jobs/{id}/people?limit=100&after={after}")).await;
            out.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["next_after"].as_str() {
                Some(a) => after = a.to_string(),
                None => return out,
            }
        }
    }
}

/// A running service with its simulator and callback receiver.
pub struct TestApp {
    /// The service.
    pub app: Running,
    /// The simulator.
    pub sim: SimHandle,
    /// The callback receiver.
    pub receiver: CallbackReceiver,
    /// An HTTP client.
    pub http: reqwest::Client,
    db: TestDb,
}

/// A test app before its service is built: a fresh database, the simulator, the callback receiver
/// and the service's configuration pointed at them. [`TestApp::spawn_with`] and the benchmark
/// runner both start from here, each setting its own keys and timings in `config` before
/// [`TestSetup::start`].
pub struct TestSetup {
    /// The simulator, running.
    pub sim: SimHandle,
    /// The callback receiver, running.
    pub receiver: CallbackReceiver,
    /// The service's configuration: `demo_config` for this database, simulator and receiver.
    pub config: Config,
    db: TestDb,
}

impl TestSetup {
    /// Creates the database and starts the simulator and the callback receiver.
    pub async fn create(backend: Backend, sim: SimConfig) -> anyhow::Result<TestSetup> {
        enrichd::startup::install_tls();
        let db = TestDb::create(backend).await?;
        let minute = Duration::from_millis(sim.minute_ms);
        let sim = apollo_sim::spawn(sim).await?;
        let (signer, signing_text) = SigningSecret::generate();
        let receiver = CallbackReceiver::start(signer).await?;
        let config = demo_config(db.url.clone(), sim.url().to_string(), &sim.config().api_key, &signing_text, minute);
        Ok(TestSetup { sim, receiver, config, db })
    }

    /// Builds and starts the service with `config`; with `webhooks`, Apollo's deliveries come to it
    /// (`PUBLIC_BASE_URL` is its own address), without, results are polled.
    pub async fn start(self, webhooks: bool) -> anyhow::Result<TestApp> {
        let TestSetup { sim, receiver, config, db } = self;
        let mut app = Application::build(config).await?;
        if webhooks {
            app.set_public_base_url(format!("http://127.0.0.1:{}", app.port()));
        }
        let app = app.start()?;
        Ok(TestApp { app, sim, receiver, http: reqwest::Client::new(), db })
    }
}

/// Simulator settings for fast tests: a 1-second "minute", short delivery delays.
pub fn fast_sim() -> SimConfig {
    SimConfig {
        minute_ms: 1000,
        delivery_delay_ms: 100,
        delivery_jitter_ms: 100,
        retry_backoff_ms: 50,
        ..SimConfig::default()
    }
}

impl TestApp {
    /// Starts everything with Apollo webhooks on; `tweak` adjusts the service's configuration.
    pub async fn spawn(backend: Backend, sim: SimConfig, tweak: impl FnOnce(&mut Config)) -> anyhow::Result<TestApp> {
        TestApp::spawn_with(backend, sim, true, tweak).await
    }

    /// Starts everything; without `webhooks` there is no `PUBLIC_BASE_URL` and results are polled.
    pub async fn spawn_with(
        backend: Backend,
        sim: SimConfig,
        webhooks: bool,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<TestApp> {
        let mut setup = TestSetup::create(backend, sim).await?;
        let config = &mut setup.config;
        config.api_keys = Some(enrichd::startup::secret(&format!("e2e={CLIENT_KEY},other={OTHER_KEY}")));
        config.admin_keys = Some(enrichd::startup::secret(&format!("ops={ADMIN_KEY}")));
        config.callback_schedule = enrichd::config::Schedule(vec![Duration::from_millis(100); 4]);
        tweak(config);
        setup.start(webhooks).await
    }

    /// The service's URL.
    pub fn url(&self) -> String {
        self.app.url()
    }

    /// The API client for this app.
    pub fn api(&self) -> Api {
        Api { base: self.url(), http: self.http.clone() }
    }

    /// `POST /v1/jobs` with the test key.
    pub async fn submit(&self, body: &Value) -> reqwest::Response {
        self.api().submit(body).await
    }

    /// `GET` a path with the test key, as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.api().get_json(path).await
    }

    /// Polls the job until it is completed, failed or cancelled.
    pub async fn wait_done(&self, id: &str, timeout: Duration) -> Value {
        self.api().wait_done(id, timeout).await
    }

    /// Every person of a job, following the cursor.
    pub async fn all_people(&self, id: &str) -> Vec<Value> {
        self.api().all_people(id).await
    }

    /// Stops everything and drops the database.
    pub async fn stop(mut self) {
        self.app.stop().await;
        self.receiver.stop().await;
        self.sim.stop().await;
        self.db.drop_db().await;
    }
}
