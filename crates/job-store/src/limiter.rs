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
//! The key is named by a fingerprint (a hash), never stored. Limits Apollo's headers state and a
//! 429's `retry-after` are stored on the key's row, so one replica's 429 pauses all of them.

use std::time::Duration;

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

/// One window's configured length and limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowRule {
    /// Its length (a margin included: the delay between our decision and Apollo's receipt).
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
    /// The margin each window's `len` includes (Apollo's window is `len - margin`).
    pub margin: Duration,
}

impl RateRules {
    /// Apollo's length of window `i` and the margin, in milliseconds, as the restart rules take them.
    fn period_ms(&self, i: usize) -> (i64, i64) {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        (ms(self.windows[i].len.saturating_sub(self.margin)), ms(self.margin))
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
}

/// When one window lets the next call go, or `None` for now: its sliding log's slot (`nth` is the
/// `limit`-th newest admitted call inside it, `None` while it holds fewer) or, when Apollo's
/// restart is known, the sooner of that and the fixed window's slot (`Some(None)`: free now).
pub fn window_slot(
    now: DateTime<Utc>,
    len: Duration,
    nth: Option<DateTime<Utc>>,
    fixed: Option<Option<DateTime<Utc>>>,
) -> Option<DateTime<Utc>> {
    let sliding = nth.map(|t| t + delta(len)).filter(|t| *t > now)?;
    match fixed {
        None => Some(sliding),
        Some(fixed) => fixed.map(|f| f.min(sliding)),
    }
}

/// How many calls one window lets go now: the room its sliding log has (`in_window` calls in the
/// last window length) or, when Apollo's restart is known, the room in Apollo's fixed window
/// (`fixed`: the calls that may share it) if that is more. Each rule alone keeps every window
/// within its limit whichever rule let the other calls go, so the larger room is safe.
pub fn window_room(limit: u32, in_window: u64, fixed: Option<u64>) -> u64 {
    let room = |n: u64| u64::from(limit).saturating_sub(n);
    room(in_window).max(fixed.map_or(0, room))
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

/// Where Apollo's fixed window restarts, as far as its usage counts have shown: a restart fell
/// somewhere in `lo..=hi` (milliseconds on the limiter's clock), and the next ones fall every
/// window length after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restart {
    /// The earliest the restart can have been.
    pub lo: i64,
    /// The latest it can have been.
    pub hi: i64,
}

/// One reading of a window's usage count: when the request was sent and its answer came, and
/// how many calls the window had counted before and after Apollo received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageReading {
    /// Sent (milliseconds on the limiter's clock).
    pub sent: i64,
    /// Answered.
    pub answered: i64,
    /// Calls counted before this request arrived.
    pub before: u64,
    /// Calls counted after it (one more when it was a call Apollo counted).
    pub after: u64,
}

/// A time in microseconds as a reading's millisecond: rounded down for a sending (it may only be
/// earlier) and up for an answer (it may only be later), so readings in the same millisecond
/// never look ordered when they were not.
pub fn reading_ms(micros: i64, answer: bool) -> i64 {
    if answer { micros.div_euclid(1000) + i64::from(micros.rem_euclid(1000) != 0) } else { micros.div_euclid(1000) }
}

impl UsageReading {
    /// An accepted call's headers: the usage they state counts the call itself.
    pub fn of_call(sent: i64, answered: i64, used: u64) -> UsageReading {
        UsageReading { sent, answered, before: used.saturating_sub(1), after: used }
    }

    /// A request that counted nothing (a 429, the usage-stats endpoint).
    pub fn of_probe(sent: i64, answered: i64, used: u64) -> UsageReading {
        UsageReading { sent, answered, before: used, after: used }
    }

    /// [`UsageReading::of_call`] when Apollo `counted` the request, else [`UsageReading::of_probe`].
    pub fn of(sent: i64, answered: i64, used: u64, counted: bool) -> UsageReading {
        if counted { UsageReading::of_call(sent, answered, used) } else { UsageReading::of_probe(sent, answered, used) }
    }
}

/// The restart two readings prove. Within one window the count only grows, so when `later`
/// surely reached Apollo after `earlier` (it was sent after `earlier` was answered) yet found
/// fewer calls counted than `earlier` left, the window restarted between `earlier`'s sending and
/// `later`'s answer.
pub fn restart_between(earlier: &UsageReading, later: &UsageReading) -> Option<Restart> {
    (later.sent >= earlier.answered && later.before < earlier.after)
        .then_some(Restart { lo: earlier.sent, hi: later.answered })
}

/// What is known of the restarts after `seen` (an interval holding one) is added to `known`:
/// both hold a restart and restarts repeat every `len`, so the answer is their overlap, placed at
/// `seen`'s (the newer) restart. Two intervals together a window wide or more could overlap at
/// two shifts, only one holding the restart: then the narrower one is kept as it is. An interval
/// as wide as a window says nothing; one that contradicts `known` (Apollo's windows moved, or a
/// clock jumped) replaces it.
pub fn narrow(known: Option<Restart>, seen: Restart, len: i64) -> Option<Restart> {
    if len <= 0 || seen.hi < seen.lo || seen.hi - seen.lo >= len {
        return known;
    }
    let Some(k) = known else { return Some(seen) };
    if (k.hi - k.lo) + (seen.hi - seen.lo) >= len {
        return Some(if seen.hi - seen.lo <= k.hi - k.lo { seen } else { k });
    }
    let n = (seen.lo - k.lo).div_euclid(len);
    (n - 1..=n + 1)
        .map(|n| Restart { lo: (k.lo + n * len).max(seen.lo), hi: (k.hi + n * len).min(seen.hi) })
        .find(|r| r.lo <= r.hi)
        .or(Some(seen))
}

/// Whether a known restart is precise enough to count calls by Apollo's own windows: its
/// uncertainty is at most a quarter window (calls are kept in the log long enough for that).
pub fn usable(restart: Restart, len: i64) -> bool {
    restart.hi - restart.lo <= len / 4
}

/// Apollo's fixed window that `now` falls in, by a known restart: a call may share it with every
/// call sent after the first instant (the earliest the window can have started, less `margin`, the
/// longest a call takes to reach Apollo), and the next window has surely started at the second.
pub fn fixed_window(restart: Restart, len: i64, margin: i64, now: i64) -> (i64, i64) {
    let k = (now - restart.hi).div_euclid(len.max(1));
    (restart.lo + k * len - margin, restart.hi + (k + 1) * len)
}

/// When a call may go by Apollo's fixed window: `None` (now) while fewer than `limit` calls may
/// share the window `now` falls in (`counted` of them were sent after [`fixed_window`]'s first
/// instant), else when the next window has surely started.
pub fn fixed_window_slot(next_window: i64, counted: u64, limit: u32) -> Option<i64> {
    (counted >= u64::from(limit)).then_some(next_window)
}

/// The usage readings one process has seen for one window, kept to find where the window
/// restarts ([`restart_between`] over every pair, newest first).
#[derive(Clone, Debug, Default)]
pub struct RestartFinder {
    readings: std::collections::VecDeque<UsageReading>,
}

/// How many recent readings are compared with each new one.
const READINGS_KEPT: usize = 32;

impl RestartFinder {
    /// Adds a reading; returns the narrowest restart it proves together with an earlier one.
    pub fn add(&mut self, r: UsageReading) -> Option<Restart> {
        let found = self
            .readings
            .iter()
            .filter_map(|old| restart_between(old, &r).or_else(|| restart_between(&r, old)))
            .min_by_key(|x| x.hi - x.lo);
        if self.readings.len() == READINGS_KEPT {
            self.readings.pop_front();
        }
        self.readings.push_back(r);
        found
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
        restart_minute_lo: Set(None),
        restart_minute_hi: Set(None),
        restart_hour_lo: Set(None),
        restart_hour_hi: Set(None),
        restart_day_lo: Set(None),
        restart_day_hi: Set(None),
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

/// The restarts stored on a key's row, per window.
fn restarts(row: &rate_limiter::Model) -> [Option<Restart>; 3] {
    let r = |lo: Option<i64>, hi: Option<i64>| Some(Restart { lo: lo?, hi: hi? });
    [
        r(row.restart_minute_lo, row.restart_minute_hi),
        r(row.restart_hour_lo, row.restart_hour_hi),
        r(row.restart_day_lo, row.restart_day_hi),
    ]
}

/// Sets a row's restarts.
fn set_restarts(update: &mut rate_limiter::ActiveModel, r: [Option<Restart>; 3]) {
    update.restart_minute_lo = Set(r[0].map(|r| r.lo));
    update.restart_minute_hi = Set(r[0].map(|r| r.hi));
    update.restart_hour_lo = Set(r[1].map(|r| r.lo));
    update.restart_hour_hi = Set(r[1].map(|r| r.hi));
    update.restart_day_lo = Set(r[2].map(|r| r.lo));
    update.restart_day_hi = Set(r[2].map(|r| r.hi));
}

/// Calls logged for a key after `since`.
async fn calls_since<C: ConnectionTrait>(db: &C, key: &str, since: DateTime<Utc>) -> StoreResult<u64> {
    Ok(rate_limit_call::Entity::find()
        .filter(rate_limit_call::Column::Key.eq(key))
        .filter(rate_limit_call::Column::At.gt(since))
        .count(db)
        .await?)
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
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

/// Locks the key's row and decides how many calls may go now: per limited window, as many as the
/// sliding log or (once the restart is known) Apollo's fixed window has room for.
async fn check_slot<C: ConnectionTrait>(db: &C, rules: &RateRules) -> StoreResult<Slot> {
    let row = lock_row(db, &rules.key).await?;
    let now = db_clock(db).await?;
    let known = restarts(&row);
    let (mut slots, mut keep, mut room) = (Vec::with_capacity(3), None, u64::MAX);
    for (i, (rule, learned)) in rules.windows.iter().zip(learned(&row)).enumerate() {
        let Some(limit) = effective_limit(rule.limit, learned) else { continue };
        keep = keep.max(Some(rule.len));
        let in_window = calls_since(db, &rules.key, now - delta(rule.len)).await?;
        let (period, margin) = rules.period_ms(i);
        let fixed = match known[i].filter(|r| usable(*r, period)) {
            Some(restart) => {
                let (from, next) = fixed_window(restart, period, margin, now.timestamp_millis());
                Some((calls_since(db, &rules.key, at_ms(from)).await?, next))
            }
            None => None,
        };
        let free = window_room(limit, in_window, fixed.map(|(counted, _)| counted));
        room = room.min(free);
        if free == 0 {
            let nth = nth_newest(db, &rules.key, now - delta(rule.len), limit).await?;
            let fixed = fixed.map(|(counted, next)| fixed_window_slot(next, counted, limit).map(at_ms));
            slots.push(window_slot(now, rule.len, nth, fixed));
        }
    }
    let wait = next_slot(now, row.blocked_until, &slots).map(|at| (at - now).to_std().unwrap_or_default());
    // Counting by Apollo's window looks back up to a window and a quarter: the log keeps two.
    let keep = keep.unwrap_or(rules.windows[0].len) * 2;
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
        let wait = headers.retry_after.unwrap_or(rules.windows[0].len);
        self.update_limiter(rules, headers, Some(wait)).await
    }

    /// Stores where Apollo's windows restart, as one replica's readings showed (`found`, per
    /// window, on the database's clock in milliseconds), narrowing what every replica knows.
    pub async fn learn_restarts(&self, rules: &RateRules, found: [Option<Restart>; 3]) -> StoreResult<()> {
        if found.iter().all(Option::is_none) {
            return Ok(());
        }
        let (txn, _gate) = self.write_txn().await?;
        let row = lock_row(&txn, &rules.key).await?;
        let mut known = restarts(&row);
        for (i, seen) in found.iter().enumerate() {
            if let Some(seen) = seen {
                known[i] = narrow(known[i], *seen, rules.period_ms(i).0);
            }
        }
        let mut update = rate_limiter::ActiveModel { key: Set(row.key), ..Default::default() };
        set_restarts(&mut update, known);
        rate_limiter::Entity::update(update).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Where Apollo's windows restart as the shared limiter knows it (tests and operators).
    pub async fn window_restarts(&self, key: &str) -> StoreResult<[Option<Restart>; 3]> {
        Ok(self.rate_limiter(key).await?.as_ref().map(restarts).unwrap_or_default())
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
        let [m, h, d] = rules.windows.map(|w| now - delta(w.len));
        let values = [m.into(), h.into(), d.into(), rules.key.as_str().into()];
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?
            .ok_or_else(|| crate::StoreError::Corrupt("a count returned no row".into()))?;
        let mut used = [0u64; 3];
        for (u, col) in used.iter_mut().zip(["minute", "hour", "day"]) {
            *u = u64::try_from(row.try_get::<i64>("", col)?).unwrap_or(0);
        }
        let row = self.rate_limiter(&rules.key).await?;
        let stated = row.as_ref().map(learned).unwrap_or_default();
        let windows =
            [0, 1, 2].map(|i| window_allowance(rules.windows[i].len, rules.windows[i].limit, stated[i], used[i]));
        Ok(Allowance {
            windows,
            blocked_until: row.as_ref().and_then(|r| r.blocked_until).filter(|t| *t > now),
            rate_limited: row.map_or(0, |r| r.rate_limited),
        })
    }

    /// The shared limiter's row for a key (tests and operators).
    pub async fn rate_limiter(&self, key: &str) -> StoreResult<Option<rate_limiter::Model>> {
        Ok(rate_limiter::Entity::find_by_id(key.to_owned()).one(&self.db).await?)
    }

    async fn update_limiter(&self, rules: &RateRules, h: &RateLimit, blocked_for: Option<Duration>) -> StoreResult<()> {
        // Most answers change nothing (the same limit stated, calls left): skip the row lock then,
        // so answers do not queue behind claims.
        let stated = h.windows();
        if blocked_for.is_none() && stated.iter().all(|w| w.left != Some(0)) {
            let known = self.rate_limiter(&rules.key).await?;
            if known.is_some_and(|row| learned(&row).iter().zip(stated).all(|(l, w)| learn(*l, w.limit) == *l)) {
                return Ok(());
            }
        }
        let (txn, _gate) = self.write_txn().await?;
        let row = lock_row(&txn, &rules.key).await?;
        let now = db_clock(&txn).await?;
        let mut blocked = row.blocked_until.filter(|t| *t > now);
        let mut later = |t: DateTime<Utc>| blocked = Some(blocked.map_or(t, |b| b.max(t)));
        let mut known = restarts(&row);
        let prev = learned(&row);
        for (i, (rule, w)) in rules.windows.iter().zip(stated).enumerate() {
            if w.left != Some(0) {
                continue;
            }
            // None left though our own calls leave room: another client uses the key. (When our
            // calls fill the window, the limit already holds them back, until a restart learned
            // later frees it.)
            if let Some(limit) = effective_limit(rule.limit, learn(prev[i], w.limit))
                && calls_since(&txn, &rules.key, now - delta(rule.len)).await? >= u64::from(limit)
            {
                continue;
            }
            let oldest = rate_limit_call::Entity::find()
                .select_only()
                .column(rate_limit_call::Column::At)
                .filter(rate_limit_call::Column::Key.eq(&rules.key))
                .filter(rate_limit_call::Column::At.gt(now - delta(rule.len)))
                .order_by_asc(rate_limit_call::Column::At)
                .limit(1)
                .into_tuple()
                .one(&txn)
                .await?;
            let mut until = closed_until(now, rule.len, oldest);
            let (period, margin) = rules.period_ms(i);
            if let Some(restart) = known[i].filter(|r| usable(*r, period)) {
                // Apollo's next restart after now is never earlier than its reset of the window
                // this answer was counted in.
                until = until.min(at_ms(fixed_window(restart, period, margin, now.timestamp_millis()).1));
            }
            later(until);
        }
        if let Some(wait) = blocked_for {
            later(now + delta(wait));
            // A 429 says our count of Apollo's window was wrong: forget where it restarts.
            known = [None; 3];
        }
        let mut update = rate_limiter::ActiveModel {
            key: Set(row.key),
            learned_minute: Set(learn(prev[0], h.minute.limit)),
            learned_hour: Set(learn(prev[1], h.hour.limit)),
            learned_day: Set(learn(prev[2], h.day.limit)),
            blocked_until: Set(blocked),
            rate_limited: Set(row.rate_limited + i64::from(blocked_for.is_some())),
            updated_at: Set(now),
            ..Default::default()
        };
        set_restarts(&mut update, known);
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
        let slot = |now, nth| window_slot(now, SEC, nth, None);
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
                if next_slot(now, None, &[window_slot(now, SEC, nth, None)]).is_some() {
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
    fn readings_round_outwards() {
        assert_eq!((reading_ms(1_000_400, false), reading_ms(1_000_400, true)), (1_000, 1_001));
        assert_eq!((reading_ms(1_000_000, false), reading_ms(1_000_000, true)), (1_000, 1_000));
        assert_eq!((reading_ms(-1_400, false), reading_ms(-1_400, true)), (-2, -1));
    }

    #[test]
    fn a_drop_in_usage_between_ordered_readings_proves_a_restart() {
        let call = UsageReading::of_call;
        // 30 used at 100..102, then 1 used by a call sent at 150: restarted in 100..=152.
        assert_eq!(restart_between(&call(100, 102, 30), &call(150, 152, 1)), Some(Restart { lo: 100, hi: 152 }));
        // A count that grew says nothing; nor does a reading that may have arrived first.
        assert_eq!(restart_between(&call(100, 102, 3), &call(150, 152, 4)), None);
        assert_eq!(restart_between(&call(100, 160, 30), &call(150, 152, 1)), None);
        // A probe counts nothing: the same count after a call is no drop, one less is.
        let probe = UsageReading::of_probe;
        assert_eq!(restart_between(&call(100, 102, 5), &probe(110, 111, 5)), None);
        assert_eq!(restart_between(&probe(100, 101, 5), &probe(110, 111, 4)), Some(Restart { lo: 100, hi: 111 }));
        // A call right after a probe that found 5 finds 6 in the same window, so 5 means a restart.
        assert_eq!(restart_between(&probe(100, 101, 5), &call(110, 111, 5)), Some(Restart { lo: 100, hi: 111 }));
        assert_eq!(restart_between(&probe(100, 101, 5), &call(110, 111, 6)), None);
    }

    #[test]
    fn restarts_narrow_across_windows_and_a_contradiction_replaces_them() {
        let r = |lo, hi| Restart { lo, hi };
        assert_eq!(narrow(None, r(100, 150), 1000), Some(r(100, 150)));
        // One window later, overlapping the known one shifted: the overlap, placed at the newer.
        assert_eq!(narrow(Some(r(100, 150)), r(1120, 1400), 1000), Some(r(1120, 1150)));
        assert_eq!(narrow(Some(r(100, 150)), r(3090, 3110), 1000), Some(r(3100, 3110)));
        // Earlier than the known one works the same.
        assert_eq!(narrow(Some(r(5100, 5150)), r(1140, 1160), 1000), Some(r(1140, 1150)));
        // Disjoint: Apollo's windows moved; the new reading wins.
        assert_eq!(narrow(Some(r(100, 150)), r(1600, 1610), 1000), Some(r(1600, 1610)));
        // Together a window wide: they might overlap at the wrong shift, so the narrower stays.
        assert_eq!(narrow(Some(r(100, 700)), r(1650, 2050), 1000), Some(r(1650, 2050)));
        assert_eq!(narrow(Some(r(100, 300)), r(1250, 2100), 1000), Some(r(100, 300)));
        // A window wide (or inverted): nothing learned.
        assert_eq!(narrow(Some(r(100, 150)), r(0, 1000), 1000), Some(r(100, 150)));
        assert_eq!(narrow(None, r(10, 5), 1000), None);
        assert!(usable(r(0, 250), 1000) && !usable(r(0, 251), 1000));
    }

    #[test]
    fn the_fixed_window_counts_calls_that_may_share_it_and_ends_at_the_latest_restart() {
        let r = Restart { lo: 990, hi: 1000 };
        // At 1500 the window began between 990 and 1000; a call sent up to 10 ms (the margin)
        // before 990 may have reached Apollo inside it. The next one has begun by 2000.
        assert_eq!(fixed_window(r, 1000, 10, 1500), (980, 2000));
        // At exactly the latest restart, that window; one ms before it, still the previous one.
        assert_eq!(fixed_window(r, 1000, 10, 2000), (1980, 3000));
        assert_eq!(fixed_window(r, 1000, 10, 1999), (980, 2000));
        // Before the known restart (a reading from the past): windows repeat backwards too.
        assert_eq!(fixed_window(r, 1000, 10, 500), (-20, 1000));
        assert_eq!(fixed_window_slot(2000, 4, 5), None);
        assert_eq!(fixed_window_slot(2000, 5, 5), Some(2000));
        // The sooner of the sliding log and the fixed window; either free means free.
        let nth = Some(at(200));
        assert_eq!(window_slot(at(500), SEC, nth, Some(Some(at(900)))), Some(at(900)));
        assert_eq!(window_slot(at(500), SEC, nth, Some(Some(at(1500)))), Some(at(1200)));
        assert_eq!(window_slot(at(500), SEC, nth, Some(None)), None);
        assert_eq!(window_slot(at(500), SEC, None, Some(Some(at(900)))), None);
    }

    #[test]
    fn the_finder_keeps_the_narrowest_restart_among_recent_readings() {
        let mut f = RestartFinder::default();
        let call = UsageReading::of_call;
        assert_eq!(f.add(call(0, 2, 28)), None);
        assert_eq!(f.add(call(40, 42, 29)), None);
        // Answered out of order: an earlier-sent reading added last still pairs.
        assert_eq!(f.add(call(90, 92, 1)), Some(Restart { lo: 40, hi: 92 }));
        assert_eq!(f.add(call(60, 62, 30)), Some(Restart { lo: 60, hi: 92 }));
        // Only the newest readings are kept.
        for i in 0..READINGS_KEPT as i64 {
            f.add(call(1_000 + i * 10, 1_001 + i * 10, 2 + i as u64));
        }
        assert_eq!(
            f.add(call(5_000, 5_001, 1)),
            Some(Restart { lo: 1_000 + (READINGS_KEPT as i64 - 1) * 10, hi: 5_001 })
        );
    }

    #[test]
    fn a_window_has_the_room_of_the_roomier_rule() {
        assert_eq!(window_room(30, 0, None), 30);
        assert_eq!(window_room(30, 28, None), 2);
        assert_eq!(window_room(30, 30, Some(0)), 30, "the sliding log is full, Apollo's window just restarted");
        assert_eq!(window_room(30, 5, Some(29)), 25);
        assert_eq!(window_room(30, 31, Some(40)), 0, "over a limit lowered since: none, never negative");
    }
}
