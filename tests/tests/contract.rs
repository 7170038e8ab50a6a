//! The typed contract from outside, on SQLite and PostgreSQL: values the database cannot hold and
//! Apollo ids Apollo would refuse are 422s naming the field; methods a path lacks are 405 with
//! `Allow`; the OpenAPI document states each route's statuses, schemas and constraints; answers
//! read back into the contract's own types.

use e2e_tests::{Backend, CLIENT_KEY, TestApp, fast_sim, on_both_backends};
use enrichd::models::{ErrorBody, Job, JobPage, JobStatus, PersonPage};
use reqwest::Method;
use serde_json::{Value, json};

async fn send(t: &TestApp, method: Method, path: &str, body: Option<&Value>) -> reqwest::Response {
    let mut req = t.http.request(method, format!("{}{path}", t.url())).bearer_auth(CLIENT_KEY);
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.expect("request")
}

/// The fields a 422 names.
async fn refused_fields(resp: reqwest::Response) -> Vec<String> {
    assert_eq!(resp.status(), 422);
    let body: ErrorBody = resp.json().await.expect("error body");
    assert_eq!(body.error.code, "validation_failed");
    body.error.details.expect("details").into_iter().map(|p| p.field).collect()
}

async fn nul_characters_are_422_naming_the_field(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.unwrap();
    let cases = [
        (
            json!({"people": [{"email": "a@b.io"}, {"first_name": "A\u{0}", "last_name": "B", "domain": "x.io"}]}),
            "people[1].first_name",
        ),
        (json!({"people": [{"email": "a@b.io", "external_id": "crm\u{0}1"}]}), "people[0].external_id"),
        (json!({"people": [{"email": "a@b.io"}], "metadata": {"note": "x\u{0}y"}}), "metadata.note"),
        (json!({"people": [{"email": "a@b.io"}], "metadata": {"k\u{0}": 1}}), "metadata.k\u{0}"),
        (json!({"people": [{"email": "a@b.io", "source_row": ["ok", "\u{0}"]}]}), "people[0].source_row[1]"),
    ];
    for (body, field) in cases {
        let fields = refused_fields(send(&t, Method::POST, "/v1/jobs", Some(&body)).await).await;
        assert_eq!(fields, vec![field.to_string()], "{body}");
    }
    // Nothing was stored, and the same job without the NUL is accepted.
    let page: JobPage = send(&t, Method::GET, "/v1/jobs", None).await.json().await.unwrap();
    assert!(page.data.is_empty(), "{page:?}");
    let ok = json!({"people": [{"first_name": "A", "last_name": "B", "domain": "x.io"}], "metadata": {"note": "xy"}});
    assert_eq!(send(&t, Method::POST, "/v1/jobs", Some(&ok)).await.status(), 202);
    t.stop().await;
}

async fn apollo_ids_are_checked_at_submit(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.unwrap();
    let bad = json!({"people": [
        {"id": "6501a9f2c4dfae0001a1b2c3"},
        {"id": "12345"},
        {"id": "6501a9f2c4dfae0001a1b2cg"},
        {"id": "6501a9f2c4dfae0001a1b2c3", "email": "ok@x.io"},
    ]});
    let fields = refused_fields(send(&t, Method::POST, "/v1/jobs", Some(&bad)).await).await;
    assert_eq!(fields, ["people[1].id", "people[2].id"]);
    let good = json!({"people": [{"id": "6501a9f2c4dfae0001a1b2c3"}, {"id": " 66D8C632580636000195AA01 "}]});
    let resp = send(&t, Method::POST, "/v1/jobs", Some(&good)).await;
    assert_eq!(resp.status(), 202);
    let job: Job = resp.json().await.expect("a Job");
    assert_eq!(job.total, 2);
    let people: PersonPage =
        send(&t, Method::GET, &format!("/v1/jobs/{}/people", job.id), None).await.json().await.unwrap();
    assert_eq!(people.data[1].input["id"], "66D8C632580636000195AA01");
    t.stop().await;
}

async fn methods_a_path_lacks_are_405_with_allow(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.unwrap();
    let created: Job =
        send(&t, Method::POST, "/v1/jobs", Some(&json!({"people": [{"email": "a@b.io"}]}))).await.json().await.unwrap();
    let id = created.id;
    let cases = [
        (Method::PUT, format!("/v1/jobs/{id}"), "GET, DELETE"),
        (Method::PATCH, "/v1/jobs".to_string(), "GET, POST"),
        (Method::DELETE, format!("/v1/jobs/{id}/people"), "GET"),
        (Method::GET, format!("/v1/jobs/{id}/cancel"), "POST"),
        (Method::GET, "/v1/admin/resume".to_string(), "POST"),
        (Method::POST, "/healthz".to_string(), "GET"),
    ];
    for (method, path, allow) in cases {
        let resp = send(&t, method.clone(), &path, None).await;
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
        let body: ErrorBody = resp.json().await.unwrap();
        assert_eq!(body.error.code, "method_not_allowed");
    }
    assert_eq!(send(&t, Method::PUT, "/v1/nothing", None).await.status(), 404);
    assert_eq!(send(&t, Method::GET, "/v1/jobs/", None).await.status(), 404);
    t.stop().await;
}

async fn answers_are_the_documented_types(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.unwrap();
    let job: Job = send(&t, Method::POST, "/v1/jobs", Some(&json!({"people": [{"email": "dana@northwind-labs.com"}]})))
        .await
        .json()
        .await
        .unwrap();
    let done = t.wait_done(&job.id.to_string(), std::time::Duration::from_secs(60)).await;
    let done: Job = serde_json::from_value(done).expect("a finished job reads as a Job");
    assert_eq!(done.status, JobStatus::Completed);
    let people: PersonPage =
        send(&t, Method::GET, &format!("/v1/jobs/{}/people", job.id), None).await.json().await.unwrap();
    assert_eq!(people.data.len(), 1);
    let p = &people.data[0];
    if let Some(record) = p.typed_record() {
        assert_eq!(record.apollo_id, p.apollo_id, "{p:?}");
    }
    // Every request answered carries a request id.
    let resp = send(&t, Method::GET, "/healthz", None).await;
    assert_eq!(resp.headers()["x-request-id"].to_str().unwrap().len(), 32);
    t.stop().await;
}

async fn the_document_states_statuses_and_constraints(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.unwrap();
    let doc: Value = t.http.get(format!("{}/openapi.json", t.url())).send().await.unwrap().json().await.unwrap();
    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    let statuses = |path: &str, method: &str| -> Vec<String> {
        op(path, method)["responses"].as_object().map(|r| r.keys().cloned().collect()).unwrap_or_default()
    };
    let routes = [
        ("/v1/jobs", "post"),
        ("/v1/jobs", "get"),
        ("/v1/jobs/{id}", "get"),
        ("/v1/jobs/{id}", "delete"),
        ("/v1/jobs/{id}/people", "get"),
        ("/v1/jobs/{id}/cancel", "post"),
        ("/v1/jobs/{id}/callback/redeliver", "post"),
        ("/v1/admin/resume", "post"),
    ];
    for (path, method) in routes {
        let s = statuses(path, method);
        for must in ["401", "500", "503"] {
            assert!(s.contains(&must.to_string()), "{method} {path} lacks {must}: {s:?}");
        }
        assert_eq!(op(path, method)["security"], json!([{"bearer": []}]), "{method} {path}");
        let ok = s.iter().find(|c| c.starts_with('2')).expect("a success status");
        assert!(
            op(path, method)["responses"][ok]["content"]["application/json"]["schema"].is_object(),
            "{method} {path}"
        );
    }
    for (path, method) in [("/v1/jobs", "get"), ("/v1/jobs/{id}/people", "get")] {
        assert!(statuses(path, method).contains(&"422".to_string()), "{method} {path}");
        let limit =
            op(path, method)["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "limit").cloned().unwrap();
        assert_eq!(
            (limit["schema"]["minimum"].as_f64(), limit["schema"]["maximum"].as_f64()),
            (Some(1.0), Some(1000.0))
        );
    }
    assert!(statuses("/v1/jobs", "post").iter().any(|s| s == "413"));
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["JobRequest"]["properties"]["people"]["minItems"], 1);
    assert_eq!(schemas["JobRequest"]["additionalProperties"], false);
    assert_eq!(schemas["PersonInput"]["additionalProperties"], false);
    assert_eq!(schemas["PersonInput"]["properties"]["first_name"]["maxLength"], 512);
    assert!(schemas["PersonInput"]["properties"]["id"]["pattern"].as_str().unwrap().contains("{24}"));
    for name in ["Job", "Person", "PersonPage", "JobPage", "ErrorBody", "Problem", "Record"] {
        assert!(schemas[name].is_object(), "schema {name} missing");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    t.stop().await;
}

on_both_backends!(
    nul_characters_are_422_naming_the_field,
    apollo_ids_are_checked_at_submit,
    methods_a_path_lacks_are_405_with_allow,
    answers_are_the_documented_types,
    the_document_states_statuses_and_constraints,
);
