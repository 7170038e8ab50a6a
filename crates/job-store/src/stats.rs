//! Row counts by state across all jobs: queue depths and outcomes for `/metrics`.

use sea_orm::sea_query::Expr;
use sea_orm::{EntityTrait, ExprTrait, QuerySelect};

use crate::Store;
use crate::entities::{batch, callback_delivery, inbound_delivery, job, person};
use crate::error::StoreResult;

/// How many rows of each table are in each state (states with no rows are absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Jobs by state.
    pub jobs: Vec<(String, i64)>,
    /// People by state.
    pub people: Vec<(String, i64)>,
    /// Batches by state.
    pub batches: Vec<(String, i64)>,
    /// Stored Apollo deliveries by state.
    pub deliveries: Vec<(String, i64)>,
    /// Final callbacks by state.
    pub callbacks: Vec<(String, i64)>,
}

macro_rules! count_by_state {
    ($db:expr, $entity:ident) => {
        $entity::Entity::find()
            .select_only()
            .column($entity::Column::State)
            .column_as(Expr::col($entity::Column::Id).count(), "n")
            .group_by($entity::Column::State)
            .into_tuple::<(String, i64)>()
            .all($db)
            .await?
    };
}

impl Store {
    /// Counts rows by state (five grouped reads, no transaction: a scrape tolerates skew).
    pub async fn state_counts(&self) -> StoreResult<StateCounts> {
        let db = self.connection();
        Ok(StateCounts {
            jobs: count_by_state!(db, job),
            people: count_by_state!(db, person),
            batches: count_by_state!(db, batch),
            deliveries: count_by_state!(db, inbound_delivery),
            callbacks: count_by_state!(db, callback_delivery),
        })
    }
}
