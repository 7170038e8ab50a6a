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

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use apollo_client::{RateLimit, WindowLimit};
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::{LockType, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};

use crate::counters::Tally;
use crate::entities::{rate_limit_call, rate_limiter};
use crate::{ClaimedBatch, Store, StoreResult, sha256_hex, ts};

/// One window's length and configured limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowRule {
    /// Apollo's length of the window.
    pub len: Duration,
    /// The configured limit; `None`: only what Apollo's headers state.
    pub limit: Option<u32>,
}

/// The shared limiter's rules for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateRules {
    /// The key's fingerprint ([`key_fingerprint`]).
    pub key: String,
    /// Minute, hour and day.
    pub windows: [WindowRule; 3],
    /// The margin this replica measured ([`measured_margin`]).
    pub margin: Duration,
}

impl RateRules {
    /// The margin decided with: this replica's, or the larger one another replica stored.
    fn margin_with(&self, row: Option<&rate_limiter::Model>) -> Duration {
        let stored = row.and_then(|r| r.margin_ms).map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        self.margin.max(stored.unwrap_or_default())
    }

    /// The sliding log's span of window `i`: Apollo's length plus the margin.
    fn span(&self, i: usize, margin: Duration) -> Duration {
        self.windows[i].len + margin
    }
}

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

/// The limit in force: the configured one, tightened (never loosened) by the stated one.
pub fn effective_limit(configured: Option<u32>, learned: Option<i64>) -> Option<u32> {
    let learned = learned.map(|l| u32::try_from(l.max(0)).unwrap_or(u32::MAX));
    match (configured, learned) {
        (Some(c), Some(l)) => Some(c.min(l)),
        (c, l) => c.or(l),
    }
}

/// One window's allowance as the system page shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowAllowance {
    /// The window's length (margin included).
    pub len: Duration,
    /// The configured limit.
    pub configured: Option<u32>,
    /// The limit Apollo's headers stated.
    pub learned: Option<i64>,
    /// The limit in force ([`effective_limit`]); `None`: no limit.
    pub limit: Option<u32>,
    /// Calls admitted in the last `len` (the shared log keeps calls only as long as the longest
    /// limited window, so a longer window without a limit counts only those).
    pub used: u64,
    /// Calls still allowed now (0 when over a limit lowered since); `None`: no limit.
    pub left: Option<u64>,
}

/// A window's allowance from its limits and the calls counted in it.
pub fn window_allowance(len: Duration, configured: Option<u32>, learned: Option<i64>, used: u64) -> WindowAllowance {
    let limit = effective_limit(configured, learned);
    WindowAllowance { len, configured, learned, limit, used, left: limit.map(|l| u64::from(l).saturating_sub(used)) }
}

/// The limiter's state for operators: each window's allowance, and until when no call may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    /// Minute, hour and day.
    pub windows: [WindowAllowance; 3],
    /// No call before this (a 429's retry-after, a window Apollo said is used up), if later than now.
    pub blocked_until: Option<DateTime<Utc>>,
    /// 429s drawn.
    pub rate_limited: i64,
    /// The margin each window's span adds to Apollo's length ([`measured_margin`]).
    pub margin: Duration,
}

/// When one window lets the next call go, or `None` for now: a span after `nth`, the `limit`-th
/// newest admitted call inside it (`None` while it holds fewer).
pub fn window_slot(now: DateTime<Utc>, len: Duration, nth: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    nth.map(|t| t + delta(len)).filter(|t| *t > now)
}

/// When the next call may go, or `None` for now: the latest of every window's slot and a block.
pub fn next_slot(
    now: DateTime<Utc>,
    blocked_until: Option<DateTime<Utc>>,
    slots: &[Option<DateTime<Utc>>],
) -> Option<DateTime<Utc>> {
    slots.iter().flatten().copied().chain(blocked_until).filter(|t| *t > now).max()
}

/// Until when a window the headers say is used up stays closed: our oldest call still inside it
/// plus the window's length, which is never later than Apollo's own reset of that fixed window;
/// a whole window from now when we have no call in it (another client used the key).
pub fn closed_until(now: DateTime<Utc>, len: Duration, oldest_in_window: Option<DateTime<Utc>>) -> DateTime<Utc> {
    oldest_in_window.unwrap_or(now) + delta(len)
}

/// The learned limit after an answer: stated limits replace it, an empty header clears it, and an
/// absent header (401/403 answers) leaves it.
pub fn learn(previous: Option<i64>, stated: WindowLimit) -> Option<i64> {
    match stated {
        WindowLimit::Max(n) => Some(i64::try_from(n).unwrap_or(i64::MAX)),
        WindowLimit::Unlimited => None,
        WindowLimit::Unknown => previous,
    }
}

/// The times from admitting a key's recent calls to their answers, from which the margin is
/// measured.
#[derive(Clone, Debug, Default)]
pub struct AnswerTimes {
    recent: VecDeque<Duration>,
    /// When recent calls were admitted (a slot taken), oldest first.
    admitted: VecDeque<Instant>,
}

/// How many recent answers the margin is measured over.
const ANSWERS_KEPT: usize = 200;

impl AnswerTimes {
    /// A call was admitted at `at`.
    pub fn admit(&mut self, at: Instant) {
        if self.admitted.len() == ANSWERS_KEPT {
            self.admitted.pop_front();
        }
        self.admitted.push_back(at);
    }

    /// The last `n` admissions were given back (slots counted, not taken).
    pub fn give_back(&mut self, n: usize) {
        self.admitted.truncate(self.admitted.len().saturating_sub(n));
    }

    /// Adds one call's time from its admission to its answer: the call sent at `sent` was
    /// admitted at the latest admission no later than that (or at `sent`, when none is kept), so
    /// the wait between a slot and the send (a claim, a task waiting for a busy CPU) counts too.
    pub fn record(&mut self, sent: Instant, answered: Instant) {
        let admitted = self.admitted.iter().rev().find(|t| **t <= sent).copied().unwrap_or(sent);
        if self.recent.len() == ANSWERS_KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(answered.saturating_duration_since(admitted));
    }

    /// The margin these answers call for ([`measured_margin`]).
    pub fn margin(&self, minute: Duration) -> Duration {
        measured_margin(self.recent.iter().copied(), minute)
    }
}

/// The margin each window adds to Apollo's length: the longest a call may take from our
/// decision to Apollo's count. Apollo counts a call before it answers it, so that is at most the
/// time from admitting it to its answer: the 99th percentile of recent ones, and 5 ms. Before any answer, a twentieth of a minute; never over a tenth of one
/// (slow answers must not stall dispatch).
pub fn measured_margin(recent: impl Iterator<Item = Duration>, minute: Duration) -> Duration {
    let mut times: Vec<Duration> = recent.collect();
    if times.is_empty() {
        return minute / 20;
    }
    times.sort_unstable();
    // Nearest rank: with fewer than 100 answers, the longest.
    let rank = (times.len() * 99).div_ceil(100).max(1);
    let p99 = times[rank - 1];
    (p99 + Duration::from_millis(5)).min(minute / 10)
}

/// The margin to store for every replica, or `None` to leave the stored one: a replica's own
/// replaces it when larger, or when the stored one is older than `hold` (the replica that
/// measured it has not confirmed it since), so a margin falls again once nobody measures it.
pub fn shared_margin(
    stored: Option<(i64, DateTime<Utc>)>,
    mine_ms: i64,
    now: DateTime<Utc>,
    hold: Duration,
) -> Option<i64> {
    match stored {
        Some((ms, at)) if mine_ms <= ms && now - at < delta(hold) => None,
        _ => Some(mine_ms),
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// The database's clock: PostgreSQL's `clock_timestamp()` (not `now()`, which is the start of the
/// transaction, before any lock wait); SQLite is embedded, so its clock is this process's. Each
/// read also updates the skew [`crate::now`] corrects this process's clock by.
pub(crate) async fn db_clock<C: ConnectionTrait>(db: &C) -> StoreResult<DateTime<Utc>> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(crate::now());
    }
    let before = Utc::now();
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT clock_timestamp() AS now"))
        .await?
        .ok_or_else(|| crate::StoreError::Corrupt("clock_timestamp() returned no row".into()))?;
    let db_now = ts(row.try_get::<DateTime<Utc>>("", "now")?);
    crate::observe_skew(before, Utc::now(), db_now);
    Ok(db_now)
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
        updated_at: Set(crate::now()),
    };
    rate_limiter::Entity::insert(fresh)
        .on_conflict(OnConflict::column(rate_limiter::Column::Key).do_nothing().to_owned())
        .exec_without_returning(db)
        .await?;
    crate::sql::by_key(db, rate_limiter::Entity::find_by_id(key.to_owned()).lock(LockType::Update))
        .await?
        .ok_or_else(|| crate::StoreError::Corrupt(format!("rate limiter row {key} vanished")))
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
    let margin = rules.margin_with(Some(&row));
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
        let margin = rules.margin_with(row.as_ref());
        let spans = [0, 1, 2].map(|i| rules.span(i, margin));
        let [m, h, d] = spans.map(|span| now - delta(span));
        let values = [m.into(), h.into(), d.into(), rules.key.as_str().into()];
        let counts = self
            .db
            .query_one_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?
            .ok_or_else(|| crate::StoreError::Corrupt("a count returned no row".into()))?;
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
                    && shared_margin(stored_margin(&row), mine, crate::now(), hold).is_none()
            }) {
                return Ok(());
            }
        }
        let (txn, _gate) = self.write_txn().await?;
        let row = lock_row(&txn, &rules.key).await?;
        let now = db_clock(&txn).await?;
        let margin = rules.margin_with(Some(&row));
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

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_slot_frees_when_the_limit_th_newest_call_ages_out() {
        let slot = |now, nth| window_slot(now, SEC, nth);
        // Under the limit in every window: now.
        assert_eq!(next_slot(at(0), None, &[slot(at(0), None), slot(at(0), None)]), None);
        // The minute window is full since its limit-th newest call at 200 ms.
        assert_eq!(next_slot(at(500), None, &[slot(at(500), Some(at(200))), None]), Some(at(1200)));
        // Already aged out: now.
        assert_eq!(next_slot(at(1200), None, &[slot(at(1200), Some(at(200)))]), None);
        // The latest of all constraints wins, a block included; a past block is ignored.
        assert_eq!(next_slot(at(500), Some(at(9000)), &[slot(at(500), Some(at(200)))]), Some(at(9000)));
        assert_eq!(next_slot(at(500), Some(at(400)), &[slot(at(500), Some(at(200)))]), Some(at(1200)));
        assert_eq!(next_slot(at(500), None, &[Some(at(700)), Some(at(1200))]), Some(at(1200)));
    }

    #[test]
    fn allowance_is_the_limit_in_force_less_the_calls_used() {
        let w = window_allowance(SEC, Some(40), Some(20), 7);
        assert_eq!((w.limit, w.used, w.left), (Some(20), 7, Some(13)));
        // Configured only, and used up exactly.
        assert_eq!(window_allowance(SEC, Some(5), None, 5).left, Some(0));
        // More used than a limit learned since: none left, never negative.
        assert_eq!(window_allowance(SEC, None, Some(3), 9).left, Some(0));
        // No limit at all: nothing to run out of.
        let free = window_allowance(SEC, None, None, 12);
        assert_eq!((free.limit, free.used, free.left), (None, 12, None));
        // A negative stated limit counts as zero.
        assert_eq!(window_allowance(SEC, None, Some(-1), 0).left, Some(0));
    }

    #[test]
    fn headers_only_tighten_and_absent_headers_keep_what_was_learned() {
        assert_eq!(effective_limit(Some(40), Some(20)), Some(20));
        assert_eq!(effective_limit(Some(10), Some(20)), Some(10));
        assert_eq!(effective_limit(None, Some(20)), Some(20));
        assert_eq!(effective_limit(Some(5), None), Some(5));
        assert_eq!(effective_limit(None, None), None);
        assert_eq!(learn(Some(20), WindowLimit::Unknown), Some(20));
        assert_eq!(learn(Some(20), WindowLimit::Unlimited), None);
        assert_eq!(learn(None, WindowLimit::Max(50)), Some(50));
    }

    #[test]
    fn a_used_up_window_closes_until_our_oldest_call_in_it_ages_out() {
        assert_eq!(closed_until(at(700), SEC, Some(at(100))), at(1100));
        assert_eq!(closed_until(at(700), SEC, None), at(1700));
    }

    #[test]
    fn fingerprints_hide_the_key_and_are_stable() {
        let f = key_fingerprint("secret-apollo-key");
        assert!(!f.contains("secret"));
        assert_eq!(f, key_fingerprint("secret-apollo-key"));
        assert_ne!(f, key_fingerprint("other-key"));
    }

    /// The sliding log's guarantee, simulated with the pure rule: asking every millisecond for
    /// ten windows, no window-length span holds more than the limit, and the full rate is used.
    #[test]
    fn never_more_than_the_limit_in_any_span_and_full_rate_sustained() {
        let limit = 5usize;
        let mut log: Vec<DateTime<Utc>> = Vec::new();
        for ms in 0..10_000 {
            let now = at(ms);
            // Take every slot free at this instant.
            loop {
                let nth = log.iter().rev().filter(|t| now - **t < delta(SEC)).nth(limit - 1).copied();
                if next_slot(now, None, &[window_slot(now, SEC, nth)]).is_some() {
                    break;
                }
                log.push(now);
            }
        }
        for (i, start) in log.iter().enumerate() {
            let n = log[i..].iter().take_while(|t| **t - *start < delta(SEC)).count();
            assert!(n <= limit, "{n} calls in the second from {start}");
        }
        assert_eq!(log.len(), 50, "the whole allowance of each of ten windows");
        assert_eq!(log[4], at(0), "a window's allowance is usable at once");
    }

    #[test]
    fn the_margin_is_a_high_percentile_of_answer_times() {
        let minute = Duration::from_secs(60);
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let took = |t: &mut AnswerTimes, d: Duration| t.record(t0, t0 + d);
        // Before any answer: a twentieth of a minute.
        assert_eq!(AnswerTimes::default().margin(minute), ms(3_000));
        // Fewer than 100 answers: the longest, and 5 ms.
        let mut t = AnswerTimes::default();
        for d in [10, 40, 20] {
            took(&mut t, ms(d));
        }
        assert_eq!(t.margin(minute), ms(45));
        // 200 answers, two of them slow: the 99th percentile leaves the slowest out.
        let mut t = AnswerTimes::default();
        for i in 0..200 {
            took(&mut t, ms(if i % 100 == 7 { 900 } else { 8 + i % 5 }));
        }
        assert_eq!(t.margin(minute), ms(12 + 5));
        // Only the last 200 count: old slow answers are forgotten.
        for _ in 0..200 {
            took(&mut t, ms(4));
        }
        assert_eq!(t.margin(minute), ms(9));
        // Never more than a tenth of a minute.
        for _ in 0..3 {
            took(&mut t, ms(50_000));
        }
        assert_eq!(t.margin(minute), ms(6_000));
        // From the latest admission before the send: the wait for the send counts.
        let mut t = AnswerTimes::default();
        t.admit(t0);
        t.admit(t0 + ms(30));
        t.give_back(1);
        t.record(t0 + ms(20), t0 + ms(25));
        assert_eq!(t.margin(minute), ms(30));
    }

    #[test]
    fn the_shared_margin_is_the_largest_measured_lately() {
        let hold = SEC;
        // Nothing stored: store mine.
        assert_eq!(shared_margin(None, 30, at(0), hold), Some(30));
        // A larger one stored and fresh: leave it; mine larger: replace it.
        assert_eq!(shared_margin(Some((50, at(0))), 30, at(500), hold), None);
        assert_eq!(shared_margin(Some((50, at(0))), 50, at(500), hold), None);
        assert_eq!(shared_margin(Some((50, at(0))), 70, at(500), hold), Some(70));
        // Unconfirmed for a window: it falls to mine.
        assert_eq!(shared_margin(Some((50, at(0))), 30, at(1_000), hold), Some(30));
    }
}
