//! The do-not-enrich list: `suppressions` holds keyed hashes only (kind, hash, scope, when); each
//! person keeps the hashes of its identifiers (`suppress_hashes`) so a claim can check them
//! without the key; jobs count their `suppressed` people.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveIden)]
enum Suppressions {
    Table,
    Id,
    Scope,
    Kind,
    Hash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum People {
    Table,
    SuppressHashes,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    NSuppressed,
}

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Suppressions::Table)
                    .if_not_exists()
                    .col(uuid(Suppressions::Id).primary_key())
                    // A client's name, or `*` for the global list (client names cannot hold `*`).
                    .col(string(Suppressions::Scope))
                    .col(string(Suppressions::Kind))
                    .col(string(Suppressions::Hash))
                    .col(timestamp_with_time_zone(Suppressions::CreatedAt))
                    .to_owned(),
            )
            .await?;
        // One entry per scope and hash; listing a scope reads it in id order.
        manager
            .create_index(
                Index::create()
                    .name("ux_suppressions_scope_hash")
                    .table(Suppressions::Table)
                    .col(Suppressions::Scope)
                    .col(Suppressions::Hash)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Claims look hashes up across the scopes of a batch's clients.
        manager
            .create_index(
                Index::create()
                    .name("ix_suppressions_hash")
                    .table(Suppressions::Table)
                    .col(Suppressions::Hash)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(Table::alter().table(People::Table).add_column(text_null(People::SuppressHashes)).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(big_integer(Jobs::NSuppressed).default(0).take())
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Jobs::Table).drop_column(Jobs::NSuppressed).to_owned()).await?;
        manager.alter_table(Table::alter().table(People::Table).drop_column(People::SuppressHashes).to_owned()).await?;
        manager.drop_table(Table::drop().table(Suppressions::Table).to_owned()).await?;
        Ok(())
    }
}
