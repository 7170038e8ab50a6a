//! The person-event outbox: one row per person that reached a final state (or changed after it),
//! written in the transaction of that change; [`crate::person_events`] seals them into events.

use chrono::{DateTime, Utc};
use rules::CallbackEvent;
use rules::events::PersonEvents;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::entities::person_event;
use crate::error::StoreResult;
use crate::new_id;

/// Rows per insert.
const CHUNK: usize = 500;

/// Writes the outbox rows of `finals` (people final after this transaction, each with whether it
/// was final before) for the events `wanted`, in the caller's transaction.
pub(crate) async fn record<C: ConnectionTrait>(
    db: &C,
    job_id: Uuid,
    wanted: PersonEvents,
    finals: &[(Uuid, bool)],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    if !wanted.any() || finals.is_empty() {
        return Ok(());
    }
    let rows: Vec<person_event::ActiveModel> = finals
        .iter()
        .map(|(person, was_final)| {
            (*person, if *was_final { CallbackEvent::PersonUpdated } else { CallbackEvent::PersonCompleted })
        })
        .filter(|(_, kind)| wanted.wants(*kind))
        .map(|(person, kind)| row(job_id, person, kind, now))
        .collect();
    insert(db, rows).await
}

/// Writes `person.completed` rows for people final from the start (invalid input), in the
/// creating transaction.
pub(crate) async fn record_completed<C: ConnectionTrait>(
    db: &C,
    job_id: Uuid,
    people: &[Uuid],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    insert(db, people.iter().map(|p| row(job_id, *p, CallbackEvent::PersonCompleted, now)).collect()).await
}

fn row(job_id: Uuid, person: Uuid, kind: CallbackEvent, now: DateTime<Utc>) -> person_event::ActiveModel {
    person_event::ActiveModel {
        id: Set(new_id()),
        job_id: Set(job_id),
        person_id: Set(person),
        kind: Set(kind),
        created_at: Set(now),
        callback_id: Set(None),
    }
}

async fn insert<C: ConnectionTrait>(db: &C, rows: Vec<person_event::ActiveModel>) -> StoreResult<()> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<_> = rows.by_ref().take(CHUNK).collect();
        person_event::Entity::insert_many(chunk).exec_without_returning(db).await?;
    }
    Ok(())
}

/// Drops a job's unsealed rows (its people were erased: there is nothing left to announce).
pub(crate) async fn drop_unsealed<C: ConnectionTrait>(db: &C, job_id: Uuid) -> StoreResult<()> {
    person_event::Entity::delete_many()
        .filter(person_event::Column::JobId.eq(job_id))
        .filter(person_event::Column::CallbackId.is_null())
        .exec(db)
        .await?;
    Ok(())
}
