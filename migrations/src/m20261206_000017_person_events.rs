//! Per-person events: the events a job asked for, a per-job sequence on every callback event (the
//! order of sending and of the event stream's ids), and the outbox of people waiting to be sealed
//! into a `person.completed` or `person.updated` event.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Jobs {
    Table,
    EventsCompleted,
    EventsUpdated,
}

#[derive(DeriveIden, Clone, Copy)]
enum CallbackDeliveries {
    Table,
    Seq,
}

#[derive(DeriveIden, Clone, Copy)]
enum PersonEvents {
    Table,
    Id,
    JobId,
    PersonId,
    Kind,
    CreatedAt,
    CallbackId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite changes one column per `ALTER TABLE`.
        for col in [Jobs::EventsCompleted, Jobs::EventsUpdated] {
            manager
                .alter_table(Table::alter().table(Jobs::Table).add_column(boolean(col).default(false)).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(CallbackDeliveries::Table)
                    .add_column(big_integer_null(CallbackDeliveries::Seq))
                    .to_owned(),
            )
            .await?;
        // Events from before get their place in their job's sequence: the order they were created.
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE callback_deliveries SET seq = (SELECT COUNT(*) FROM callback_deliveries c2 \
                 WHERE c2.job_id = callback_deliveries.job_id AND (c2.created_at < callback_deliveries.created_at \
                 OR (c2.created_at = callback_deliveries.created_at AND c2.id <= callback_deliveries.id)))",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("callback_deliveries_job_seq")
                    .table(CallbackDeliveries::Table)
                    .col(Alias::new("job_id"))
                    .col(CallbackDeliveries::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PersonEvents::Table)
                    .col(uuid(PersonEvents::Id).primary_key())
                    .col(uuid(PersonEvents::JobId))
                    .col(uuid(PersonEvents::PersonId))
                    .col(text(PersonEvents::Kind))
                    .col(timestamp_with_time_zone(PersonEvents::CreatedAt))
                    .col(uuid_null(PersonEvents::CallbackId))
                    .to_owned(),
            )
            .await?;
        // The sealer reads only the unsealed rows.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX person_events_unsealed ON person_events (job_id, created_at) WHERE callback_id IS NULL",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("person_events_job_person")
                    .table(PersonEvents::Table)
                    .col(PersonEvents::JobId)
                    .col(PersonEvents::PersonId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(PersonEvents::Table).to_owned()).await?;
        manager
            .drop_index(Index::drop().name("callback_deliveries_job_seq").table(CallbackDeliveries::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter().table(CallbackDeliveries::Table).drop_column(CallbackDeliveries::Seq).to_owned(),
            )
            .await?;
        for col in [Jobs::EventsCompleted, Jobs::EventsUpdated] {
            manager.alter_table(Table::alter().table(Jobs::Table).drop_column(col).to_owned()).await?;
        }
        Ok(())
    }
}
