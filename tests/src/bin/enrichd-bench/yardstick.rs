//! What figures are divided by so that runs on different machines compare, each measured in the
//! same run as the figure: a minimal loop of committed inserts on the same kind of database, and
//! a bare actix-web handler answering the same requests.

use std::time::{Duration, Instant};

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
/// A bare actix-web server: the webhook route, answered without reading the body further; its port.
pub async fn bare_server() -> std::io::Result<(u16, actix_web::dev::ServerHandle)> {
    let server = HttpServer::new(|| {
        App::new().route(
            "/v1/webhooks/apollo/{batch_id}",
            web::post().to(|body: web::Bytes| async move {
                let _ = body.len();
                HttpResponse::Ok().json(json!({"status": "received", "duplicate": false}))
            }),
        )
    })
    .disable_signals()
    .bind(("127.0.0.1", 0))?;
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok((port, handle))
}
