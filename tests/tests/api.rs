//! The HTTP contract (docs/DESIGN.md §5) against the real service on SQLite and PostgreSQL: a table of
//! bad requests, each answered with its documented 4xx and the `{"error": {code, message,
//! details?}}` shape and changing no row of any table (every failing case is reported); the happy-path basics (submit, read back, list, health, the
//! OpenAPI document and the docs page); and the webhook route's token checks.

use std::time::Duration;

use apollo_sim::SimConfig;
use e2e_tests::{ADMIN_KEY, Backend, CLIENT_KEY, OTHER_KEY, TestApp, fast_sim, on_both_backends};
use futures_util::FutureExt;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;

use job_store::entities::{inbound_delivery, person};
use reqwest::Method;
use sea_orm::{ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, Statement};
use serde_json::{Value, json};

/// The body limit this file's app runs with.
const MAX_BODY: usize = 16 * 1024;
/// The people limit per job this file's app runs with.
const MAX_PEOPLE: usize = 5;

/// Every row of every table (all columns, as text, sorted per table), and what each client's job
/// list shows: an INSERT, UPDATE or DELETE anywhere changes it.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    tables: BTreeMap<String, Vec<String>>,
    listed: Value,
    listed_other: Value,
}

async fn snapshot(t: &TestApp) -> Snapshot {
    Snapshot {
        tables: table_rows(t).await,
        listed: get_as(t, CLIENT_KEY, "/v1/jobs").await.1,
        listed_other: get_as(t, OTHER_KEY, "/v1/jobs").await.1,
    }
}

async fn text_column(t: &TestApp, sql: String) -> Vec<String> {
    let db = t.app.state.store.connection();
    let rows = db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await.expect("query");
    rows.iter().map(|r| r.try_get_by_index::<Option<String>>(0).expect("text").unwrap_or_default()).collect()
}

/// Tables the background workers write whatever the requests do.
const WORKER_TABLES: &[&str] = &["rate_limiters", "rate_limit_calls", "task_leases", "replicas"];

async fn table_rows(t: &TestApp) -> BTreeMap<String, Vec<String>> {
    let backend = t.app.state.store.connection().get_database_backend();
    let tables = match backend {
        DbBackend::Sqlite => {
            text_column(t, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'".into())
                .await
        }
        _ => {
            text_column(
                t,
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'".into(),
            )
            .await
        }
    };
    assert!(tables.len() >= 5, "the store's tables: {tables:?}");
    // The workers' own bookkeeping (the shared limiter, task leases, replica heartbeats) moves on its own clock; it is
    // no client data, so it is not part of "nothing changed".
    let tables: Vec<String> = tables.into_iter().filter(|t| !WORKER_TABLES.contains(&t.as_str())).collect();
    let mut out = BTreeMap::new();
    for table in tables {
        let sql = match backend {
            DbBackend::Sqlite => {
                let columns = text_column(t, format!("SELECT name FROM pragma_table_info('{table}')")).await;
                let quoted: Vec<String> = columns.iter().map(|c| format!("quote(\"{c}\")")).collect();
                format!("SELECT {} FROM \"{table}\"", quoted.join(" || '|' || "))
            }
            _ => format!("SELECT r::text FROM \"{table}\" r"),
        };
        let mut rows = text_column(t, sql).await;
        rows.sort();
        out.insert(table, rows);
    }
    out
}

async fn get_as(t: &TestApp, key: &str, path: &str) -> (u16, Value) {
    let resp = t.http.get(format!("{}{path}", t.url())).bearer_auth(key).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// One bad request and the answer the contract documents for it.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    /// The bearer key, if any.
    key: Option<&'static str>,
    /// `Authorization` as sent verbatim (overrides `key`).
    authorization: Option<&'static str>,
    content_type: Option<&'static str>,
    idempotency_key: Option<String>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    /// Further checks on the `error` object.
    check: Option<fn(&Value)>,
}

impl Case {
    /// `POST /v1/jobs` with the test key, JSON content type, and these bytes.
    fn submit(name: &'static str, body: impl Into<Vec<u8>>, status: u16, code: &'static str) -> Case {
        Case {
            name,
            method: Method::POST,
            path: "/v1/jobs".into(),
            key: Some(CLIENT_KEY),
            authorization: None,
            content_type: Some("application/json"),
            idempotency_key: None,
            body: body.into(),
            status,
            code,
            check: None,
        }
    }

    /// A JSON job body that must be refused with 422.
    fn invalid(name: &'static str, body: Value, check: fn(&Value)) -> Case {
        Case { check: Some(check), ..Case::submit(name, body.to_string(), 422, "validation_failed") }
    }

    /// A request with the test key and no body.
    fn call(name: &'static str, method: Method, path: String, status: u16, code: &'static str) -> Case {
        Case { method, path, content_type: None, ..Case::submit(name, Vec::new(), status, code) }
    }

    fn key(self, key: Option<&'static str>) -> Case {
        Case { key, ..self }
    }

    async fn run(&self, t: &TestApp) {
        let mut req = t.http.request(self.method.clone(), format!("{}{}", t.url(), self.path));
        if let Some(auth) = self.authorization {
            req = req.header("authorization", auth);
        } else if let Some(key) = self.key {
            req = req.bearer_auth(key);
        }
        if let Some(ct) = self.content_type {
            req = req.header("content-type", ct);
        }
        if let Some(k) = &self.idempotency_key {
            req = req.header("idempotency-key", k);
        }
        if !self.body.is_empty() || self.method == Method::POST {
            req = req.body(self.body.clone());
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{}: {e}", self.name));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, self.status, "{}: answered {status}: {text}", self.name);
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text}", self.name));
        let error = &body["error"];
        assert_eq!(error["code"], self.code, "{}: {body:#}", self.name);
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{}: a message: {body:#}", self.name);
        if let Some(check) = self.check {
            check(error);
        }
    }
}

/// `n` people that each have a usable identifier.
fn people(n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"email": format!("api{i}@northwind-labs.com")})).collect()
}

/// The `index` of each problem in a 422's `details`.
fn indexes(error: &Value) -> Vec<Option<u64>> {
    error["details"].as_array().expect("details").iter().map(|p| p["index"].as_u64()).collect()
}

/// The `field` of each problem in a 422's `details`.
fn fields(error: &Value) -> Vec<String> {
    error["details"].as_array().expect("details").iter().map(|p| p["field"].as_str().unwrap().to_string()).collect()
}

/// Requests refused before any job exists.
fn bad_submissions() -> Vec<Case> {
    let good = json!({"people": people(2)}).to_string();
    // Parsed no deeper than serde_json's recursion limit (128): refused at the 129th `[`.
    let deep = "[".repeat(10_000);
    let oversized = json!({"people": people(1), "metadata": {"blob": "x".repeat(MAX_BODY * 2)}}).to_string();
    let mut not_utf8 = br#"{"people": [{"email": ""#.to_vec();
    not_utf8.extend_from_slice(&[0xff, 0xfe, 0xfd]);
    not_utf8.extend_from_slice(br#"@northwind-labs.com"}]}"#);
    let callback = |url: &str| json!({"people": people(1), "callback_url": url});
    let only_callback_url: fn(&Value) = |e| {
        assert_eq!(fields(e), ["callback_url"], "{e:#}");
        assert_eq!(indexes(e), [None]);
    };
    vec![
        Case::submit("no Authorization", good.clone(), 401, "unauthorized").key(None),
        Case::submit("unknown key", good.clone(), 401, "unauthorized").key(Some("not-a-known-key")),
        Case {
            authorization: Some("Basic ZTJlOmUyZQ=="),
            ..Case::submit("not a bearer", good.clone(), 401, "unauthorized")
        },
        Case {
            content_type: Some("text/plain"),
            ..Case::submit("text/plain", good.clone(), 415, "unsupported_media_type")
        },
        Case { content_type: None, ..Case::submit("no content type", good.clone(), 415, "unsupported_media_type") },
        Case::submit("invalid JSON", r#"{"people": [{"email": "a@b.io"}"#, 400, "bad_request"),
        Case::submit("invalid UTF-8", not_utf8, 400, "bad_request"),
        Case {
            check: Some(|e| assert!(e["message"].as_str().unwrap().contains("recursion limit"), "{e:#}")),
            ..Case::submit("10,000 nested arrays", deep, 400, "bad_request")
        },
        Case::submit("empty body", "", 400, "bad_request"),
        Case {
            check: Some(|e| assert!(e["message"].as_str().unwrap().contains(&MAX_BODY.to_string()), "{e:#}")),
            ..Case::submit("over the body limit", oversized, 413, "payload_too_large")
        },
        Case {
            idempotency_key: Some("k".repeat(256)),
            ..Case::submit("Idempotency-Key too long", good.clone(), 422, "validation_failed")
        },
        Case::invalid("body not an object", json!([{"email": "a@b.io"}]), |e| {
            assert_eq!(fields(e), [""], "{e:#}");
        }),
        Case::invalid("people missing", json!({"reveal_phone_number": true}), |e| {
            assert_eq!(fields(e), ["people"], "{e:#}");
        }),
        Case::invalid("people not an array", json!({"people": {"email": "a@b.io"}}), |e| {
            assert_eq!(fields(e), ["people"], "{e:#}");
            assert!(e["details"][0]["message"].as_str().unwrap().contains("array"), "{e:#}");
        }),
        Case::invalid("people empty", json!({"people": []}), |e| {
            assert_eq!(fields(e), ["people"], "{e:#}");
            assert!(e["details"][0]["message"].as_str().unwrap().contains("empty"), "{e:#}");
        }),
        Case::invalid("people over max_job_people", json!({"people": people(MAX_PEOPLE + 1)}), |e| {
            assert_eq!(fields(e), ["people"], "{e:#}");
            assert!(e["details"][0]["message"].as_str().unwrap().contains("limit per job is 5"), "{e:#}");
        }),
        Case::invalid(
            "people without a usable identifier at 1 and 3",
            json!({"people": [
                {"email": "ok0@northwind-labs.com"},
                {"first_name": "Only", "last_name": "Name"},
                {"linkedin_url": "https://www.linkedin.com/in/ok-2"},
                {"external_id": "crm-3", "organization_name": "   "},
                {"first_name": "Dana", "last_name": "Okafor", "domain": "northwind-labs.com"},
            ]}),
            |e| {
                assert_eq!(indexes(e), [Some(1), Some(3)], "{e:#}");
                assert_eq!(fields(e), ["people[1]", "people[3]"], "{e:#}");
                assert!(e["details"][0]["message"].as_str().unwrap().contains("usable identifier"), "{e:#}");
                assert!(e["message"].as_str().unwrap().contains("2 problem"), "{e:#}");
            },
        ),
        Case::invalid("unknown job field", json!({"people": people(1), "priority": "high"}), |e| {
            assert_eq!(fields(e), ["priority"], "{e:#}");
            assert_eq!(e["details"][0]["message"], "unknown field");
        }),
        Case::invalid(
            "unknown person field",
            json!({"people": [{"email": "a@b.io"}, {"email": "c@d.io", "title": "CTO"}]}),
            |e| {
                assert_eq!(fields(e), ["people[1].title"], "{e:#}");
                assert_eq!(indexes(e), [Some(1)]);
            },
        ),
        Case::invalid("flag not a boolean", json!({"people": people(1), "reveal_phone_number": "yes"}), |e| {
            assert_eq!(fields(e), ["reveal_phone_number"], "{e:#}");
            assert!(e["details"][0]["message"].as_str().unwrap().contains("boolean"), "{e:#}");
        }),
        Case::invalid("callback_url to loopback", callback("https://127.0.0.1:8443/cb"), only_callback_url),
        Case::invalid("callback_url to 10.x", callback("https://10.20.30.40/cb"), only_callback_url),
        Case::invalid(
            "callback_url to cloud metadata",
            callback("https://169.254.169.254/latest/meta-data/"),
            only_callback_url,
        ),
        Case::invalid("callback_url over plain http", callback("http://hooks.example.com/cb"), |e| {
            assert_eq!(fields(e), ["callback_url"], "{e:#}");
            assert!(e["details"][0]["message"].as_str().unwrap().contains("https"), "{e:#}");
        }),
        Case::invalid(
            "webhook_url given by the client",
            json!({"people": people(1), "webhook_url": "https://x.io/"}),
            |e| {
                assert!(fields(e).iter().all(|f| f == "webhook_url"), "{e:#}");
            },
        ),
        // A 422 with an idempotency key must not reserve the key (checked by the happy path).
        Case {
            idempotency_key: Some("retry-after-fix".into()),
            ..Case::invalid("422 with an Idempotency-Key", json!({"people": [{"name": "No Company"}]}), |e| {
                assert_eq!(indexes(e), [Some(0)], "{e:#}");
            })
        },
        Case::call("list without a key", Method::GET, "/v1/jobs".into(), 401, "unauthorized").key(None),
        Case::call("list with an admin key", Method::GET, "/v1/jobs".into(), 403, "forbidden").key(Some(ADMIN_KEY)),
        // An admin key may read usage (everyone's, or one client's): tests/tests/vendors.rs.
        Case::call(
            "usage naming a client with a client key",
            Method::GET,
            "/v1/usage?client=other".into(),
            422,
            "validation_failed",
        ),
        Case::call("admin resume with a client key", Method::POST, "/v1/admin/resume".into(), 403, "forbidden"),
        Case::call("list limit 0", Method::GET, "/v1/jobs?limit=0".into(), 422, "validation_failed"),
        Case::call("list limit 0 without a key", Method::GET, "/v1/jobs?limit=0".into(), 401, "unauthorized").key(None),
        Case::call("usage of no date without a key", Method::GET, "/v1/usage?from=x".into(), 401, "unauthorized")
            .key(None),
        Case::call("list limit 1001", Method::GET, "/v1/jobs?limit=1001".into(), 422, "validation_failed"),
        Case::call("list limit not a number", Method::GET, "/v1/jobs?limit=ten".into(), 422, "validation_failed"),
        Case::call("list after not a job id", Method::GET, "/v1/jobs?after=yesterday".into(), 422, "validation_failed"),
        Case::call("job not found", Method::GET, format!("/v1/jobs/{}", uuid::Uuid::new_v4()), 404, "not_found"),
        Case::call("job id not a uuid", Method::GET, "/v1/jobs/42".into(), 404, "not_found"),
        Case::call(
            "cancel of no job",
            Method::POST,
            format!("/v1/jobs/{}/cancel", uuid::Uuid::new_v4()),
            404,
            "not_found",
        ),
        Case::call("unknown route", Method::GET, "/v1/nothing-here".into(), 404, "not_found"),
        Case::call("admin resume without a key", Method::POST, "/v1/admin/resume".into(), 401, "unauthorized")
            .key(None),
    ]
}

/// Requests refused once a job (`id`, with batch `batch_id` and its token) exists.
fn bad_requests_about(id: &str, batch_id: uuid::Uuid, token: &str) -> Vec<Case> {
    let webhook = |path: String, status, code| {
        Case {
            content_type: Some("application/json"),
            body: br#"{"people": []}"#.to_vec(),
            ..Case::call("", Method::POST, path, status, code)
        }
        .key(None)
    };
    let wrong_token = "0".repeat(token.len());
    vec![
        Case {
            idempotency_key: Some("order-1".into()),
            check: Some(|e| assert!(e["message"].as_str().unwrap().contains("different request body"), "{e:#}")),
            ..Case::submit(
                "Idempotency-Key reused with another body",
                json!({"people": people(2)}).to_string(),
                409,
                "conflict",
            )
        },
        Case::call("another client's job", Method::GET, format!("/v1/jobs/{id}"), 404, "not_found")
            .key(Some(OTHER_KEY)),
        Case::call("another client's people", Method::GET, format!("/v1/jobs/{id}/people"), 404, "not_found")
            .key(Some(OTHER_KEY)),
        Case::call("another client's cancel", Method::POST, format!("/v1/jobs/{id}/cancel"), 404, "not_found")
            .key(Some(OTHER_KEY)),
        Case::call("people without a key", Method::GET, format!("/v1/jobs/{id}/people"), 401, "unauthorized").key(None),
        Case::call("people limit 0", Method::GET, format!("/v1/jobs/{id}/people?limit=0"), 422, "validation_failed"),
        Case::call(
            "people limit 0 with an admin key",
            Method::GET,
            format!("/v1/jobs/{id}/people?limit=0"),
            403,
            "forbidden",
        )
        .key(Some(ADMIN_KEY)),
        Case::call(
            "people limit 5000",
            Method::GET,
            format!("/v1/jobs/{id}/people?limit=5000"),
            422,
            "validation_failed",
        ),
        Case::call(
            "people after not an index",
            Method::GET,
            format!("/v1/jobs/{id}/people?after=x"),
            422,
            "validation_failed",
        ),
        Case {
            name: "webhook for an unknown batch",
            ..webhook(format!("/v1/webhooks/apollo/{}?token={token}", uuid::Uuid::new_v4()), 404, "not_found")
        },
        Case {
            name: "webhook batch not a uuid",
            ..webhook(format!("/v1/webhooks/apollo/b-1?token={token}"), 404, "not_found")
        },
        Case {
            name: "webhook with a wrong token",
            ..webhook(format!("/v1/webhooks/apollo/{batch_id}?token={wrong_token}"), 401, "unauthorized")
        },
        Case {
            name: "webhook with a token of another length",
            ..webhook(format!("/v1/webhooks/apollo/{batch_id}?token=abc"), 401, "unauthorized")
        },
        Case {
            name: "webhook with a client key instead of a token",
            ..webhook(format!("/v1/webhooks/apollo/{batch_id}"), 401, "unauthorized").key(Some(CLIENT_KEY))
        },
        Case {
            name: "webhook without a token",
            ..webhook(format!("/v1/webhooks/apollo/{batch_id}"), 401, "unauthorized")
        },
    ]
}

on_both_backends!(bad_requests_get_their_4xx_and_change_nothing);

/// Runs every case, each followed by `after` (its "changed nothing" checks); returns one line per
/// failing case, so a run shows all of them, not only the first.
async fn failing_cases<'a, F, Fut>(t: &'a TestApp, cases: &'a [Case], after: F) -> Vec<String>
where
    F: Fn(&'a Case) -> Fut,
    Fut: std::future::Future<Output = ()> + 'a,
{
    let mut failed = Vec::new();
    for case in cases {
        let outcome = AssertUnwindSafe(async {
            case.run(t).await;
            after(case).await;
        })
        .catch_unwind()
        .await;
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{}: {message}", case.name));
        }
    }
    failed
}

async fn bad_requests_get_their_4xx_and_change_nothing(backend: Backend) {
    let t = TestApp::spawn(backend, SimConfig { latency_ms: 0, ..fast_sim() }, |c| {
        c.max_body_bytes = MAX_BODY;
        c.max_job_people = MAX_PEOPLE;
        c.callback_allow_http = false;
        c.callback_allow_hosts = vec![];
    })
    .await
    .expect("test app");

    // Before any job: an empty store, and every bad request leaves it so.
    let empty = snapshot(&t).await;
    for table in ["jobs", "people", "batches", "batch_people", "inbound_deliveries", "callback_deliveries"] {
        assert_eq!(empty.tables.get(table), Some(&Vec::new()), "{table} is empty at first");
    }
    assert_eq!(empty.listed, json!({"data": [], "next_after": null}));
    assert_eq!(empty.listed_other, empty.listed);
    let cases = bad_submissions();
    let failed = failing_cases(&t, &cases, |case| {
        let (t, empty) = (&t, &empty);
        async move { assert_eq!(snapshot(t).await, *empty, "{} changed the store", case.name) }
    })
    .await;
    assert!(failed.is_empty(), "{} of {} cases failed:\n{}", failed.len(), cases.len(), failed.join("\n"));
    assert_eq!(t.sim.calls().len(), 0, "nothing reached Apollo");

    // Health, readiness, the API document and the docs page.
    let health = t.http.get(format!("{}/healthz", t.url())).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
    let ready = t.http.get(format!("{}/readyz", t.url())).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"status": "ready", "database": "ok", "dispatch_paused": null})
    );
    let openapi = t.http.get(format!("{}/openapi.json", t.url())).send().await.unwrap();
    assert_eq!(openapi.status(), 200);
    assert!(openapi.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let doc: Value = openapi.json().await.unwrap();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')), "{:#}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("paths");
    for p in ["/v1/jobs", "/v1/jobs/{id}", "/v1/jobs/{id}/people", "/v1/jobs/{id}/cancel", "/healthz", "/readyz"] {
        assert!(paths.contains_key(p), "openapi.json lacks {p}: {:?}", paths.keys().collect::<Vec<_>>());
    }
    assert!(paths.keys().any(|p| p.starts_with("/v1/webhooks/apollo/")));
    assert!(paths["/v1/jobs"]["post"]["responses"].as_object().unwrap().contains_key("422"));
    let docs = t.http.get(format!("{}/docs/", t.url())).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = docs.text().await.unwrap().to_ascii_lowercase();
    assert!(html.contains("<html") && html.contains("swagger"), "{html}");
    let redirect = t.http.get(format!("{}/docs", t.url())).send().await.unwrap();
    assert_eq!(redirect.status(), 200, "/docs leads to the page");

    // The happy path: 202 with the job, read back the same, listed for its client only.
    let body = json!({
        "people": [
            {"email": " Dana.Okafor@Northwind-Labs.com ", "external_id": 7},
            {"first_name": "Tomasz", "last_name": "Nowak", "organization_name": "Kestrel Robotics"},
            {"linkedin_url": "https://www.linkedin.com/in/li-wei-2"},
        ],
        "reveal_personal_emails": true,
        "metadata": {"campaign": "q4"},
    });
    let resp = t
        .http
        .post(format!("{}/v1/jobs", t.url()))
        .bearer_auth(CLIENT_KEY)
        .header("idempotency-key", "order-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert!(resp.headers().get("idempotent-replayed").is_none());
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().expect("id").to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    assert!(matches!(created["status"].as_str(), Some("queued" | "running")), "{created:#}");
    assert_eq!(created["total"], 3);
    let c = &created["counts"];
    assert_eq!(c["queued"].as_i64().unwrap() + c["submitted"].as_i64().unwrap(), 3, "{created:#}");
    assert_eq!(created["options"]["reveal_personal_emails"], true);
    assert_eq!(created["options"]["reveal_phone_number"], false);
    assert_eq!(created["metadata"], json!({"campaign": "q4"}));
    let (status, got) = get_as(&t, CLIENT_KEY, &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&got["id"], &got["total"], &got["options"], &got["metadata"]),
        (&created["id"], &created["total"], &created["options"], &created["metadata"])
    );
    assert_eq!(got["created_at"], created["created_at"]);
    let (_, listed) = get_as(&t, CLIENT_KEY, "/v1/jobs").await;
    assert_eq!(listed["data"].as_array().unwrap().iter().map(|j| j["id"].clone()).collect::<Vec<_>>(), [json!(id)]);
    assert_eq!(get_as(&t, OTHER_KEY, "/v1/jobs").await.1, json!({"data": [], "next_after": null}));

    // The key of the refused 422 above was not taken by it.
    let retried = t
        .http
        .post(format!("{}/v1/jobs", t.url()))
        .bearer_auth(CLIENT_KEY)
        .header("idempotency-key", "retry-after-fix")
        .json(&json!({"people": [{"name": "No Company", "domain": "bluefin.dev"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 202);
    assert!(retried.headers().get("idempotent-replayed").is_none());
    let retried_id = retried.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    assert_ne!(retried_id, id);

    let job = t.wait_done(&id, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    assert_eq!(t.wait_done(&retried_id, Duration::from_secs(20)).await["status"], "completed");
    let people = t.all_people(&id).await;
    assert_eq!(people.len(), 3);
    assert_eq!(people.iter().map(|p| p["index"].as_i64().unwrap()).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(people[0]["external_id"], "7");
    assert_eq!(people[0]["input"]["email"], "Dana.Okafor@Northwind-Labs.com", "trimmed, as given");

    // After the job: each bad request changes neither the store nor the job.
    let store = &t.app.state.store;
    let pid = uuid::Uuid::parse_str(people[0]["id"].as_str().unwrap()).unwrap();
    let batch_id = store.get_person(pid).await.unwrap().unwrap().batch_id.expect("the person was sent");
    let token = store.get_batch(batch_id).await.unwrap().unwrap().webhook_secret;
    let before = snapshot(&t).await;
    let rows = |table: &str| before.tables.get(table).map(Vec::len);
    assert_eq!((rows("jobs"), rows("people"), rows("inbound_deliveries")), (Some(2), Some(4), Some(0)));
    // The control: an UPDATE of one value, no row added or removed, shows in the snapshot.
    let db = store.connection();
    db.execute_unprepared("UPDATE jobs SET possible_double_charges = possible_double_charges + 1").await.unwrap();
    assert_ne!(snapshot(&t).await, before, "the snapshot sees an UPDATE");
    db.execute_unprepared("UPDATE jobs SET possible_double_charges = possible_double_charges - 1").await.unwrap();
    assert_eq!(snapshot(&t).await, before);
    let cases = bad_requests_about(&id, batch_id, &token);
    let failed = failing_cases(&t, &cases, |case| {
        let (t, before, job, id) = (&t, &before, &job, &id);
        async move {
            assert_eq!(snapshot(t).await, *before, "{} changed the store", case.name);
            assert_eq!(get_as(t, CLIENT_KEY, &format!("/v1/jobs/{id}")).await.1, *job, "{} changed the job", case.name);
        }
    })
    .await;
    assert!(failed.is_empty(), "{} of {} cases failed:\n{}", failed.len(), cases.len(), failed.join("\n"));
    let of_job = person::Entity::find().filter(person::Column::JobId.eq(uuid::Uuid::parse_str(&id).unwrap()));
    assert_eq!(of_job.count(db).await.unwrap(), 3, "the 409 added no people");

    // The control: the right token is accepted and its delivery stored.
    let resp = t
        .http
        .post(format!("{}/v1/webhooks/apollo/{batch_id}?token={token}", t.url()))
        .header("content-type", "application/json")
        .body(r#"{"status": "success", "people": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"status": "received", "duplicate": false}));
    let stored = inbound_delivery::Entity::find().filter(inbound_delivery::Column::BatchId.eq(batch_id));
    assert_eq!(stored.count(db).await.unwrap(), 1);
    t.stop().await;
}
