//! The client's callback endpoint failing: down for a while (retried, then delivered), failing for
//! good (exhausted, shown on the job), redelivered on request, 410 stops, redirects not followed.

use std::time::Duration;

use e2e_tests::{Backend, CLIENT_KEY, TestApp, fast_sim};
use enrichd::demo::receiver::CallbackReceiver;
use serde_json::{Value, json};

async fn one_job(t: &TestApp, callback_url: &str) -> String {
    let body =
        json!({"people": [{"email": "cb@callbacks.io"}, {"email": "cb2@callbacks.io"}], "callback_url": callback_url});
    let resp = t.submit(&body).await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// Polls the job until `cond` holds (generous deadline: the machine may be busy).
async fn wait_until(t: &TestApp, id: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job = t.get_json(&format!("/v1/jobs/{id}")).await;
        if cond(&job) {
            return job;
        }
        assert!(std::time::Instant::now() < deadline, "job {id} never got there: {job:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_callback_state(t: &TestApp, id: &str, state: &str) -> Value {
    wait_until(t, id, |job| job["callback"]["state"] == state).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_gets_the_callback_when_back() {
    let t = TestApp::spawn(Backend::Sqlite, fast_sim(), |c| {
        c.callback_schedule = enrichd::config::Schedule(vec![Duration::from_millis(300); 8]);
    })
    .await
    .unwrap();
    // A receiver that is not there: the port is closed until we start one on it.
    let gone = CallbackReceiver::start(t.receiver.secret().clone()).await.unwrap();
    let url = gone.url().to_string();
    let port: u16 = url.split(':').nth(2).unwrap().split('/').next().unwrap().parse().unwrap();
    gone.stop().await;
    let id = one_job(&t, &url).await;
    let job = t.wait_done(&id, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "completed");
    // Let two attempts fail with connection refused, then come back.
    let failed = wait_until(&t, &id, |job| job["callback"]["attempts"].as_i64().unwrap_or(0) >= 2).await;
    assert_eq!(failed["callback"]["state"], "pending");
    assert!(failed["callback"]["attempts"].as_i64().unwrap() >= 2, "{failed:#}");
    assert!(failed["callback"]["attempt_log"][0]["error"].as_str().unwrap().contains("error"), "{failed:#}");
    let back = CallbackReceiver::start_on(port, t.receiver.secret().clone()).await.unwrap();
    let job = wait_callback_state(&t, &id, "delivered").await;
    let got = back.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "delivered once");
    assert!(got[0].verified);
    assert_eq!(got[0].id, job["callback"]["webhook_id"].as_str().unwrap());
    let log = job["callback"]["attempt_log"].as_array().unwrap();
    assert_eq!(log.len() as i64, job["callback"]["attempts"].as_i64().unwrap(), "every attempt is recorded");
    assert_eq!(log.last().unwrap()["status_code"], 200);
    assert!(log[..log.len() - 1].iter().all(|a| a["status_code"].is_null()), "earlier attempts: no answer");
    back.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_for_good_is_exhausted_and_redelivery_sends_again() {
    let t = TestApp::spawn(Backend::Sqlite, fast_sim(), |_| {}).await.unwrap();
    t.receiver.script(&[500; 5]);
    let id = one_job(&t, t.receiver.url()).await;
    let job = wait_callback_state(&t, &id, "exhausted").await;
    // The harness schedule has four delays: five attempts in all, each recorded with its status.
    assert_eq!(job["callback"]["attempts"], 5);
    let log = job["callback"]["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 5);
    assert!(log.iter().all(|a| a["status_code"] == 500 && a["trigger"] == "scheduled"), "{log:#?}");
    assert_eq!(log[0]["response_excerpt"], "try again");
    let got = t.receiver.received();
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|r| r.id == got[0].id), "one webhook-id for every attempt");
    assert!(got.iter().all(|r| r.body == got[0].body), "the same bytes at every attempt");

    let resp = t
        .http
        .post(format!("{}/v1/jobs/{id}/callback/redeliver", t.url()))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let job = wait_callback_state(&t, &id, "delivered").await;
    let got = t.receiver.wait_for(6, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 6);
    assert_eq!(got[5].answered, 200);
    assert_eq!(got[5].id, got[0].id, "a redelivery is the same event");
    assert_eq!(got[5].body, got[0].body, "a redelivery sends the same bytes");
    let log = job["callback"]["attempt_log"].as_array().unwrap();
    assert_eq!(log.last().unwrap()["trigger"], "manual");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_stops_at_once_and_redirects_are_not_followed() {
    let t = TestApp::spawn(Backend::Sqlite, fast_sim(), |_| {}).await.unwrap();
    t.receiver.script(&[410]);
    let id = one_job(&t, t.receiver.url()).await;
    let job = wait_callback_state(&t, &id, "exhausted").await;
    assert_eq!(job["callback"]["attempts"], 1, "a 410 means no more tries");
    assert_eq!(t.receiver.received().len(), 1);

    // Each redirect points at a second receiver that must never be called: a redirect is a failed
    // attempt (retried at the same URL), never followed.
    let elsewhere = CallbackReceiver::start(t.receiver.secret().clone()).await.unwrap();
    t.receiver.redirect_to(elsewhere.url());
    t.receiver.script(&[301, 302, 307, 308]);
    let id = one_job(&t, t.receiver.url()).await;
    let job = wait_callback_state(&t, &id, "delivered").await;
    let log = job["callback"]["attempt_log"].as_array().unwrap();
    assert_eq!(
        log.iter().map(|a| a["status_code"].as_i64().unwrap()).collect::<Vec<_>>(),
        vec![301, 302, 307, 308, 200]
    );
    // Every attempt reached the first receiver; a followed redirect would have reached the second
    // within its attempt, before the next one was made.
    let got = t.receiver.received();
    assert_eq!(got.iter().map(|r| r.answered).collect::<Vec<_>>()[1..], [301, 302, 307, 308, 200]);
    assert!(elsewhere.received().is_empty(), "a redirect was followed: {:?}", elsewhere.received());
    elsewhere.stop().await;
    t.stop().await;
}
