//! Hostile input on the webhook route: a delivery for batch A naming people of batch B or of
//! another job touches nobody; a huge delivery is refused with nothing stored; a body that is not
//! a delivery is kept with its error and changes nothing.

use std::time::Duration;

use apollo_sim::SimConfig;
use e2e_tests::{Backend, TestApp, fast_sim};
use job_store::entities::inbound_delivery;
use rules::DeliveryState;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};

async fn finished_job(t: &TestApp, prefix: &str) -> (String, Vec<Value>) {
    let body = json!({
        "people": (0..10).map(|i| json!({"email": format!("{prefix}{i}@hostile.io")})).collect::<Vec<_>>(),
        "reveal_phone_number": true,
    });
    let resp = t.submit(&body).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let job = t.wait_done(&id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "completed");
    let people = t.all_people(&id).await;
    (id, people)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_only_touches_the_people_of_its_own_batch() {
    let t = TestApp::spawn(Backend::Sqlite, SimConfig { match_rate: 1.0, ..fast_sim() }, |c| {
        c.max_body_bytes = 64 * 1024;
    })
    .await
    .unwrap();
    // Two jobs submitted one after the other: each one call, so two batches.
    let (job_a, people_a) = finished_job(&t, "a").await;
    let (job_b, people_b) = finished_job(&t, "b").await;
    let store = &t.app.state.store;
    let pid = uuid::Uuid::parse_str(people_a[0]["id"].as_str().unwrap()).unwrap();
    let batch_a =
        store.get_batch(store.get_person(pid).await.unwrap().unwrap().batch_id.unwrap()).await.unwrap().unwrap();
    assert!(batch_a.people.iter().all(|p| people_a.iter().any(|x| x["id"] == p.to_string())), "batch A is job A's");

    // Batch A's valid URL, naming B's person (another job) with a phone nobody has.
    let victim = &people_b[0];
    let hook = format!("{}/v1/webhooks/apollo/{}?token={}", t.url(), batch_a.id, batch_a.webhook_secret);
    let forged = json!({"people": [{"id": victim["apollo_id"], "status": "success",
        "phone_numbers": [{"sanitized_number": "+15550009999", "type_cd": "mobile", "status_cd": "valid_number"}]}]});
    let resp = t.http.post(&hook).json(&forged).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the token is right: stored for audit");
    // A body that is not a delivery at all, and one that is not even JSON.
    assert_eq!(t.http.post(&hook).json(&json!({"hello": "world"})).send().await.unwrap().status(), 200);
    let not_json = t.http.post(&hook).header("content-type", "application/json").body(vec![0xff, 0xfe, b'{']).send();
    assert_eq!(not_json.await.unwrap().status(), 200);
    // A huge delivery: refused before it is read whole, nothing stored.
    let db = store.connection();
    let count = || inbound_delivery::Entity::find().filter(inbound_delivery::Column::BatchId.eq(batch_a.id)).count(db);
    let before = count().await.unwrap();
    let huge = json!({"people": [{"id": "x", "pad": "y".repeat(200 * 1024)}]});
    let resp = t.http.post(&hook).json(&huge).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "payload_too_large");
    assert_eq!(count().await.unwrap(), before, "nothing stored for the huge delivery");

    // Once ingest has taken up every stored delivery, nothing of either job has changed.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows = inbound_delivery::Entity::find().filter(inbound_delivery::Column::BatchId.eq(batch_a.id)).all(db);
        if rows.await.unwrap().iter().all(|d| d.state != DeliveryState::Pending) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "deliveries left pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(t.all_people(&job_b).await, people_b, "job B untouched");
    assert_eq!(t.all_people(&job_a).await, people_a, "job A untouched");
    let rows = inbound_delivery::Entity::find()
        .filter(inbound_delivery::Column::BatchId.eq(batch_a.id))
        .all(db)
        .await
        .unwrap();
    let failed: Vec<_> = rows.iter().filter(|d| d.state == DeliveryState::Failed).collect();
    assert_eq!(failed.len(), 2, "the two unusable bodies are kept with their errors");
    assert!(failed.iter().all(|d| d.parse_error.as_deref().is_some_and(|e| !e.is_empty())));
    assert!(rows.iter().all(|d| d.state != DeliveryState::Pending), "nothing left pending");
    t.stop().await;
}
