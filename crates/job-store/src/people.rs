//! Writing person rows: every state change goes through here, so it is tallied on the job and
//! mirrored onto the person's duplicates (which are never sent and always show the primary's result).

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, LockType};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::counters::Tally;
use crate::entities::person;
use crate::lifecycle::{self, Event, Life};
use crate::{PersonState, StoreError, StoreResult};

/// The lifecycle columns of a stored person.
pub(crate) fn life_of(p: &person::Model) -> Life {
    Life {
        state: p.state,
        expect_phone: p.expect_phone,
        expect_waterfall: p.expect_waterfall,
        got_phone: p.got_phone,
        got_waterfall: p.got_waterfall,
        phone_elsewhere: p.phone_elsewhere,
    }
}

/// Asks the lifecycle what `event` does to `p` and writes the answer into its columns, with
/// what follows from the state: `awaiting_since` only while awaiting parts (so the deadline
/// index stays small), `missing_parts` only when partial.
pub(crate) fn apply_event(p: &mut person::Model, event: Event, now: DateTime<Utc>) -> StoreResult<()> {
    let life = lifecycle::step(life_of(p), event);
    p.state = life.state;
    p.expect_phone = life.expect_phone;
    p.expect_waterfall = life.expect_waterfall;
    p.got_phone = life.got_phone;
    p.got_waterfall = life.got_waterfall;
    p.phone_elsewhere = life.phone_elsewhere;
    p.awaiting_since = match life.state {
        PersonState::AwaitingAsync => p.awaiting_since.or(Some(now)),
        _ => None,
    };
    p.missing_parts = match life.state {
        PersonState::Partial => {
            Some(serde_json::Value::from(life.missing().iter().map(|m| m.as_str()).collect::<Vec<_>>()))
        }
        _ => None,
    };
    Ok(())
}

/// The people of a batch (primaries only: duplicates never get a batch id), locked (PostgreSQL)
/// in id order.
pub(crate) async fn lock_batch_primaries<C: ConnectionTrait>(
    db: &C,
    batch_id: Uuid,
) -> StoreResult<Vec<person::Model>> {
    Ok(person::Entity::find()
        .filter(person::Column::BatchId.eq(batch_id))
        .order_by_asc(person::Column::Id)
        .lock(LockType::Update)
        .all(db)
        .await?)
}

/// Writes `new` over `old` (a primary read in this transaction), tallies the state change, and
/// mirrors the result onto the duplicates.
pub(crate) async fn update_person<C: ConnectionTrait>(
    db: &C,
    tally: &mut Tally,
    old: &person::Model,
    new: &person::Model,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let from = old.state;
    let to = new.state;
    let res = person::Entity::update_many()
        .filter(person::Column::Id.eq(old.id))
        .filter(person::Column::State.eq(from))
        .col_expr(person::Column::State, Expr::value(to))
        .col_expr(person::Column::ApolloId, Expr::value(new.apollo_id.clone()))
        .col_expr(person::Column::BatchId, Expr::value(new.batch_id))
        .col_expr(person::Column::Record, Expr::value(new.record.clone()))
        .col_expr(person::Column::ExpectPhone, Expr::value(new.expect_phone))
        .col_expr(person::Column::ExpectWaterfall, Expr::value(new.expect_waterfall))
        .col_expr(person::Column::GotPhone, Expr::value(new.got_phone))
        .col_expr(person::Column::GotWaterfall, Expr::value(new.got_waterfall))
        .col_expr(person::Column::MissingParts, Expr::value(new.missing_parts.clone()))
        .col_expr(person::Column::CreditsMicros, Expr::value(new.credits_micros))
        .col_expr(person::Column::LastError, Expr::value(new.last_error.clone()))
        .col_expr(person::Column::AwaitingSince, Expr::value(new.awaiting_since))
        .col_expr(person::Column::PhoneElsewhere, Expr::value(new.phone_elsewhere))
        .col_expr(person::Column::UpdatedAt, Expr::value(now))
        .exec(db)
        .await?;
    if res.rows_affected != 1 {
        // Rows are locked (PostgreSQL) or the writer is alone (SQLite): this means a bug upstream.
        return Err(StoreError::Invalid(format!("person {} changed concurrently (expected state {from})", old.id)));
    }
    tally.moved(old.job_id, from, to, 1);
    if old.has_dups {
        copy_to_duplicates(db, tally, new, now).await?;
    }
    Ok(())
}

/// Gives every duplicate of `primary` the primary's state and result (credits stay on the primary,
/// the only one sent; duplicates are never in a batch).
async fn copy_to_duplicates<C: ConnectionTrait>(
    db: &C,
    tally: &mut Tally,
    primary: &person::Model,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let dups = person::Entity::find()
        .filter(person::Column::DupOf.eq(primary.id))
        .order_by_asc(person::Column::Id)
        .lock(LockType::Update)
        .all(db)
        .await?;
    let to = primary.state;
    for d in &dups {
        tally.moved(d.job_id, d.state, to, 1);
    }
    if dups.is_empty() {
        return Ok(());
    }
    person::Entity::update_many()
        .filter(person::Column::DupOf.eq(primary.id))
        .col_expr(person::Column::State, Expr::value(to))
        .col_expr(person::Column::ApolloId, Expr::value(primary.apollo_id.clone()))
        .col_expr(person::Column::Record, Expr::value(primary.record.clone()))
        .col_expr(person::Column::ExpectPhone, Expr::value(primary.expect_phone))
        .col_expr(person::Column::ExpectWaterfall, Expr::value(primary.expect_waterfall))
        .col_expr(person::Column::GotPhone, Expr::value(primary.got_phone))
        .col_expr(person::Column::GotWaterfall, Expr::value(primary.got_waterfall))
        .col_expr(person::Column::MissingParts, Expr::value(primary.missing_parts.clone()))
        .col_expr(person::Column::LastError, Expr::value(primary.last_error.clone()))
        .col_expr(person::Column::AwaitingSince, Expr::value(primary.awaiting_since))
        .col_expr(person::Column::PhoneElsewhere, Expr::value(primary.phone_elsewhere))
        .col_expr(person::Column::UpdatedAt, Expr::value(now))
        .exec(db)
        .await?;
    Ok(())
}

/// Moves primaries (read in this transaction, locked on PostgreSQL) to the state `event` leads
/// them to (claim, failure, cancel: events that change the state alone) in one statement,
/// with their duplicates; sets `batch_id` and `last_error` when given (claims, failures).
///
/// Rows are picked by primary key only: a `state = …` filter here tempts SQLite's planner
/// (which has no statistics) into scanning a state index instead (measured: 18 ms per claim).
pub(crate) async fn move_primaries<C: ConnectionTrait>(
    db: &C,
    tally: &mut Tally,
    people: &[&person::Model],
    event: Event,
    batch_id: Option<Uuid>,
    last_error: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    // The lifecycle decides; people the event does not apply to stay as they are.
    let mut moving: Vec<&person::Model> = Vec::with_capacity(people.len());
    let mut target = None;
    for p in people {
        let to = lifecycle::step(life_of(p), event).state;
        if to == p.state {
            continue;
        }
        if target.replace(to).is_some_and(|t| t != to) {
            return Err(StoreError::Invalid(format!("{event:?} leads people of one move to different states")));
        }
        moving.push(p);
    }
    let (Some(to), false) = (target, moving.is_empty()) else { return Ok(()) };
    let people = &moving[..];
    let mut q = person::Entity::update_many()
        .filter(person::Column::Id.is_in(people.iter().map(|p| p.id)))
        .col_expr(person::Column::State, Expr::value(to))
        .col_expr(person::Column::UpdatedAt, Expr::value(now));
    if let Some(b) = batch_id {
        q = q.col_expr(person::Column::BatchId, Expr::value(b));
    }
    if let Some(e) = last_error {
        q = q.col_expr(person::Column::LastError, Expr::value(e));
    }
    let moved = q.exec(db).await?.rows_affected;
    if moved != people.len() as u64 {
        return Err(StoreError::Invalid(format!("{} of {} people moved to {to}", moved, people.len())));
    }
    for p in people {
        tally.moved(p.job_id, p.state, to, 1);
    }
    let with_dups: Vec<Uuid> = people.iter().filter(|p| p.has_dups).map(|p| p.id).collect();
    if with_dups.is_empty() {
        return Ok(());
    }
    let dups = person::Entity::find()
        .filter(person::Column::DupOf.is_in(with_dups))
        .order_by_asc(person::Column::Id)
        .lock(LockType::Update)
        .all(db)
        .await?;
    for d in &dups {
        tally.moved(d.job_id, d.state, to, 1);
    }
    let mut q = person::Entity::update_many()
        .filter(person::Column::Id.is_in(dups.iter().map(|d| d.id)))
        .col_expr(person::Column::State, Expr::value(to))
        .col_expr(person::Column::UpdatedAt, Expr::value(now));
    if let Some(e) = last_error {
        q = q.col_expr(person::Column::LastError, Expr::value(e));
    }
    q.exec(db).await?;
    Ok(())
}
