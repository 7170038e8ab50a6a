//! Waterfall vendor statistics (`vendor_usage`): per client, day, vendor and kind, added to in
//! the transaction that applies a waterfall delivery ([`crate::apply`]), read by `/v1/usage`, the
//! dashboard and `/metrics`. The rows hold no personal data, so erasure and retention leave them.

use std::collections::BTreeMap;

use apollo_client::Credits;
use chrono::NaiveDate;
use rules::VendorKind;
use rules::vendors::VendorTotals;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement};
use serde::{Deserialize, Serialize};

use crate::Store;
use crate::entities::vendor_usage;
use crate::error::StoreResult;
use crate::sql;

/// What a group of deliveries adds: per (client, vendor, kind), the sums.
pub(crate) type VendorDeltas = BTreeMap<(String, String, VendorKind), VendorTotals>;

/// Values bound per row of the upsert: client, day, vendor, kind, attempts, results, verified, credits.
const BOUND: usize = 8;

/// One vendor's figures for one kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorUsage {
    /// The vendor's display name.
    pub vendor: String,
    /// What it was asked to find.
    pub kind: VendorKind,
    /// Attempts, results, verified results, credits attributed.
    #[serde(skip)]
    pub totals: VendorTotals,
}

/// Adds `deltas` to the rows of `day`, in the caller's transaction (one statement per few hundred rows).
pub(crate) async fn add_vendor_usage<C: ConnectionTrait>(
    db: &C,
    day: NaiveDate,
    deltas: &VendorDeltas,
) -> StoreResult<()> {
    let backend = db.get_database_backend();
    let rows: Vec<_> = deltas.iter().filter(|(_, t)| t.attempts != 0 || t.credits != Credits::ZERO).collect();
    for chunk in rows.chunks(100) {
        let mut text = String::from(
            "INSERT INTO vendor_usage (client, day, vendor, kind, attempts, results, verified, credits_micros) VALUES ",
        );
        sql::push_values(&mut text, backend, 1, chunk.len(), BOUND);
        text.push_str(
            " ON CONFLICT (client, day, vendor, kind) DO UPDATE SET \
             attempts = vendor_usage.attempts + excluded.attempts, \
             results = vendor_usage.results + excluded.results, \
             verified = vendor_usage.verified + excluded.verified, \
             credits_micros = vendor_usage.credits_micros + excluded.credits_micros",
        );
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * BOUND);
        for ((client, vendor, kind), t) in chunk {
            values.extend([
                client.clone().into(),
                day.into(),
                vendor.clone().into(),
                kind.as_str().into(),
                t.attempts.into(),
                t.results.into(),
                t.verified.into(),
                t.credits.micros().into(),
            ]);
        }
        db.execute_raw(Statement::from_sql_and_values(backend, text, values)).await?;
    }
    Ok(())
}

/// A row of the report as read: vendor, kind, attempts, results, verified, credits.
type Row = (String, VendorKind, i64, i64, i64, i64);

impl Store {
    /// Vendor figures summed over the days `[from, to]` (inclusive; `None`: every day kept), for one
    /// client or (`None`) all of them; by vendor name, email before phone.
    pub async fn vendor_usage(
        &self,
        client: Option<&str>,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> StoreResult<Vec<VendorUsage>> {
        // PostgreSQL sums BIGINT as NUMERIC: cast back.
        let sum = |c: &str| Expr::cust(format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT)"));
        let mut q = vendor_usage::Entity::find()
            .select_only()
            .column(vendor_usage::Column::Vendor)
            .column(vendor_usage::Column::Kind)
            .column_as(sum("attempts"), "attempts")
            .column_as(sum("results"), "results")
            .column_as(sum("verified"), "verified")
            .column_as(sum("credits_micros"), "credits_micros")
            .group_by(vendor_usage::Column::Vendor)
            .group_by(vendor_usage::Column::Kind)
            .order_by_asc(vendor_usage::Column::Vendor)
            .order_by_asc(vendor_usage::Column::Kind);
        if let Some(c) = client {
            q = q.filter(vendor_usage::Column::Client.eq(c));
        }
        if let Some(f) = from {
            q = q.filter(vendor_usage::Column::Day.gte(f));
        }
        if let Some(t) = to {
            q = q.filter(vendor_usage::Column::Day.lte(t));
        }
        let rows: Vec<Row> = q.into_tuple().all(&self.db).await?;
        Ok(rows
            .into_iter()
            .map(|(vendor, kind, attempts, results, verified, credits)| VendorUsage {
                vendor,
                kind,
                totals: VendorTotals { attempts, results, verified, credits: Credits(credits) },
            })
            .collect())
    }
}
