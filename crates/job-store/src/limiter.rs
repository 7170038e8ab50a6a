//! The rate limiter every replica shares for one Apollo key, kept in the database and decided
//! with the database's clock.
//!
//! A sliding log: a call is admitted while fewer than `limit` admitted calls fall in the last
//! window length, for the minute, hour and day windows at once. So a window's whole allowance is
//! usable at once (a small job never waits behind even spacing), and no span of a window's length
//! ever holds more than the limit, wherever Apollo's fixed windows start. Every decision runs under
//! the key's row lock (`FOR UPDATE`; SQLite has one writer anyway), and admission and the claim of
//! the batch it is for are one transaction: a slot is never taken without a call to spend it on,
//! and a batch never sits on its lease waiting for a slot.
//!
//! Each window's span is Apollo's length plus a margin measured from send-to-answer times
//! ([`measured_margin`]): a call reaches Apollo's count before its answer comes back, so with the
//! margin no span of Apollo's length holds more than the limit *as Apollo counts*, whether its
//! limit is a fixed window (aligned to the clock or to a first call), a sliding window or a token
//! bucket refilled at the same rate. Readings (headers, usage counts) only ever hold calls back:
//! the call log alone lets them go (see the README's design notes).
//!
//! The key is named by a fingerprint (a hash), never stored. Limits Apollo's headers state, a
//! 429's `retry-after` and the largest margin a replica measured lately are stored on the key's
//! row, so one replica's 429 pauses all of them.

use std::time::Duration;

use apollo_client::RateLimit;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{LockType, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};

use crate::clock::db_clock;
use crate::counters::Tally;
use crate::entities::{rate_limit_call, rate_limiter};
use crate::error::StoreResult;
use crate::{ClaimedBatch, Store, sha256_hex};
use rules::window::{
    Allowance, RateRules, closed_until, delta, effective_limit, learn, next_slot, shared_margin, window_allowance,
    window_slot,
};

/// What [`Store::claim_admitted`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Admitted {
    /// A slot was taken for each of these batches (at least one), claimed for it: call Apollo now.
    Claimed(Vec<ClaimedBatch>),
    /// No slot free: come back after this long (add jitter so replicas do not wake in lockstep).
    Wait(Duration),
    /// A slot was free but there is nothing to send (or dispatch is paused); no slot was taken.
    Idle,
}

/// The name the limiter stores for an Apollo key: a hash, so neither logs nor the database hold
/// the key, and every replica with the same key finds the same row.
pub fn key_fingerprint(api_key: &str) -> String {
    format!("apollo-{}", &sha256_hex(&[b"enrichd rate limiter", api_key.as_bytes()])[..32])
}

/// The margin another replica stored on the key's row, if any.
fn margin_on(row: Option<&rate_limiter::Model>) -> Option<Duration> {
    row.and_then(|r| r.margin_ms).map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// The key's row, created if missing, locked for the rest of the transaction.
async fn lock_row<C: ConnectionTrait>(db: &C, key: &str) -> StoreResult<rate_limiter::Model> {
    let fresh = rate_limiter::ActiveModel {
        key: Set(key.to_owned()),
        learned_minute: Set(None),
        learned_hour: Set(None),
        learned_day: Set(None),
        blocked_until: Set(None),
        rate_limited: Set(0),
        margin_ms: Set(None),
        margin_at: Set(None),
        updated_at: Set(crate::clock::now()),
    };
    rate_limiter::Entity::insert(fresh)
        .on_conflict(OnConflict::column(rate_limiter::Column::Key).do_nothing().to_owned())
        .exec_without_returning(db)
        .await?;
    crate::sql::by_key(db, rate_limiter::Entity::find_by_id(key.to_owned()).lock(LockType::Update))
        .await?
        .ok_or_else(|| crate::error::StoreError::Corrupt(format!("rate limiter row {key} vanished")))
}

fn learned(row: &rate_limiter::Model) -> [Option<i64>; 3] {
    [row.learned_minute, row.learned_hour, row.learned_day]
}

/// Calls logged for a key after `since`.
async fn calls_since<C: ConnectionTrait>(db: &C, key: &str, since: DateTime<Utc>) -> StoreResult<u64> {
    Ok(rate_limit_call::Entity::find()
        .filter(rate_limit_call::Column::Key.eq(key))
        .filter(rate_limit_call::Column::At.gt(since))
        .count(db)
        .await?)
}

/// The `n`-th newest call (1-based) admitted after `since`.
async fn nth_newest<C: ConnectionTrait>(
    db: &C,
    key: &str,
    since: DateTime<Utc>,
    n: u32,
) -> StoreResult<Option<DateTime<Utc>>> {
    let q = rate_limit_call::Entity::find()
        .select_only()
        .column(rate_limit_call::Column::At)
        .filter(rate_limit_call::Column::Key.eq(key))
        .filter(rate_limit_call::Column::At.gt(since))
        .order_by_desc(rate_limit_call::Column::At)
        .offset(u64::from(n.max(1) - 1))
        .limit(1);
    Ok(crate::sql::tuples::<DateTime<Utc>, _, _>(db, q).await?.pop())
}

/// A slot decision, under the key's row lock.
struct Slot {
    /// The database's clock when decided.
    now: DateTime<Utc>,
    /// How long until a slot frees; `None`: `room` calls may go now.
    wait: Option<Duration>,
    /// How many calls may go now (at least one when `wait` is `None`).
    room: u64,
    /// How long the log must keep calls: twice the longest limited window.
    keep: Duration,
}

/// Locks the key's row and decides how many calls may go now: per limited window, as many as its
/// sliding log has room for.
async fn check_slot<C: ConnectionTrait>(db: &C, rules: &RateRules) -> StoreResult<Slot> {
    let row = lock_row(db, &rules.key).await?;
    let now = db_clock(db).await?;
    let margin = rules.margin_with(margin_on(Some(&row)));
    let (mut slots, mut keep, mut room) = (Vec::with_capacity(3), None, u64::MAX);
    for (i, (rule, learned)) in rules.windows.iter().zip(learned(&row)).enumerate() {
        let Some(limit) = effective_limit(rule.limit, learned) else { continue };
        let span = rules.span(i, margin);
        keep = keep.max(Some(span));
        let in_window = calls_since(db, &rules.key, now - delta(span)).await?;
        let free = u64::from(limit).saturating_sub(in_window);
        room = room.min(free);
        if free == 0 {
            let nth = nth_newest(db, &rules.key, now - delta(span), limit).await?;
            slots.push(window_slot(now, span, nth));
        }
    }
    let wait = next_slot(now, row.blocked_until, &slots).map(|at| (at - now).to_std().unwrap_or_default());
    // Twice the longest span: room for a margin grown since.
    let keep = keep.unwrap_or(rules.span(0, margin)) * 2;
    // A slot past due (a limit of 0 whose call aged out) lets one call probe.
    let room = if wait.is_some() { 0 } else { room.max(1) };
    Ok(Slot { now, wait, room, keep })
}

/// Logs `n` admitted calls, and forgets calls older than the log keeps. They are logged at the
/// database's clock now, after their batches were claimed, not when the slot was decided: the
/// closer to when the calls leave, the surer the margin covers their way to Apollo (a later time
/// only keeps them counted longer).
async fn log_calls<C: ConnectionTrait>(db: &C, rules: &RateRules, slot: &Slot, n: usize) -> StoreResult<()> {
    let at = db_clock(db).await?.max(slot.now);
    let call = || rate_limit_call::ActiveModel { key: Set(rules.key.clone()), at: Set(at), ..Default::default() };
    rate_limit_call::Entity::insert_many((0..n).map(|_| call())).exec_without_returning(db).await?;
    rate_limit_call::Entity::delete_many()
        .filter(rate_limit_call::Column::Key.eq(&rules.key))
        .filter(rate_limit_call::Column::At.lte(slot.now - delta(slot.keep)))
        .exec(db)
        .await?;
    Ok(())
}

impl Store {
    /// The clock replicas compare times with: the database's on PostgreSQL, this process's on
    /// SQLite (one process).
    pub async fn clock_now(&self) -> StoreResult<DateTime<Utc>> {
        db_clock(&self.db).await
    }

    /// Takes rate slots for `rules.key` and claims a batch for each, up to `max` (as many as the
    /// limits have room for now), in one transaction under the key's row lock, on the database's
    /// clock; or says how long to wait, or that there is nothing to send (no slot taken). See
    /// [`Store::claim_batch`] for what a claim does.
    pub async fn claim_admitted(
        &self,
        owner: &str,
        lease: Duration,
        rules: &RateRules,
        max: usize,
    ) -> StoreResult<Admitted> {
        let (txn, _gate) = self.write_txn().await?;
        let slot = check_slot(&txn, rules).await?;
        if let Some(wait) = slot.wait {
            txn.commit().await?;
            return Ok(Admitted::Wait(wait));
        }
        let n = usize::try_from(slot.room).unwrap_or(usize::MAX).min(max.max(1));
        let mut batches = Vec::with_capacity(n);
        // The job counters of every claim are written once, last: the job rows stay locked only
        // for the commit, not while the other batches are formed (answers and merges wait on them).
        let mut tally = Tally::default();
        while batches.len() < n {
            match crate::claims::claim_in(&txn, &mut tally, owner, lease, slot.now).await? {
                Some(batch) => batches.push(batch),
                None => break,
            }
        }
        if !batches.is_empty() {
            log_calls(&txn, rules, &slot, batches.len()).await?;
        }
        // Also with no batch: keep what the claim tidied (a retry with nobody left failed, erased
        // people cancelled).
        tally.flush(&txn, slot.now).await?;
        txn.commit().await?;
        Ok(if batches.is_empty() { Admitted::Idle } else { Admitted::Claimed(batches) })
    }

    /// Takes a rate slot for a call outside the claim loop (a probe), or says how long to wait.
    pub async fn take_rate_slot(&self, rules: &RateRules) -> StoreResult<Option<Duration>> {
        let (txn, _gate) = self.write_txn().await?;
        let slot = check_slot(&txn, rules).await?;
        if slot.wait.is_none() {
            log_calls(&txn, rules, &slot, 1).await?;
        }
        txn.commit().await?;
        Ok(slot.wait)
    }

    /// Learns from an answer's rate-limit headers: stated limits, and windows with none left
    /// (closed until our oldest call in them ages out).
    pub async fn observe_rate_headers(&self, rules: &RateRules, headers: &RateLimit) -> StoreResult<()> {
        self.update_limiter(rules, headers, None).await
    }

    /// A 429: nothing goes for any replica before `retry-after` (a minute's length when Apollo
    /// gave none); the headers are learned as by [`Store::observe_rate_headers`].
    pub async fn record_rate_limited(&self, rules: &RateRules, headers: &RateLimit) -> StoreResult<()> {
        let wait = headers.retry_after.unwrap_or(rules.span(0, rules.margin));
        self.update_limiter(rules, headers, Some(wait)).await
    }

    /// The shared limiter's allowance for `rules.key` now, on the database's clock: the calls of
    /// each window counted by one query over the call log.
    pub async fn allowance(&self, rules: &RateRules) -> StoreResult<Allowance> {
        let now = db_clock(&self.db).await?;
        let backend = self.db.get_database_backend();
        let sql = match backend {
            DbBackend::Postgres => {
                "SELECT COUNT(CASE WHEN at > $1 THEN 1 END) AS minute, COUNT(CASE WHEN at > $2 THEN 1 END) AS hour, \
                 COUNT(CASE WHEN at > $3 THEN 1 END) AS day FROM rate_limit_calls WHERE key = $4"
            }
            _ => {
                "SELECT COUNT(CASE WHEN at > ? THEN 1 END) AS minute, COUNT(CASE WHEN at > ? THEN 1 END) AS hour, \
                 COUNT(CASE WHEN at > ? THEN 1 END) AS day FROM rate_limit_calls WHERE key = ?"
            }
        };
        let row = self.rate_limiter(&rules.key).await?;
        let margin = rules.margin_with(margin_on(row.as_ref()));
        let spans = [0, 1, 2].map(|i| rules.span(i, margin));
        let [m, h, d] = spans.map(|span| now - delta(span));
        let values = [m.into(), h.into(), d.into(), rules.key.as_str().into()];
        let counts = self
            .db
            .query_one_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?
            .ok_or_else(|| crate::error::StoreError::Corrupt("a count returned no row".into()))?;
        let mut used = [0u64; 3];
        for (u, col) in used.iter_mut().zip(["minute", "hour", "day"]) {
            *u = u64::try_from(counts.try_get::<i64>("", col)?).unwrap_or(0);
        }
        let stated = row.as_ref().map(learned).unwrap_or_default();
        let windows = [0, 1, 2].map(|i| window_allowance(spans[i], rules.windows[i].limit, stated[i], used[i]));
        Ok(Allowance {
            windows,
            blocked_until: row.as_ref().and_then(|r| r.blocked_until).filter(|t| *t > now),
            rate_limited: row.map_or(0, |r| r.rate_limited),
            margin,
        })
    }

    /// The shared limiter's row for a key (tests and operators).
    pub async fn rate_limiter(&self, key: &str) -> StoreResult<Option<rate_limiter::Model>> {
        Ok(rate_limiter::Entity::find_by_id(key.to_owned()).one(&self.db).await?)
    }

    async fn update_limiter(&self, rules: &RateRules, h: &RateLimit, blocked_for: Option<Duration>) -> StoreResult<()> {
        let mine = i64::try_from(rules.margin.as_millis()).unwrap_or(i64::MAX);
        let hold = rules.windows[0].len;
        let stored_margin = |row: &rate_limiter::Model| row.margin_ms.zip(row.margin_at);
        // Most answers change nothing (the same limit stated, calls left, the margin stored):
        // skip the row lock then, so answers do not queue behind claims.
        let stated = h.windows();
        if blocked_for.is_none() && stated.iter().all(|w| w.left != Some(0)) {
            let known = self.rate_limiter(&rules.key).await?;
            if known.is_some_and(|row| {
                learned(&row).iter().zip(stated).all(|(l, w)| learn(*l, w.limit) == *l)
                    && shared_margin(stored_margin(&row), mine, crate::clock::now(), hold).is_none()
            }) {
                return Ok(());
            }
        }
        let (txn, _gate) = self.write_txn().await?;
        let row = lock_row(&txn, &rules.key).await?;
        let now = db_clock(&txn).await?;
        let margin = rules.margin_with(margin_on(Some(&row)));
        let mut blocked = row.blocked_until.filter(|t| *t > now);
        let mut later = |t: DateTime<Utc>| blocked = Some(blocked.map_or(t, |b| b.max(t)));
        let prev = learned(&row);
        for (i, (rule, w)) in rules.windows.iter().zip(stated).enumerate() {
            if w.left != Some(0) {
                continue;
            }
            let span = rules.span(i, margin);
            // None left though our own calls leave room: another client uses the key. (When our
            // calls fill the window, the limit already holds them back.)
            if let Some(limit) = effective_limit(rule.limit, learn(prev[i], w.limit))
                && calls_since(&txn, &rules.key, now - delta(span)).await? >= u64::from(limit)
            {
                continue;
            }
            let oldest = rate_limit_call::Entity::find()
                .select_only()
                .column(rate_limit_call::Column::At)
                .filter(rate_limit_call::Column::Key.eq(&rules.key))
                .filter(rate_limit_call::Column::At.gt(now - delta(span)))
                .order_by_asc(rate_limit_call::Column::At)
                .limit(1)
                .into_tuple()
                .one(&txn)
                .await?;
            later(closed_until(now, span, oldest));
        }
        if let Some(wait) = blocked_for {
            later(now + delta(wait));
        }
        let mut update = rate_limiter::ActiveModel {
            key: Set(row.key.clone()),
            learned_minute: Set(learn(prev[0], h.minute.limit)),
            learned_hour: Set(learn(prev[1], h.hour.limit)),
            learned_day: Set(learn(prev[2], h.day.limit)),
            blocked_until: Set(blocked),
            rate_limited: Set(row.rate_limited + i64::from(blocked_for.is_some())),
            updated_at: Set(now),
            ..Default::default()
        };
        if let Some(ms) = shared_margin(stored_margin(&row), mine, now, hold) {
            update.margin_ms = Set(Some(ms));
            update.margin_at = Set(Some(now));
        }
        rate_limiter::Entity::update(update).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_hide_the_key_and_are_stable() {
        let f = key_fingerprint("secret-apollo-key");
        assert!(!f.contains("secret"));
        assert_eq!(f, key_fingerprint("secret-apollo-key"));
        assert_ne!(f, key_fingerprint("other-key"));
    }
}
