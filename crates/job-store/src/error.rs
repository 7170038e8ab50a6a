//! What can go wrong in the store.

use sea_orm::DbErr;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named row does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The idempotency key was already used by this client with a different request.
    #[error("idempotency key {key:?} was already used with a different request (job {job_id})")]
    IdempotencyConflict {
        /// The key.
        key: String,
        /// The job created by the first request.
        job_id: uuid::Uuid,
    },
    /// The client's credits committed today reached its daily cap: no new job until tomorrow (UTC).
    #[error("the daily credit cap of {cap} credits is reached")]
    DailyCapReached {
        /// The cap.
        cap: apollo_client::Credits,
    },
    /// The caller passed something inconsistent (for example a person not in the batch).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A stored value could not be read back.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Another process holds the SQLite database (SQLite serves one process).
    #[error("{0}")]
    InUse(String),
    /// This process is stopping: the task that writes for it is gone.
    #[error("the store is stopping in this process")]
    Stopping,
    /// A database error.
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl StoreError {
    /// Whether the database refused a value as data (SQLSTATE class 22, e.g. U+0000 in text or
    /// jsonb on PostgreSQL): the input is at fault, and retrying cannot help.
    pub fn is_unstorable_value(&self) -> bool {
        use sea_orm::{RuntimeErr, sqlx};
        match self {
            StoreError::Db(DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) => {
                matches!(&**e, sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("22")))
            }
            _ => false,
        }
    }
}

/// Result of store calls.
pub type StoreResult<T> = Result<T, StoreError>;
