//! Driver errors mapped onto the store's, and records read out of rows (shared with the
//! PostgreSQL backend).

use tidings_store::StoreError;
pub use tidings_store_rows::*;

/// Maps a driver error onto the store's errors: constraint failures are conflicts, lost or busy
/// databases are "unavailable", the rest internal.
pub fn map_err(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(error.to_string())
        }
        _ => StoreError::Internal(error.to_string()),
    }
}
