//! Credit budgets in the store: the room a budgeted job leaves a claim, read under its row lock,
//! and the room a client's daily cap leaves a new job. The arithmetic is [`rules::budget`].

use apollo_client::Credits;
use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rules::budget::{
    AnsweredCall, LostCalls, affordable, batch_double_charge, committed, double_charge_worst, worst_case,
};
use rules::lifecycle::Event;
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::counters::Tally;
use crate::entities::{batch, client_day_credits, job, person};
use crate::error::StoreResult;
use crate::people::move_primaries;

/// [`batch_double_charge`] of batch `b` as it stands, `people` people in it, `proven` of its lost
/// calls proven by a delivery.
pub(crate) fn batch_double_charge_of(b: &batch::Model, people: i64, proven: i32) -> Credits {
    let worst = double_charge_worst(&crate::columns::flags_of(b.flags), people);
    let lost = LostCalls { count: b.unknown_outcomes, proven, booked: Credits(b.lost_credits_micros) };
    let answered = (b.state == rules::BatchState::Submitted)
        .then_some(AnsweredCall { booked: Credits(b.credits_micros), sync: Credits(b.sync_credits_micros) });
    batch_double_charge(lost, answered, worst)
}

/// What a claim may take from a budgeted job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Room {
    /// Up to this many people.
    Take(usize),
    /// None now: calls in flight may leave room once answered (or another claimer holds the job).
    Wait,
}

/// The room a budgeted job leaves, read under its row lock (PostgreSQL: a job another claimer is
/// looking at is skipped, so two claimers never spend the same room). When nothing is in flight
/// and not even one person fits, its queued people end `skipped_budget` and the job says why.
pub(crate) async fn room<C: ConnectionTrait>(
    db: &C,
    tally: &mut Tally,
    job_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Room> {
    let Some(j) = crate::sql::by_key(
        db,
        job::Entity::find_by_id(job_id).lock_with_behavior(LockType::Update, LockBehavior::SkipLocked),
    )
    .await?
    else {
        return Ok(Room::Wait);
    };
    let Some(max) = j.max_credits_micros.map(Credits) else { return Ok(Room::Take(usize::MAX)) };
    let worst = worst_case(&crate::columns::flags_of(j.flags));
    // What this transaction did to the job already counts (its tally is flushed at the end).
    let in_flight = crate::counters::counts_of(&j).in_flight() + tally.pending_counts(job_id).in_flight();
    let spent = Credits(j.credits_micros + tally.pending_credits(job_id));
    let n = affordable(max, spent, in_flight, worst);
    if n > 0 {
        return Ok(Room::Take(usize::try_from(n).unwrap_or(usize::MAX)));
    }
    if in_flight > 0 {
        return Ok(Room::Wait);
    }
    let reason = format!(
        "budget reached: max_credits {max}, spent {spent}; one more person could cost {worst} \
         ({} people left unsent)",
        j.n_queued + tally.pending_counts(job_id).queued
    );
    let queued = person::Entity::find()
        .filter(person::Column::JobId.eq(job_id))
        .filter(person::Column::State.eq(rules::PersonState::Queued))
        .filter(person::Column::DupOf.is_null())
        .order_by_asc(person::Column::Id)
        .lock(LockType::Update)
        .all(db)
        .await?;
    let refs: Vec<&person::Model> = queued.iter().collect();
    move_primaries(db, tally, &refs, Event::OverBudget, None, Some(&reason), now).await?;
    job::Entity::update_many()
        .filter(job::Column::Id.eq(job_id))
        .col_expr(job::Column::EndReason, Expr::value(reason))
        .exec(db)
        .await?;
    tally.touch(job_id);
    Ok(Room::Wait)
}

/// Room left today under a client's daily cap (`ENRICHD_CLIENT_DAILY_CREDITS`), in the create
/// transaction: the cap less what the client's jobs created since `day_start` hold, and less what
/// those of them that retention purged had spent ([`keep_day_credits`]). On
/// PostgreSQL a transaction-scoped advisory lock on the client serializes its submissions, so two
/// jobs never both take the same room. Every job created under a cap gets a budget, so the jobs
/// of one day together never pass it (at [`worst_case`] charges).
pub(crate) async fn day_room<C: ConnectionTrait>(
    db: &C,
    client: &str,
    cap: Credits,
    day_start: DateTime<Utc>,
) -> StoreResult<Credits> {
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        db.execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            [format!("enrichd-daily-cap:{client}").into()],
        ))
        .await?;
    }
    let rows: Vec<(i64, Option<i64>, Option<DateTime<Utc>>)> = job::Entity::find()
        .select_only()
        .column(job::Column::CreditsMicros)
        .column(job::Column::MaxCreditsMicros)
        .column(job::Column::CompletedAt)
        .filter(job::Column::Client.eq(client))
        .filter(job::Column::CreatedAt.gte(day_start))
        .into_tuple()
        .all(db)
        .await?;
    let held = rows.into_iter().fold(Credits::ZERO, |sum, (spent, max, done)| {
        sum + committed(Credits(spent), max.map(Credits), done.is_some())
    });
    // Read after the jobs: a purge committing in between is then counted twice (too little room),
    // never missed.
    let purged: Option<i64> = client_day_credits::Entity::find()
        .select_only()
        .column(client_day_credits::Column::CreditsMicros)
        .filter(client_day_credits::Column::Client.eq(client))
        .filter(client_day_credits::Column::Day.eq(day_start.date_naive()))
        .into_tuple()
        .one(db)
        .await?;
    Ok(Credits(cap.micros() - held.micros() - purged.unwrap_or(0)))
}

/// Adds what purged jobs spent to their client's day (`spent`: per client and day the jobs were
/// created), in the purge transaction; rows of days before `oldest_needed` (before the retention
/// cutoff, so before today) are dropped.
pub(crate) async fn keep_day_credits<C: ConnectionTrait>(
    db: &C,
    spent: &BTreeMap<(String, NaiveDate), i64>,
    oldest_needed: NaiveDate,
) -> StoreResult<()> {
    client_day_credits::Entity::delete_many()
        .filter(client_day_credits::Column::Day.lt(oldest_needed))
        .exec(db)
        .await?;
    let backend = db.get_database_backend();
    let rows: Vec<_> = spent.iter().filter(|((_, day), credits)| **credits != 0 && *day >= oldest_needed).collect();
    for chunk in rows.chunks(100) {
        let mut text = String::from("INSERT INTO client_day_credits (client, day, credits_micros) VALUES ");
        crate::sql::push_values(&mut text, backend, 1, chunk.len(), 3);
        text.push_str(
            " ON CONFLICT (client, day) DO UPDATE SET \
             credits_micros = client_day_credits.credits_micros + excluded.credits_micros",
        );
        let values: Vec<sea_orm::Value> = chunk
            .iter()
            .flat_map(|((client, day), credits)| [client.clone().into(), (*day).into(), (**credits).into()])
            .collect();
        db.execute_raw(sea_orm::Statement::from_sql_and_values(backend, text, values)).await?;
    }
    Ok(())
}
