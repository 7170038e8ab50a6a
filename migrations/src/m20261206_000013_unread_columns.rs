//! Drops what nothing reads: the four per-flag columns of `jobs` (the `flags` bitmask is the one
//! the service reads and writes) and the `api_keys` table (keys come from the configuration).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Jobs {
    Table,
    RevealPersonalEmails,
    RevealPhoneNumber,
    RunWaterfallEmail,
    RunWaterfallPhone,
}

#[derive(DeriveIden, Clone, Copy)]
enum ApiKeys {
    Table,
    Id,
    Name,
    KeyHash,
    CreatedAt,
}

const FLAG_COLUMNS: [Jobs; 4] =
    [Jobs::RevealPersonalEmails, Jobs::RevealPhoneNumber, Jobs::RunWaterfallEmail, Jobs::RunWaterfallPhone];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        for col in FLAG_COLUMNS {
            manager.alter_table(Table::alter().table(Jobs::Table).drop_column(col).to_owned()).await?;
        }
        manager.drop_table(Table::drop().table(ApiKeys::Table).if_exists().to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in FLAG_COLUMNS {
            let column = boolean(col).default(false).take();
            manager.alter_table(Table::alter().table(Jobs::Table).add_column(column).to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(pk_uuid(ApiKeys::Id))
                    .col(string_uniq(ApiKeys::Name))
                    .col(string_uniq(ApiKeys::KeyHash))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .to_owned(),
            )
            .await
    }
}
