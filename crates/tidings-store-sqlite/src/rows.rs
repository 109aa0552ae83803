//! Driver errors mapped onto the store's, and records read out of rows (shared with the
//! PostgreSQL backend).

use tidings_store::{StoreError, StoreResult};
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

/// The same mapping for the writer's own connection.
pub fn map_sql(error: rusqlite::Error) -> StoreError {
    use rusqlite::ffi::{self, ErrorCode};
    match &error {
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
        rusqlite::Error::SqliteFailure(failure, message)
            if failure.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                || failure.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict(message.clone().unwrap_or_else(|| error.to_string()))
        }
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(
                failure.code,
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::CannotOpen
                    | ErrorCode::DiskFull
                    | ErrorCode::SystemIoFailure
            ) =>
        {
            StoreError::Unavailable(error.to_string())
        }
        _ => StoreError::Internal(error.to_string()),
    }
}

/// Runs one cached statement; returns how many rows it changed.
pub fn execute(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<usize> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute(params))
        .map_err(map_sql)
}

/// Runs one cached statement that reads one value.
pub fn query_value<T: rusqlite::types::FromSql>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<T> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.query_row(params, |row| row.get(0)))
        .map_err(map_sql)
}

/// Runs one cached statement that reads at most one row, read by `row`.
pub fn query_optional<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Option<T>> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.query_row(params, row).optional())
        .map_err(map_sql)
}

/// Runs one cached statement and collects every row it reads, each read by `row`.
pub fn query_rows<T, C: FromIterator<T>>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<C> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.query_map(params, row)?.collect())
        .map_err(map_sql)
}
