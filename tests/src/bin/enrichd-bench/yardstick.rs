//! What figures are divided by so that runs on different machines compare, each measured in the
//! same run as the figure: a minimal loop of committed inserts on the same kind of database, and
//! a bare actix-web handler answering the same requests.

use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use e2e_tests::{Backend, TestDb};
use serde_json::json;

/// The yardstick of a database: single-row `INSERT`s, each its own committed transaction, for
/// about a second, on a fresh database of `backend` opened as the store opens it. Figures divided
/// by it compare across machines (how fast this disk and database commit).
pub async fn committed_inserts_per_s(backend: Backend) -> anyhow::Result<f64> {
    use sea_orm::{ConnectionTrait, Statement};
    let mut db = TestDb::create(backend).await?;
    let store = job_store::Store::connect(&db.url).await?;
    let conn = store.connection();
    conn.execute_unprepared("CREATE TABLE yardstick (id BIGINT PRIMARY KEY, v TEXT NOT NULL)").await?;
    let sql = match backend {
        Backend::Postgres => "INSERT INTO yardstick (id, v) VALUES ($1, $2)",
        Backend::Sqlite => "INSERT INTO yardstick (id, v) VALUES (?, ?)",
    };
    let b = conn.get_database_backend();
    let t = Instant::now();
    let mut n = 0i64;
    while t.elapsed() < Duration::from_secs(1) {
        conn.execute_raw(Statement::from_sql_and_values(b, sql, [n.into(), "yardstick".into()])).await?;
        n += 1;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    store.close().await?;
    db.drop_db().await;
    Ok(rate)
}

/// A bare actix-web server on loopback answering the service's webhook and job routes with canned
/// bodies (same actix-web, same worker count): the HTTP floor of this machine, so a latency or
/// throughput of the service divided by its own under the same load shows the service's cost.
pub struct BareHandler {
    port: u16,
    handle: ServerHandle,
}

impl BareHandler {
    /// Starts it; `GET /v1/jobs/{id}` answers `job` as JSON (pass a real job's, so the bytes match).
    pub async fn start(job: String) -> std::io::Result<BareHandler> {
        let job = web::Bytes::from(job);
        let server = HttpServer::new(move || {
            let job = job.clone();
            App::new()
                .route(
                    "/v1/webhooks/apollo/{batch_id}",
                    web::post().to(|body: web::Bytes| async move {
                        let _ = body.len();
                        HttpResponse::Ok().json(json!({"status": "received", "duplicate": false}))
                    }),
                )
                .route(
                    "/v1/jobs/{id}",
                    web::get().to(move || {
                        let job = job.clone();
                        async move { HttpResponse::Ok().content_type("application/json").body(job) }
                    }),
                )
        })
        .disable_signals()
        .bind(("127.0.0.1", 0))?;
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(BareHandler { port, handle })
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops it, letting requests in flight finish.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}
