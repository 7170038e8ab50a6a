//! Waterfall vendor statistics and the call history the usage page draws: `vendor_usage` (per
//! client, day, vendor and kind: attempts, results, verified results, credits attributed; updated
//! in the transaction that applies a waterfall delivery, and kept through erasure and retention,
//! as it holds no personal data) and `call_minutes` (per minute: Apollo calls whose outcome was
//! recorded, and of those the 429s; kept two days).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveIden)]
enum VendorUsage {
    Table,
    Client,
    Day,
    Vendor,
    Kind,
    Attempts,
    Results,
    Verified,
    CreditsMicros,
}

#[derive(DeriveIden)]
enum CallMinutes {
    Table,
    Minute,
    Calls,
    RateLimited,
}

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(VendorUsage::Table)
                    .if_not_exists()
                    .col(string(VendorUsage::Client))
                    .col(date(VendorUsage::Day))
                    .col(string(VendorUsage::Vendor))
                    .col(string(VendorUsage::Kind))
                    .col(big_integer(VendorUsage::Attempts).default(0))
                    .col(big_integer(VendorUsage::Results).default(0))
                    .col(big_integer(VendorUsage::Verified).default(0))
                    .col(big_integer(VendorUsage::CreditsMicros).default(0))
                    // The key is what the upsert adds to; a client's days in order serve the report.
                    .primary_key(
                        Index::create()
                            .col(VendorUsage::Client)
                            .col(VendorUsage::Day)
                            .col(VendorUsage::Vendor)
                            .col(VendorUsage::Kind),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CallMinutes::Table)
                    .if_not_exists()
                    .col(timestamp_with_time_zone(CallMinutes::Minute).primary_key())
                    .col(big_integer(CallMinutes::Calls).default(0))
                    .col(big_integer(CallMinutes::RateLimited).default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(CallMinutes::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(VendorUsage::Table).to_owned()).await
    }
}
