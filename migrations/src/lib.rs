//! The one source of the enrichd schema: sea-orm migrations that run unchanged on SQLite and
//! PostgreSQL.
//!
//! Portable types only: UUID ids (v7, time-ordered), `bigint` counters and credits (micro-credits),
//! JSON payloads (`jsonb` on PostgreSQL), `timestamp with time zone` instants, raw bodies as blobs.

pub use sea_orm_migration::prelude::*;

mod m20250101_000001_initial;
mod m20250601_000002_erasure;
mod m20251201_000003_callback_events;
mod m20251201_000004_lifecycle;
mod m20261130_000005_replicas;
mod m20261130_000006_budget;
mod m20261130_000007_system_page;
mod m20261130_000008_cost;
mod m20261130_000009_window_restarts;
mod m20261201_000010_batch_failures;
mod m20261201_000011_pending_deliveries;
mod m20261206_000012_double_charge_amounts;
mod m20261206_000013_unread_columns;
mod m20261206_000014_measured_margin;
mod m20261206_000015_vendor_stats;
mod m20261206_000016_suppressions;
mod m20261206_000017_person_events;
mod m20261206_000018_client_day_credits;

/// Applies the enrichd migrations in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20250101_000001_initial::Migration),
            Box::new(m20250601_000002_erasure::Migration),
            Box::new(m20251201_000003_callback_events::Migration),
            Box::new(m20251201_000004_lifecycle::Migration),
            Box::new(m20261130_000005_replicas::Migration),
            Box::new(m20261130_000006_budget::Migration),
            Box::new(m20261130_000007_system_page::Migration),
            Box::new(m20261130_000008_cost::Migration),
            Box::new(m20261130_000009_window_restarts::Migration),
            Box::new(m20261201_000010_batch_failures::Migration),
            Box::new(m20261201_000011_pending_deliveries::Migration),
            Box::new(m20261206_000012_double_charge_amounts::Migration),
            Box::new(m20261206_000013_unread_columns::Migration),
            Box::new(m20261206_000014_measured_margin::Migration),
            Box::new(m20261206_000015_vendor_stats::Migration),
            Box::new(m20261206_000016_suppressions::Migration),
            Box::new(m20261206_000017_person_events::Migration),
            Box::new(m20261206_000018_client_day_credits::Migration),
        ]
    }
}
