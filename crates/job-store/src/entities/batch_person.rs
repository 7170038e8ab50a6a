//! `batch_people`: membership history (a person keeps `people.batch_id` for its current batch).

use sea_orm::entity::prelude::*;

/// One person in one batch.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "batch_people")]
pub struct Model {
    /// The batch.
    #[sea_orm(primary_key, auto_increment = false)]
    pub batch_id: Uuid,
    /// The person.
    #[sea_orm(primary_key, auto_increment = false)]
    pub person_id: Uuid,
    /// The person's job (a batch spans jobs).
    pub job_id: Uuid,
    /// Position in the request's `details`.
    pub position: i32,
}

/// No navigable relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
