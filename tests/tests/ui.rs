//! The dashboard through the real app on both databases: signing in (CSRF, cookie flags, the key
//! never in the cookie), each page as HTML (status, key elements, escaping), another client's job
//! as 404, forms refused without their CSRF token, an erased job's page (its counters, no people)
//! and its people and download answering 410, a CSV upload that becomes a job, the CSV download
//! equal to the command-line export, and the job's event stream behind the session.

use std::time::{Duration, Instant};

use e2e_tests::{ADMIN_KEY, Backend, CLIENT_KEY, OTHER_KEY, TestApp, enrichd_binary, fast_sim, on_both_backends};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

/// A browser-like client: one session cookie, no redirects followed.
struct Session {
    base: String,
    http: reqwest::Client,
    cookie: String,
}

struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let at = self.body.find(marker).unwrap_or_else(|| panic!("no csrf field in {}", self.body)) + marker.len();
        self.body[at..].split('"').next().unwrap().to_string()
    }
}

/// `application/x-www-form-urlencoded` encoding of one value (reqwest is built without forms).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn cookie_of(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

fn cookie_value(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1
}

impl Session {
    fn anonymous(t: &TestApp) -> Session {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Session { base: t.url(), http, cookie: String::new() }
    }

    async fn page(&self, resp: reqwest::RequestBuilder) -> Page {
        let resp = resp.header("cookie", &self.cookie).send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        Page { status, headers, body: resp.text().await.unwrap() }
    }

    async fn get(&self, path: &str) -> Page {
        self.page(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let body: Vec<String> = form.iter().map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v))).collect();
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.join("&"));
        self.page(req).await
    }

    async fn post_multipart(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let boundary = "----enrichd-ui-test-boundary";
        let mut body = String::new();
        for (name, value) in fields {
            let filename = if *name == "file" { "; filename=\"people.csv\"" } else { "" };
            body.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n{value}\r\n"
            ));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .body(body);
        self.page(req).await
    }

    /// Signs in through the form, as a browser does.
    async fn sign_in(t: &TestApp, key: &str) -> Session {
        let mut s = Session::anonymous(t);
        let form = s.get("/ui/sign-in").await;
        assert_eq!(form.status, 200);
        let nonce = cookie_of(&form.headers, "enrichd_signin").expect("sign-in cookie");
        s.cookie = format!("enrichd_signin={}", cookie_value(&nonce));
        let done = s.post("/ui/sign-in", &[("key", key), ("csrf", &form.csrf())]).await;
        assert_eq!(done.status, 303, "{}", done.body);
        assert_eq!(done.location(), "/ui/jobs");
        let session = cookie_of(&done.headers, "enrichd_session").expect("session cookie");
        s.cookie = format!("enrichd_session={}", cookie_value(&session));
        s
    }
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const HOSTILE: &str = "<script>alert(1)</script>";

async fn pages_auth_and_escaping(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.unwrap();
    let anon = Session::anonymous(&t);

    // Without a session every page sends the browser to the sign-in form.
    for path in ["/ui/jobs", "/ui/new", "/ui/system", "/ui/jobs/00000000-0000-0000-0000-000000000000"] {
        let p = anon.get(path).await;
        assert_eq!((p.status, p.location()), (303, "/ui/sign-in"), "{path}");
    }
    // The sign-in form: a wrong key is refused; a form without its token is refused.
    let form = anon.get("/ui/sign-in").await;
    let csp = form.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let nonce = cookie_of(&form.headers, "enrichd_signin").unwrap();
    let with_nonce = Session { cookie: format!("enrichd_signin={}", cookie_value(&nonce)), ..Session::anonymous(&t) };
    let wrong = with_nonce.post("/ui/sign-in", &[("key", "nope"), ("csrf", &form.csrf())]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Unknown API key"));
    assert!(cookie_of(&wrong.headers, "enrichd_session").is_none());
    let no_token = with_nonce.post("/ui/sign-in", &[("key", CLIENT_KEY), ("csrf", "")]).await;
    assert_eq!(no_token.status, 403);
    let no_nonce = anon.post("/ui/sign-in", &[("key", CLIENT_KEY), ("csrf", &form.csrf())]).await;
    assert_eq!(no_nonce.status, 403, "a token without its cookie is refused");

    // The session cookie: HttpOnly, SameSite=Strict, and not the key.
    let mut s = Session::anonymous(&t);
    s.cookie = format!("enrichd_signin={}", cookie_value(&nonce));
    let signed = s.post("/ui/sign-in", &[("key", CLIENT_KEY), ("csrf", &form.csrf())]).await;
    let set = cookie_of(&signed.headers, "enrichd_session").unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    assert!(!set.contains(CLIENT_KEY), "the key is not in the cookie: {set}");
    // A tampered cookie is no session.
    let forged = Session { cookie: format!("enrichd_session={}x", cookie_value(&set)), ..Session::anonymous(&t) };
    assert_eq!(forged.get("/ui/jobs").await.status, 303);

    let me = Session::sign_in(&t, CLIENT_KEY).await;
    let other = Session::sign_in(&t, OTHER_KEY).await;
    let resp = t
        .submit(&json!({
            "people": [
                {"name": HOSTILE, "email": "person1@northwind-labs.com"},
                {"email": "person2@kestrel-robotics.io"},
            ],
            "reveal_phone_number": true,
            "callback_url": t.receiver.url(),
        }))
        .await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let job = t.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed", "{job:#}");
    t.receiver.wait_for(1, Duration::from_secs(30)).await;

    // Jobs: the job, its state, its credits; filtered out under another state; not the other client's.
    let list = me.get("/ui/jobs").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains(&format!("/ui/jobs/{id}")), "{}", list.body);
    assert!(list.body.contains("state-completed"));
    let credits = job["credits_consumed"].as_f64().unwrap();
    assert!(credits > 0.0);
    assert!(list.body.contains(&format!("<td class=\"num\">{credits}</td>")), "credits shown: {}", list.body);
    assert!(!list.body.contains("hx-trigger"), "a finished list does not refresh itself");
    assert!(!me.get("/ui/jobs?state=running").await.body.contains(&format!("/ui/jobs/{id}")));
    assert!(me.get("/ui/jobs?state=completed").await.body.contains(&format!("/ui/jobs/{id}")));
    assert!(!other.get("/ui/jobs").await.body.contains(&id));

    // Job: counters, flags, callback with its attempt, people; the hostile name as text.
    let page = me.get(&format!("/ui/jobs/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<strong id=\"percent\">100 %</strong>"), "{}", page.body);
    assert!(page.body.contains("id=\"callback-attempts\""));
    assert!(page.body.contains("id=\"redeliver\""));
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "escaped name shown");
    assert!(!page.body.contains(HOSTILE), "no raw script tag");
    let person_id = t.all_people(&id).await[0]["id"].as_str().unwrap().to_string();
    assert!(page.body.contains(&format!("/ui/jobs/{id}/people/{person_id}")));
    // Filter by outcome: nobody failed.
    assert!(me.get(&format!("/ui/jobs/{id}?outcome=failed")).await.body.contains("Nobody here."));

    // Person: the merged record, phone numbers and where emails came from.
    let api_person = &t.all_people(&id).await[0];
    let person = me.get(&format!("/ui/jobs/{id}/people/{person_id}")).await;
    assert_eq!(person.status, 200);
    assert!(!person.body.contains(HOSTILE));
    for phone in api_person["record"]["phones"].as_array().unwrap() {
        assert!(person.body.contains(phone["e164"].as_str().unwrap()), "phone shown: {}", person.body);
    }
    for email in api_person["record"]["emails"].as_array().unwrap() {
        let sources: Vec<&str> = email["sources"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert!(person.body.contains(&format!("<td>{}</td>", sources.join(", "))), "sources shown");
    }

    // Another client's job, person and download are not found.
    for path in
        [format!("/ui/jobs/{id}"), format!("/ui/jobs/{id}/people/{person_id}"), format!("/ui/jobs/{id}/export.csv")]
    {
        assert_eq!(other.get(&path).await.status, 404, "{path}");
    }
    let other_csrf = other.get("/ui/jobs").await.csrf();
    assert_eq!(other.post(&format!("/ui/jobs/{id}/redeliver"), &[("csrf", &other_csrf)]).await.status, 404);

    // Redeliver: refused without the token (or with another session's), then sent.
    let csrf = page.csrf();
    for bad in ["", other_csrf.as_str()] {
        assert_eq!(me.post(&format!("/ui/jobs/{id}/redeliver"), &[("csrf", bad)]).await.status, 403);
    }
    let before = t.receiver.received().len();
    let done = me.post(&format!("/ui/jobs/{id}/redeliver"), &[("csrf", &csrf)]).await;
    assert_eq!((done.status, done.location()), (303, format!("/ui/jobs/{id}").as_str()));
    t.receiver.wait_for(before + 1, Duration::from_secs(30)).await;
    let manual = "<td>manual</td>";
    let receiver = &t.receiver;
    wait_until("the manual attempt on the page", || async {
        receiver.received().len() > before && me.get(&format!("/ui/jobs/{id}")).await.body.contains(manual)
    })
    .await;

    // System is for admins; a client gets 403 and cannot resume.
    t.app.state.store.set_pause(Some("credits <exhausted>".into())).await.unwrap();
    assert_eq!(me.get("/ui/system").await.status, 403);
    assert_eq!(me.post("/ui/system/resume", &[("csrf", &csrf)]).await.status, 403);
    assert!(t.app.state.store.pause_reason().await.unwrap().is_some(), "a client cannot resume");
    // An admin sees any job and the system page, and resumes with the token only.
    let admin = Session::sign_in(&t, ADMIN_KEY).await;
    assert_eq!(admin.get(&format!("/ui/jobs/{id}")).await.status, 200);
    let system = admin.get("/ui/system").await;
    assert_eq!(system.status, 200);
    assert!(system.body.contains("Paused: credits &lt;exhausted&gt;"), "{}", system.body);
    assert!(system.body.contains("id=\"resume\""));
    assert_eq!(admin.post("/ui/system/resume", &[("csrf", "")]).await.status, 403);
    let resumed = admin.post("/ui/system/resume", &[("csrf", &system.csrf())]).await;
    assert_eq!((resumed.status, resumed.location()), (303, "/ui/system"));
    assert_eq!(t.app.state.store.pause_reason().await.unwrap(), None);
    assert!(admin.get("/ui/system").await.body.contains("Dispatch is running."));
    // Static files are served from the binary.
    let htmx = me.get("/ui/assets/htmx.min.js").await;
    assert_eq!(htmx.status, 200);
    assert!(htmx.body.starts_with("var htmx="));
    // Erased: the job's page says so and keeps its counters, without people, download or
    // redelivery; a person's page and the download answer 410 saying when it was erased.
    let erased = t.http.delete(format!("{}/v1/jobs/{id}", t.url())).bearer_auth(CLIENT_KEY).send().await.unwrap();
    assert_eq!(erased.status(), 200);
    for viewer in [&me, &admin] {
        let page = viewer.get(&format!("/ui/jobs/{id}")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("id=\"erased\"") && page.body.contains("This job was erased on "), "{}", page.body);
        assert!(page.body.contains("<strong id=\"percent\">100 %</strong>"), "counters kept: {}", page.body);
        for gone in ["id=\"people-table\"", "id=\"download\"", "id=\"redeliver\"", "/people/"] {
            assert!(!page.body.contains(gone), "{gone} on an erased job's page: {}", page.body);
        }
        for path in [format!("/ui/jobs/{id}/people/{person_id}"), format!("/ui/jobs/{id}/export.csv")] {
            let p = viewer.get(&path).await;
            assert_eq!(p.status, 410, "{path}: {}", p.body);
            assert!(p.body.contains(&format!("job {id} was erased on ")), "{path}: {}", p.body);
        }
    }
    assert_eq!(other.get(&format!("/ui/jobs/{id}")).await.status, 404, "still not another client's");

    // Signing out needs the token, then clears the cookie.
    assert_eq!(me.post("/ui/sign-out", &[("csrf", "")]).await.status, 403);
    let out = me.post("/ui/sign-out", &[("csrf", &csrf)]).await;
    assert!(cookie_of(&out.headers, "enrichd_session").unwrap().contains("Max-Age=0"));
    t.stop().await;
}

const UPLOAD: &str = "First Name,Last Name,Email Address,Company Domain,Notes\r\n\
    Dana,Smith,dana.smith@acme-corp.com,acme-corp.com,\"said \"\"hi\"\"\"\r\n\
    Zoë,Ångström,zoe.angstrom@northwind-labs.com,northwind-labs.com,<b>bold</b>\r\n\
    Renée,O'Brien,,kestrel-robotics.io,\r\n";

async fn upload_submit_and_download(backend: Backend) {
    let bin = enrichd_binary();
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.unwrap();
    let me = Session::sign_in(&t, CLIENT_KEY).await;
    let form = me.get("/ui/new").await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("enctype=\"multipart/form-data\""));
    let csrf = form.csrf();

    // Without the token nothing happens.
    let refused = me.post_multipart("/ui/new", &[("file", UPLOAD), ("csrf", "")]).await;
    assert_eq!(refused.status, 403);
    // Preview: the mapping and the people as they will be sent; nothing submitted yet.
    let preview =
        me.post_multipart("/ui/new", &[("csrf", &csrf), ("file", UPLOAD), ("flag", "reveal_phone_number")]).await;
    assert_eq!(preview.status, 200, "{}", preview.body);
    for (column, field) in [("First Name", "first_name"), ("Email Address", "email"), ("Company Domain", "domain")] {
        assert!(
            preview.body.contains(&format!("<td>{column}</td><td><code>{field}</code></td>")),
            "{column}: {}",
            preview.body
        );
    }
    assert!(preview.body.contains("<td>Notes</td><td><span class=\"muted\">kept in the export"));
    assert!(preview.body.contains("&quot;email&quot;:&quot;zoe.angstrom@northwind-labs.com&quot;"), "{}", preview.body);
    assert!(!preview.body.contains("<b>bold</b>"));
    assert!(t.get_json("/v1/jobs").await["data"].as_array().unwrap().is_empty(), "a preview submits nothing");
    // Submit, from the preview's own form (the file travels in its hidden field).
    let hidden = {
        let marker = r#"name="csv" value=""#;
        let at = preview.body.find(marker).unwrap() + marker.len();
        let raw = preview.body[at..].split('"').next().unwrap();
        raw.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    };
    assert_eq!(hidden.replace("\r\n", "\n"), UPLOAD.replace("\r\n", "\n"));
    let submitted = me
        .post_multipart(
            "/ui/new",
            &[("csrf", &csrf), ("csv", &hidden), ("step", "submit"), ("flag", "reveal_phone_number")],
        )
        .await;
    assert_eq!(submitted.status, 303, "{}", submitted.body);
    let id = submitted.location().strip_prefix("/ui/jobs/").unwrap().to_string();
    let job = t.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["total"], 3);
    assert_eq!(job["options"]["reveal_phone_number"], true);
    assert_eq!(
        job["metadata"]["source_columns"],
        json!(["First Name", "Last Name", "Email Address", "Company Domain", "Notes"])
    );

    // The download equals the command-line export with the input columns.
    let download = me.get(&format!("/ui/jobs/{id}/export.csv")).await;
    assert_eq!(download.status, 200);
    assert!(download.headers.get("content-disposition").unwrap().to_str().unwrap().contains(&format!("job-{id}.csv")));
    let out = std::env::temp_dir().join(format!("enrichd-ui-{}.csv", uuid::Uuid::new_v4().simple()));
    let cli = std::process::Command::new(bin)
        .args(["export", &id, "--format", "csv", "--with-input", "-o", out.to_str().unwrap()])
        .env("ENRICHD_URL", t.url())
        .env("ENRICHD_KEY", CLIENT_KEY)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let exported = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    assert_eq!(download.body, exported);
    assert!(download.body.contains("Zoë,Ångström,zoe.angstrom@northwind-labs.com"), "{}", download.body);
    t.stop().await;
}

/// The `/ui/jobs/…` job ids linked from the jobs list's rows.
fn listed_jobs(body: &str) -> Vec<String> {
    let rows = body.split("id=\"job-rows\"").nth(1).expect("job rows").split("</tbody>").next().unwrap();
    rows.split("href=\"/ui/jobs/").skip(1).map(|s| s[..36].to_string()).collect()
}

/// The person indexes (first column) of the job page's people table.
fn listed_people(body: &str) -> Vec<i64> {
    let table = body.split("id=\"people-table\"").nth(1).expect("people table").split("</table>").next().unwrap();
    table.split("/people/").skip(1).filter_map(|s| s[38..].split('<').next().unwrap().parse().ok()).collect()
}

/// The "Next page" link, if any.
fn next_page(body: &str) -> Option<String> {
    let at = body.find("rel=\"next\" href=\"")? + "rel=\"next\" href=\"".len();
    Some(body[at..].split('"').next().unwrap().replace("&amp;", "&"))
}

/// Every page of a paged list, following "Next page" from `path`.
async fn all_pages(s: &Session, path: &str) -> Vec<Page> {
    let mut pages = vec![s.get(path).await];
    while let Some(next) = next_page(&pages.last().unwrap().body) {
        assert!(pages.len() < 10, "paging does not end");
        pages.push(s.get(&next).await);
    }
    pages
}

/// The system page: the limit in force (configured 500 a minute, tightened to the 300 Apollo's
/// headers state), the calls used in the window equal to the calls the simulator received, a
/// 5xx the simulator injects listed with its batch, and this process among the replicas.
async fn system_page_allowance_errors_and_replicas(backend: Backend) {
    // A real minute, so every call of the test stays inside the minute window.
    let sim = apollo_sim::SimConfig { minute_ms: 60_000, minute_limit: Some(300), ..fast_sim() };
    let t = TestApp::spawn(backend, sim, |c| c.rate_per_minute = Some(500)).await.unwrap();
    let admin = Session::sign_in(&t, ADMIN_KEY).await;
    let people: Vec<Value> = (0..25).map(|i| json!({"email": format!("person{i}@northwind-labs.com")})).collect();
    let resp = t.submit(&json!({ "people": people })).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(t.wait_done(&id, Duration::from_secs(60)).await["status"], "completed");
    let calls = t.sim.calls().iter().filter(|c| c.route.ends_with("bulk_match")).count();
    assert_eq!(calls, 3, "25 people in calls of at most 10");

    let page = admin.get("/ui/system").await;
    assert_eq!(page.status, 200);
    let body = &page.body;
    assert!(body.contains("<td class=\"num\">500</td><td class=\"num\">300</td>"), "configured, learned: {body}");
    assert!(body.contains("<td class=\"num\" id=\"limit-minute\">300</td>"), "{body}");
    assert!(body.contains(&format!("<td class=\"num\" id=\"used-minute\">{calls}</td>")), "{body}");
    assert!(body.contains(&format!("<td class=\"num\" id=\"left-minute\">{}</td>", 300 - calls)), "{body}");
    assert!(body.contains("<td class=\"num\" id=\"limit-hour\">no limit</td>"), "{body}");
    assert!(!body.contains("id=\"blocked-until\""), "nothing blocks: {body}");
    assert!(body.contains("None recorded."), "no Apollo error yet: {body}");
    // This process, alive.
    let owner = &t.app.state.owner;
    assert!(body.contains(&format!("{owner} (this one)")), "{body}");
    assert!(body.contains(&format!("pid {}", std::process::id())), "{body}");
    assert!(body.contains("state-live") && !body.contains("state-stale"), "{body}");

    // Every call fails with a 5xx until the fault is lifted: the failure is listed with its batch.
    t.sim.update_config(|c| c.fault_5xx = 1.0);
    let resp = t.submit(&json!({ "people": [{"email": "dana@acme-corp.com"}], "reveal_phone_number": true })).await;
    assert_eq!(resp.status(), 202);
    let failing = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    wait_until("the 5xx on the system page", || async {
        admin.get("/ui/system").await.body.contains("<td class=\"kind\">transient</td>")
    })
    .await;
    let page = admin.get("/ui/system").await;
    t.sim.update_config(|c| c.fault_5xx = 0.0);
    let faulted = t.sim.calls().into_iter().find(|c| c.fault.is_some()).expect("a faulted call");
    let batch = faulted.webhook_url.as_deref().unwrap().split("/v1/webhooks/apollo/").nth(1).unwrap()[..36].to_string();
    let errors = page.body.split("id=\"apollo-errors\"").nth(1).unwrap().split("</table>").next().unwrap();
    assert!(errors.contains(&format!("<td class=\"num\">{}</td>", faulted.status)), "{errors}");
    assert!(errors.contains(&batch), "the batch {batch}: {errors}");
    assert!(errors.contains(&format!("transient Apollo failure ({})", faulted.status)), "{errors}");
    assert!(!page.body.contains(&t.sim.config().api_key), "no Apollo key on the page");
    assert_eq!(t.wait_done(&failing, Duration::from_secs(60)).await["status"], "completed");
    t.stop().await;
}

/// An admin's list holds every client's jobs (with the client) and opens any; a client's does
/// not. The state and outcome filters are the database's: each page holds only matching rows,
/// and following "Next page" gives every match exactly once.
async fn admin_list_and_filters_across_pages(backend: Backend) {
    let sim = apollo_sim::SimConfig { match_rate: 0.5, ..fast_sim() };
    let t = TestApp::spawn(backend, sim, |_| {}).await.unwrap();
    let me = Session::sign_in(&t, CLIENT_KEY).await;
    let admin = Session::sign_in(&t, ADMIN_KEY).await;

    // One job of 200 people, about half of whom Apollo does not find.
    let people: Vec<Value> = (0..200).map(|i| json!({"email": format!("someone{i}@kestrel-robotics.io")})).collect();
    let resp = t.submit(&json!({ "people": people })).await;
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(t.wait_done(&id, Duration::from_secs(120)).await["status"], "completed");
    let all = t.all_people(&id).await;
    let not_found: Vec<i64> =
        all.iter().filter(|p| p["status"] == "not_found").map(|p| p["index"].as_i64().unwrap()).collect();
    assert!(not_found.len() > 50 && not_found.len() < 200, "more than a page of each: {}", not_found.len());
    let pages = all_pages(&me, &format!("/ui/jobs/{id}?outcome=not_found")).await;
    assert!(pages.len() >= 2, "more than one page");
    let mut shown = Vec::new();
    for p in &pages {
        assert_eq!(p.status, 200);
        let table = p.body.split("id=\"people-table\"").nth(1).unwrap();
        let rows = listed_people(&p.body);
        assert!(!rows.is_empty() && rows.len() <= 50, "{}", rows.len());
        assert_eq!(table.matches("state state-").count(), rows.len(), "every row not found");
        assert_eq!(table.matches("state state-not_found").count(), rows.len(), "every row not found");
        shown.extend(rows);
    }
    assert_eq!(shown, not_found, "every match once, in input order");

    // Another client's job: in the admin's list with its client, openable by the admin only.
    let other = t
        .http
        .post(format!("{}/v1/jobs", t.url()))
        .bearer_auth(OTHER_KEY)
        .json(&json!({"people": [{"email": "renee@acme-corp.com"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 202);
    let theirs = other.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let store = &t.app.state.store;
    let their_id = uuid::Uuid::parse_str(&theirs).unwrap();
    wait_until("the other client's job to finish", || async {
        store.get_job(their_id).await.unwrap().unwrap().completed_at.is_some()
    })
    .await;
    let listed = admin.get("/ui/jobs").await;
    assert_eq!(listed_jobs(&listed.body), vec![theirs.clone(), id.clone()], "{}", listed.body);
    assert!(listed.body.contains("<td class=\"client\">other</td>"), "{}", listed.body);
    assert!(listed.body.contains("<td class=\"client\">e2e</td>"));
    assert_eq!(admin.get(&format!("/ui/jobs/{theirs}")).await.status, 200);
    assert_eq!(listed_jobs(&me.get("/ui/jobs").await.body), vec![id.clone()]);
    assert!(!me.get("/ui/jobs").await.body.contains("<th>Client</th>"), "a client sees no client column");
    assert_eq!(me.get(&format!("/ui/jobs/{theirs}")).await.status, 404);

    // More than a page of paused jobs (dispatch is paused, so they stay so) besides the completed one.
    t.app.state.store.set_pause(Some("maintenance".into())).await.unwrap();
    let mut paused = Vec::new();
    for i in 0..53 {
        let resp = t.submit(&json!({ "people": [{"email": format!("p{i}@acme-corp.com")}] })).await;
        assert_eq!(resp.status(), 202);
        paused.push(resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    paused.reverse();
    let pages = all_pages(&me, "/ui/jobs?state=paused").await;
    assert_eq!(pages.len(), 2);
    let mut shown = Vec::new();
    for p in &pages {
        let rows = p.body.split("id=\"job-rows\"").nth(1).unwrap().split("</tbody>").next().unwrap();
        assert_eq!(rows.matches("state state-paused").count(), listed_jobs(&p.body).len());
        assert!(!rows.contains("state-completed"));
        shown.extend(listed_jobs(&p.body));
    }
    assert_eq!(shown, paused, "every paused job once, newest first");
    assert_eq!(listed_jobs(&me.get("/ui/jobs?state=completed").await.body), vec![id.clone()]);
    assert_eq!(listed_jobs(&admin.get("/ui/jobs?state=completed").await.body), vec![theirs, id]);
    t.stop().await;
}

/// The event lines (`id:`, `event:`, `data:`) of a server-sent stream, without keep-alive comments.
fn sse_events(body: &str) -> Vec<(i64, String, String)> {
    body.split("\n\n")
        .filter_map(|frame| {
            let field = |name: &str| frame.lines().find_map(|l| l.strip_prefix(name)).map(str::to_string);
            Some((field("id: ")?.parse().unwrap(), field("event: ")?, field("data: ")?))
        })
        .collect()
}

/// The job page's live refresh: `/ui/jobs/{id}/events` is the API's event stream behind the
/// session (same events, same ids, same resume), for the job's client and an operator only, and
/// not once the job is erased.
async fn job_events_stream(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.unwrap();
    let me = Session::sign_in(&t, CLIENT_KEY).await;
    let other = Session::sign_in(&t, OTHER_KEY).await;
    let admin = Session::sign_in(&t, ADMIN_KEY).await;
    let people: Vec<Value> = (0..6).map(|i| json!({"email": format!("stream{i}@northwind-labs.com")})).collect();
    let resp = t.submit(&json!({"people": people, "events": ["person.completed"]})).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let path = format!("/ui/jobs/{id}/events");

    // Read while the job runs: the stream follows it live and ends after job.completed.
    let live = me.get(&path).await;
    assert_eq!(live.status, 200, "{}", live.body);
    assert_eq!(live.headers["content-type"], "text/event-stream");
    assert_eq!(live.headers["cache-control"], "no-cache", "not the dashboard's no-store: a stream");
    let events = sse_events(&live.body);
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("job.completed"), "{}", live.body);
    let ids: Vec<i64> = events.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=events.len() as i64).collect::<Vec<_>>(), "each event once, in order");
    let announced: usize = events
        .iter()
        .filter(|e| e.1 == "person.completed")
        .map(|e| serde_json::from_str::<Value>(&e.2).unwrap()["data"]["people"].as_array().unwrap().len())
        .sum();
    assert_eq!(announced, 6, "{}", live.body);

    // The same events as the API's stream, byte for byte.
    let api = t.http.get(format!("{}/v1/jobs/{id}/events", t.url())).bearer_auth(CLIENT_KEY).send().await.unwrap();
    assert_eq!(sse_events(&api.text().await.unwrap()), events);
    // Resume after the first event, as EventSource does on reconnecting.
    let resumed = me.page(me.http.get(format!("{}{path}", me.base)).header("last-event-id", "1")).await;
    assert_eq!(resumed.status, 200);
    assert_eq!(sse_events(&resumed.body), events[1..].to_vec());
    let bad = me.page(me.http.get(format!("{}{path}", me.base)).header("last-event-id", "-3")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("Last-Event-ID must be the id of an event"), "{}", bad.body);

    // An operator sees every client's job; another client does not; no session: sign in.
    assert_eq!(sse_events(&admin.get(&path).await.body), events);
    assert_eq!(other.get(&path).await.status, 404);
    let anon = Session::anonymous(&t).get(&path).await;
    assert_eq!((anon.status, anon.location()), (303, "/ui/sign-in"));
    assert_eq!(me.get("/ui/jobs/not-a-job/events").await.status, 404);

    // The finished job's page neither polls nor names the stream.
    let page = me.get(&format!("/ui/jobs/{id}")).await;
    assert!(!page.body.contains("data-events") && !page.body.contains("hx-trigger"), "{}", page.body);
    let script = me.get("/ui/assets/job-events.js").await;
    assert_eq!(
        (script.status, script.headers["content-type"].to_str().unwrap()),
        (200, "text/javascript; charset=utf-8")
    );
    assert!(script.body.contains("new EventSource(url)"));
    assert!(page.body.contains(r#"<script src="/ui/assets/job-events.js" defer>"#), "{}", page.body);

    // Erased: the events carried the people's records, so they are gone too.
    let erased = t.http.delete(format!("{}/v1/jobs/{id}", t.url())).bearer_auth(CLIENT_KEY).send().await.unwrap();
    assert!(erased.status().is_success(), "{}", erased.status());
    assert_eq!(me.get(&path).await.status, 410);
    t.stop().await;
}

/// The entries of the list page as (id, kind, hash prefix, scope), in order.
fn listed_entries(body: &str) -> Vec<(String, String, String, String)> {
    body.split("<tr data-id=\"")
        .skip(1)
        .map(|row| {
            let id = row.split('"').next().unwrap().to_string();
            let cells: Vec<String> = row
                .split("<td")
                .skip(1)
                .take(3)
                .map(|c| c.split_once('>').unwrap().1.split('<').next().unwrap().to_string())
                .collect();
            (id, cells[0].clone(), cells[1].clone(), cells[2].clone())
        })
        .collect()
}

/// The do-not-enrich page: add an entry with the form and see it listed as the API lists it,
/// import pasted CSV (counts and the bad row shown), remove with the entry's button; forms
/// without the CSRF token are refused; an admin's page is the global list.
async fn suppression_page(backend: Backend) {
    let t = TestApp::spawn(backend, fast_sim(), |_| {}).await.unwrap();
    assert_eq!(Session::anonymous(&t).get("/ui/suppressions").await.location(), "/ui/sign-in");
    let me = Session::sign_in(&t, CLIENT_KEY).await;
    let page = me.get("/ui/suppressions").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(r#"href="/ui/suppressions" aria-current="page""#), "the nav link is marked");
    assert!(page.body.contains("id=\"no-entries\""));
    let csrf = page.csrf();

    let no_token = me.post("/ui/suppressions/add", &[("kind", "email"), ("value", "a@b.com")]).await;
    assert_eq!(no_token.status, 403);
    let added = me
        .post("/ui/suppressions/add", &[("csrf", &csrf), ("kind", "email"), ("value", "Dana@Northwind-Labs.com")])
        .await;
    assert_eq!((added.status, added.location()), (303, "/ui/suppressions?done=added"), "{}", added.body);
    let page = me.get(added.location()).await;
    assert!(page.body.contains("Added."), "{}", page.body);
    let api = t.get_json("/v1/suppressions").await;
    let entry = &api["entries"][0];
    let rows = listed_entries(&page.body);
    assert_eq!(
        rows,
        [(
            entry["id"].as_str().unwrap().to_string(),
            "email".to_string(),
            entry["hash_prefix"].as_str().unwrap().to_string(),
            "client".to_string()
        )]
    );
    assert!(!page.body.to_lowercase().contains("dana@northwind-labs.com"), "no plaintext on the page");
    // Again: already present; a bad value is shown, not added.
    let again = me
        .post("/ui/suppressions/add", &[("csrf", &csrf), ("kind", "email"), ("value", "dana@northwind-labs.com")])
        .await;
    assert_eq!(again.location(), "/ui/suppressions?done=present");
    let bad =
        me.post("/ui/suppressions/add", &[("csrf", &csrf), ("kind", "apollo_id"), ("value", "<b>nope</b>")]).await;
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("must be an Apollo person id"), "{}", bad.body);
    assert!(!bad.body.contains("<b>nope"), "escaped");

    // Import pasted CSV: one new, one present, one invalid.
    let imported = me
        .post_multipart(
            "/ui/suppressions/import",
            &[
                ("csrf", &csrf),
                (
                    "text",
                    "email,domain\nli.wei@harbor-analytics.io,\n,acme-corp.com\nDANA@northwind-labs.com,\nnope,\n",
                ),
            ],
        )
        .await;
    assert_eq!(imported.status, 200, "{}", imported.body);
    assert!(imported.body.contains("Added 2, already present 1, invalid 1."), "{}", imported.body);
    assert!(imported.body.contains("row 4: email is not an email address"), "{}", imported.body);
    let kinds: Vec<String> = listed_entries(&imported.body).into_iter().map(|r| r.1).collect();
    assert_eq!(kinds, ["email", "email", "domain"]);
    let refused = me.post_multipart("/ui/suppressions/import", &[("text", "email\na@b.com\n")]).await;
    assert_eq!(refused.status, 403);

    // Remove the first entry with its button.
    let first = listed_entries(&imported.body)[0].0.clone();
    assert!(imported.body.contains(&format!(r#"action="/ui/suppressions/{first}/remove""#)));
    let other = Session::sign_in(&t, OTHER_KEY).await;
    let other_csrf = other.get("/ui/suppressions").await.csrf();
    let theirs = other.post(&format!("/ui/suppressions/{first}/remove"), &[("csrf", &other_csrf)]).await;
    assert_eq!(theirs.status, 404, "another client cannot remove my entry");
    let removed = me.post(&format!("/ui/suppressions/{first}/remove"), &[("csrf", &csrf)]).await;
    assert_eq!((removed.status, removed.location()), (303, "/ui/suppressions?done=removed"));
    let page = me.get("/ui/suppressions").await;
    let left: Vec<String> = listed_entries(&page.body).into_iter().map(|r| r.0).collect();
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&first));
    let api: Vec<String> = t.get_json("/v1/suppressions").await["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, api);

    // An admin manages the global list.
    let admin = Session::sign_in(&t, ADMIN_KEY).await;
    let page = admin.get("/ui/suppressions").await;
    assert!(page.body.contains("The global list"), "{}", page.body);
    assert!(listed_entries(&page.body).is_empty(), "the clients' entries are not the global list");
    let added = admin
        .post("/ui/suppressions/add", &[("csrf", &page.csrf()), ("kind", "domain"), ("value", "everyone.example")])
        .await;
    assert_eq!(added.status, 303);
    let rows = listed_entries(&admin.get("/ui/suppressions").await.body);
    assert_eq!((rows.len(), rows[0].1.as_str(), rows[0].3.as_str()), (1, "domain", "global"));
    t.stop().await;
}

on_both_backends!(
    suppression_page,
    pages_auth_and_escaping,
    upload_submit_and_download,
    system_page_allowance_errors_and_replicas,
    admin_list_and_filters_across_pages,
    job_events_stream
);
