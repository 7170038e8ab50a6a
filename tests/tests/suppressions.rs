//! The do-not-enrich list end to end, on SQLite and PostgreSQL, through real HTTP with the real
//! simulator: a listed email, LinkedIn URL, Apollo id and domain (and an entry added after the
//! job was submitted) are never in any call the simulator received, and the people end
//! `suppressed` with 0 credits, counted on the job; the global list applies to every client, a
//! client's list only to it; erasing a job with `suppress=true` keeps its people out of the next
//! job; and no text column of any table holds the plaintext of a listed identifier.

use std::time::Duration;

use e2e_tests::{ADMIN_KEY, Backend, CLIENT_KEY, OTHER_KEY, TestApp, fast_sim, on_both_backends};
use reqwest::Method;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};

on_both_backends!(listed_people_are_never_sent, erasing_with_suppress_keeps_people_out_of_the_next_job);

const DONE: Duration = Duration::from_secs(60);

/// A request with `key` and an optional body (JSON, or text with its content type).
async fn call(t: &TestApp, method: Method, key: &str, path: &str, body: Option<(&str, String)>) -> (u16, Value) {
    let mut req = t.http.request(method, format!("{}{path}", t.url())).bearer_auth(key);
    if let Some((ct, b)) = body {
        req = req.header("content-type", ct).body(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn add(t: &TestApp, key: &str, query: &str, body: Value) -> (u16, Value) {
    call(t, Method::POST, key, &format!("/v1/suppressions{query}"), Some(("application/json", body.to_string()))).await
}

async fn submit_as(t: &TestApp, key: &str, people: Value) -> String {
    let (status, job) =
        call(t, Method::POST, key, "/v1/jobs", Some(("application/json", json!({"people": people}).to_string()))).await;
    assert_eq!(status, 202, "{job}");
    job["id"].as_str().unwrap().to_owned()
}

/// Every detail the simulator received in a `bulk_match` call, as lower-cased JSON text.
fn sent_details(t: &TestApp) -> Vec<String> {
    t.sim
        .calls()
        .iter()
        .filter(|c| c.route.ends_with("bulk_match"))
        .flat_map(|c| c.received.iter().map(|d| d.detail.to_string().to_lowercase()))
        .collect()
}

/// Every text (and blob, as text) value of every table, one string per row.
async fn every_row_as_text(t: &TestApp) -> Vec<String> {
    let db = t.app.state.store.connection();
    let backend = db.get_database_backend();
    let columns_sql = match backend {
        DbBackend::Postgres => {
            "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS d FROM information_schema.columns \
             WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        }
        _ => {
            "SELECT m.name AS t, p.name AS c, p.type AS d FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' ORDER BY m.name, p.cid"
        }
    };
    let cols = db.query_all_raw(Statement::from_string(backend, columns_sql)).await.unwrap();
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    for r in cols {
        let (table, col, ty): (String, String, String) =
            (r.try_get("", "t").unwrap(), r.try_get("", "c").unwrap(), r.try_get("", "d").unwrap());
        let expr = match (backend, ty.as_str()) {
            (DbBackend::Postgres, "bytea") => format!("encode(\"{col}\", 'escape')"),
            (DbBackend::Postgres, _) => format!("\"{col}\"::text"),
            _ => format!("CAST(\"{col}\" AS TEXT)"),
        };
        match tables.last_mut() {
            Some((t, exprs)) if *t == table => exprs.push(expr),
            _ => tables.push((table, vec![expr])),
        }
    }
    assert!(tables.iter().any(|(t, _)| t == "suppressions") && tables.iter().any(|(t, _)| t == "people"));
    let mut rows = Vec::new();
    for (table, exprs) in tables {
        let joined = exprs.iter().map(|e| format!("COALESCE({e}, '')")).collect::<Vec<_>>().join(" || '|' || ");
        // As bytes: SQLite's blobs (uuids, raw bodies) are no UTF-8; plaintext in them still shows.
        let sql = match backend {
            DbBackend::Postgres => format!("SELECT convert_to({joined}, 'UTF8') AS row_text FROM \"{table}\""),
            _ => format!("SELECT CAST(({joined}) AS BLOB) AS row_text FROM \"{table}\""),
        };
        for r in db.query_all_raw(Statement::from_string(backend, sql)).await.unwrap() {
            let bytes: Vec<u8> = r.try_get("", "row_text").unwrap();
            rows.push(format!("{table}: {}", String::from_utf8_lossy(&bytes).to_lowercase()));
        }
    }
    rows
}

async fn listed_people_are_never_sent(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.unwrap();
    // Nothing is sent until every entry is in, the last one added after the job was submitted.
    t.app.state.store.set_pause(Some("adding entries".into())).await.unwrap();

    // One of each kind, through each way in: one add, a JSON import, a CSV import, the admin's global list.
    let (status, one) = add(&t, CLIENT_KEY, "", json!({"email": "Blocked.Person@Acme-Corp.com"})).await;
    assert_eq!(status, 201, "{one}");
    assert_eq!((one["added"].as_bool(), one["entry"]["kind"].as_str()), (Some(true), Some("email")));
    assert_eq!(add(&t, CLIENT_KEY, "", json!({"email": "blocked.person@acme-corp.com"})).await.0, 200, "present");
    let (status, imported) = call(
        &t,
        Method::POST,
        CLIENT_KEY,
        "/v1/suppressions/import",
        Some((
            "application/json",
            json!([{"linkedin_url": "https://www.linkedin.com/in/Linked-Blocked/"}, {"email": "nope"}, {}]).to_string(),
        )),
    )
    .await;
    assert_eq!(status, 200, "{imported}");
    assert_eq!((imported["added"].as_u64(), imported["invalid"].as_u64()), (Some(1), Some(2)), "{imported}");
    assert_eq!(imported["errors"][0]["index"], 1);
    assert_eq!(imported["errors"][0]["field"], "email");
    let csv = "Name,apollo_id\nX,ABCDEF0123456789ABCDEF01\nY,not-an-id\n".to_owned();
    let (status, imported) =
        call(&t, Method::POST, CLIENT_KEY, "/v1/suppressions/import", Some(("text/csv", csv))).await;
    assert_eq!(status, 200, "{imported}");
    assert_eq!((imported["added"].as_u64(), imported["invalid"].as_u64()), (Some(1), Some(1)), "{imported}");
    assert_eq!(
        add(&t, CLIENT_KEY, "?scope=global", json!({"domain": "x.io"})).await.0,
        403,
        "global needs an admin key"
    );
    let (status, global) = add(&t, ADMIN_KEY, "", json!({"domain": "https://www.Blocked-Domain.io/"})).await;
    assert_eq!(status, 201, "{global}");
    assert_eq!(global["entry"]["scope"], "global");
    assert_eq!(add(&t, CLIENT_KEY, "", json!({"email": "a@b.io", "domain": "b.io"})).await.0, 422, "one identifier");
    assert_eq!(add(&t, CLIENT_KEY, "", json!({"email": "a@b.io", "domain": ""})).await.0, 422, "an empty field counts");
    for path in ["/v1/suppressions/import", "/v1/suppressions/remove"] {
        assert_eq!(call(&t, Method::DELETE, CLIENT_KEY, path, None).await.0, 405, "{path} takes POST");
    }

    let people = json!([
        {"email": "blocked.person@acme-corp.com", "external_id": "email"},
        {"linkedin_url": "linkedin.com/in/linked-blocked", "first_name": "L", "external_id": "linkedin"},
        {"id": "abcdef0123456789abcdef01", "external_id": "apollo-id"},
        {"email": "someone@blocked-domain.io", "external_id": "email-domain"},
        {"first_name": "Dom", "last_name": "Ain", "domain": "blocked-domain.io", "external_id": "domain"},
        {"email": "late.entry@northwind-labs.com", "external_id": "late"},
        {"email": "free.one@northwind-labs.com", "external_id": "free-1"},
        {"email": "free.two@northwind-labs.com", "external_id": "free-2"},
    ]);
    // The dry run counts the listed people (the late entry is not in yet) and charges nothing for them.
    let (status, estimate) = call(
        &t,
        Method::POST,
        CLIENT_KEY,
        "/v1/jobs",
        Some(("application/json", json!({"people": people, "dry_run": true}).to_string())),
    )
    .await;
    assert_eq!(status, 200, "{estimate}");
    assert_eq!((estimate["suppressed"].as_i64(), estimate["calls"].as_i64()), (Some(5), Some(1)), "{estimate}");
    assert_eq!(estimate["worst_case_credits"]["total"], 3, "three people sent at 1 credit: {estimate}");

    let id = submit_as(&t, CLIENT_KEY, people).await;
    assert_eq!(add(&t, CLIENT_KEY, "", json!({"email": "Late.Entry@northwind-labs.com"})).await.0, 201);
    t.app.state.store.set_pause(None).await.unwrap();
    t.app.state.wake.dispatch.notify_one();
    let job = t.wait_done(&id, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["counts"]["suppressed"], 6, "{job}");

    let sent = sent_details(&t);
    assert_eq!(sent.len(), 2, "only the two free people: {sent:?}");
    for plain in ["acme-corp.com", "linked-blocked", "abcdef0123456789abcdef01", "blocked-domain.io", "late.entry"] {
        assert!(!sent.iter().any(|d| d.contains(plain)), "{plain} reached Apollo: {sent:?}");
    }
    let people = t.all_people(&id).await;
    for p in &people {
        let free = p["input"]["external_id"].as_str().unwrap().starts_with("free");
        assert_eq!(p["status"] == "suppressed", !free, "{p}");
        if !free {
            assert_eq!(p["credits_consumed"].as_f64(), Some(0.0), "{p}");
        }
    }

    // Another client: the first client's list does not apply to it, the global one does.
    let other = submit_as(
        &t,
        OTHER_KEY,
        json!([{"email": "blocked.person@acme-corp.com"}, {"email": "else@blocked-domain.io"}]),
    )
    .await;
    let job = call(&t, Method::GET, OTHER_KEY, &format!("/v1/jobs/{other}"), None).await.1;
    assert_eq!(job["counts"]["suppressed"], 1, "{job}");
    let mut done = job;
    while done["status"] != "completed" {
        tokio::time::sleep(Duration::from_millis(50)).await;
        done = call(&t, Method::GET, OTHER_KEY, &format!("/v1/jobs/{other}"), None).await.1;
    }
    let sent = sent_details(&t);
    assert_eq!(sent.iter().filter(|d| d.contains("blocked.person@acme-corp.com")).count(), 1, "{sent:?}");
    assert!(!sent.iter().any(|d| d.contains("blocked-domain.io")));

    // The lists: kinds and hash prefixes only; each scope its own.
    let (_, page) = call(&t, Method::GET, CLIENT_KEY, "/v1/suppressions?limit=2", None).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    let after = page["next_after"].as_str().expect("a next page").to_owned();
    let (_, rest) = call(&t, Method::GET, CLIENT_KEY, &format!("/v1/suppressions?after={after}"), None).await;
    assert_eq!(rest["entries"].as_array().unwrap().len(), 2, "{rest}");
    let (_, global) = call(&t, Method::GET, ADMIN_KEY, "/v1/suppressions", None).await;
    assert_eq!(global["entries"].as_array().unwrap().len(), 1);
    assert_eq!(global["entries"][0]["kind"], "domain");

    // The scan sees plaintext where it is: the jobs' own inputs hold the people until erased.
    let before = every_row_as_text(&t).await;
    assert!(before.iter().any(|r| r.starts_with("people: ") && r.contains("blocked.person@acme-corp.com")));
    // Erase both jobs: the people's own inputs go, and then nothing holds a listed identifier.
    assert_eq!(call(&t, Method::DELETE, CLIENT_KEY, &format!("/v1/jobs/{id}"), None).await.0, 200);
    assert_eq!(call(&t, Method::DELETE, OTHER_KEY, &format!("/v1/jobs/{other}"), None).await.0, 200);
    let rows = every_row_as_text(&t).await;
    assert!(rows.iter().any(|r| r.starts_with("suppressions: ")), "the scan reads the list");
    for plain in ["blocked.person", "linked-blocked", "abcdef0123456789abcdef01", "blocked-domain", "late.entry"] {
        let found: Vec<&String> = rows.iter().filter(|r| r.contains(plain)).collect();
        assert!(found.is_empty(), "{plain} stored in plaintext: {found:?}");
    }

    // Removing: by identifier given again, and by id.
    let body = Some(("application/json", json!({"email": "LATE.ENTRY@northwind-labs.com"}).to_string()));
    assert_eq!(call(&t, Method::POST, CLIENT_KEY, "/v1/suppressions/remove", body.clone()).await.0, 200);
    assert_eq!(call(&t, Method::POST, CLIENT_KEY, "/v1/suppressions/remove", body).await.0, 404);
    let entry = global["entries"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&t, Method::DELETE, CLIENT_KEY, &format!("/v1/suppressions/{entry}"), None).await.0,
        404,
        "not its list"
    );
    assert_eq!(call(&t, Method::DELETE, ADMIN_KEY, &format!("/v1/suppressions/{entry}"), None).await.0, 200);
    t.stop().await;
}

async fn erasing_with_suppress_keeps_people_out_of_the_next_job(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.unwrap();
    let people: Vec<Value> = (0..4).map(|i| json!({"email": format!("gone{i}@northwind-labs.com")})).collect();
    let first = submit_as(&t, CLIENT_KEY, json!(people)).await;
    t.wait_done(&first, DONE).await;
    let sent_before = sent_details(&t);
    assert_eq!(sent_before.iter().filter(|d| d.contains("gone")).count(), 4);
    let matched: Vec<String> =
        t.sim.calls().iter().flat_map(|c| c.received.iter().filter_map(|d| d.apollo_id.clone())).collect();

    let (status, erased) = call(&t, Method::DELETE, CLIENT_KEY, &format!("/v1/jobs/{first}?suppress=true"), None).await;
    assert_eq!(status, 200, "{erased}");
    assert!(erased["erased_at"].is_string());
    let (_, list) = call(&t, Method::GET, CLIENT_KEY, "/v1/suppressions", None).await;
    let kinds: Vec<&str> = list["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "email").count(), 4, "{list}");
    assert_eq!(kinds.iter().filter(|k| **k == "apollo_id").count(), matched.len(), "{list}");

    // The same people again, by email and by the Apollo ids they were matched to, plus one new.
    let mut again = people.clone();
    again.extend(matched.iter().map(|id| json!({"id": id})));
    again.push(json!({"email": "new.person@northwind-labs.com"}));
    let second = submit_as(&t, CLIENT_KEY, json!(again)).await;
    let job = t.wait_done(&second, DONE).await;
    assert_eq!(job["counts"]["suppressed"].as_u64(), Some(4 + matched.len() as u64), "{job}");
    let sent = sent_details(&t);
    assert_eq!(sent.len(), sent_before.len() + 1, "only the new person: {sent:?}");
    assert!(sent.last().unwrap().contains("new.person"));
    assert_eq!(sent.iter().filter(|d| d.contains("gone")).count(), 4, "none of them a second time");
    // Another client is not affected by this client's list.
    let other = submit_as(&t, OTHER_KEY, json!([{"email": "gone0@northwind-labs.com"}])).await;
    let mut job = Value::Null;
    while job["status"] != "completed" {
        tokio::time::sleep(Duration::from_millis(50)).await;
        job = call(&t, Method::GET, OTHER_KEY, &format!("/v1/jobs/{other}"), None).await.1;
    }
    assert_eq!(job["counts"]["suppressed"], 0, "{job}");
    t.stop().await;
}
