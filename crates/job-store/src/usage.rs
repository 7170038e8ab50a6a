//! The usage report (`GET /v1/usage`): one client's figures summed over its jobs created in a
//! window, from the counters kept in the job rows (no scan of people).

use std::collections::BTreeMap;

use apollo_client::Credits;
use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde::{Deserialize, Serialize};

use crate::entities::job;
use crate::error::StoreResult;
use crate::{CreditsByKind, Store};

/// A client's usage over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Jobs created in the window.
    pub jobs: i64,
    /// Their people.
    pub people: i64,
    /// Apollo calls answered for them (a call shared by several jobs counts for each).
    pub calls: i64,
    /// Credits consumed.
    pub credits: Credits,
    /// Of those, by kind.
    pub credits_by_kind: CreditsByKind,
    /// People answered from an earlier lookup.
    pub reuse_hits: i64,
    /// What those people cost when they were looked up.
    pub credits_saved: Credits,
    /// Calls whose outcome was unknown and that may have been charged twice.
    pub possible_double_charges: i64,
    /// What those calls may have cost a second time.
    pub possible_double_charge_credits: Credits,
}

/// One job's row as the report reads it.
type Row = (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);

impl Usage {
    fn add(&mut self, r: Row) {
        let (people, calls, credits, sync, phone, waterfall, hits, saved, double, double_micros) = r;
        self.jobs += 1;
        self.people += people;
        self.calls += calls;
        self.credits += Credits(credits);
        self.credits_by_kind.sync += Credits(sync);
        self.credits_by_kind.phone += Credits(phone);
        self.credits_by_kind.waterfall += Credits(waterfall);
        self.reuse_hits += hits;
        self.credits_saved += Credits(saved);
        self.possible_double_charges += double;
        self.possible_double_charge_credits += Credits(double_micros);
    }
}

/// One day's credits by kind, over the jobs created that day (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCredits {
    /// The day.
    pub day: NaiveDate,
    /// Its jobs' credits by kind.
    pub credits: CreditsByKind,
}

impl Store {
    /// `client`'s usage over its jobs created in `[from, to)`.
    pub async fn usage(&self, client: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Usage> {
        self.usage_of(Some(client), from, to).await
    }

    /// [`Store::usage`] of one client, or (`None`) of every client together.
    pub async fn usage_of(&self, client: Option<&str>, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Usage> {
        let mut q = job::Entity::find()
            .select_only()
            .column(job::Column::Total)
            .column(job::Column::Calls)
            .column(job::Column::CreditsMicros)
            .column(job::Column::CreditsSyncMicros)
            .column(job::Column::CreditsPhoneMicros)
            .column(job::Column::CreditsWaterfallMicros)
            .column(job::Column::ReuseHits)
            .column(job::Column::CreditsSavedMicros)
            .column(job::Column::PossibleDoubleCharges)
            .column(job::Column::PossibleDoubleChargeMicros)
            .filter(job::Column::CreatedAt.gte(crate::clock::ts(from)))
            .filter(job::Column::CreatedAt.lt(crate::clock::ts(to)));
        if let Some(c) = client {
            q = q.filter(job::Column::Client.eq(c));
        }
        let rows: Vec<Row> = q.into_tuple().all(&self.db).await?;
        let mut usage = Usage::default();
        for r in rows {
            usage.add(r);
        }
        Ok(usage)
    }

    /// Credits by kind per day (UTC) of the jobs created in `[from, to)`, of one client or (`None`)
    /// of all; days without jobs are absent; oldest first.
    pub async fn credits_by_day(
        &self,
        client: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<DayCredits>> {
        let mut q = job::Entity::find()
            .select_only()
            .column(job::Column::CreatedAt)
            .column(job::Column::CreditsSyncMicros)
            .column(job::Column::CreditsPhoneMicros)
            .column(job::Column::CreditsWaterfallMicros)
            .filter(job::Column::CreatedAt.gte(crate::clock::ts(from)))
            .filter(job::Column::CreatedAt.lt(crate::clock::ts(to)));
        if let Some(c) = client {
            q = q.filter(job::Column::Client.eq(c));
        }
        let rows: Vec<(DateTime<Utc>, i64, i64, i64)> = q.into_tuple().all(&self.db).await?;
        let mut days: BTreeMap<NaiveDate, CreditsByKind> = BTreeMap::new();
        for (at, sync, phone, waterfall) in rows {
            let d = days.entry(at.date_naive()).or_default();
            d.sync += Credits(sync);
            d.phone += Credits(phone);
            d.waterfall += Credits(waterfall);
        }
        Ok(days.into_iter().map(|(day, credits)| DayCredits { day, credits }).collect())
    }

    /// What calls of unknown outcome may have cost a second time, over every job kept.
    pub async fn possible_double_charges(&self) -> StoreResult<Credits> {
        // PostgreSQL sums BIGINT as NUMERIC: cast back.
        let sum: Option<i64> = job::Entity::find()
            .select_only()
            .column_as(
                sea_orm::sea_query::Expr::cust("CAST(COALESCE(SUM(possible_double_charge_micros), 0) AS BIGINT)"),
                "micros",
            )
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(Credits(sum.unwrap_or(0)))
    }
}
