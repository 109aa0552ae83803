//! Driver errors mapped onto the store's, and retrying transactions PostgreSQL chose to abort.

use std::time::Duration;

use tidings_store::StoreError;

/// How many times a transaction aborted as a deadlock victim or for a serialization failure runs
/// again before the error is returned.
const MAX_RETRIES: u32 = 4;

/// Maps a driver error onto the store's errors: unique violations are conflicts, a database that
/// cannot be reached right now is "unavailable" (the API answers 503), the rest internal.
pub fn map_err(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        // What the row names is gone: a workspace deleted through another node while this one's
        // view of it was still cached.
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        sqlx::Error::Database(db) if db.code().as_deref().is_some_and(is_unreachable_code) => {
            StoreError::Unavailable(error.to_string())
        }
        // Data exceptions: a value of the request PostgreSQL cannot hold (a NUL in text).
        sqlx::Error::Database(db) if db.code().as_deref().is_some_and(|c| c.starts_with("22")) => {
            StoreError::Invalid(db.message().to_owned())
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Internal(error.to_string()),
    }
}

/// SQLSTATEs meaning the server cannot serve us right now: connection exceptions (class 08), the
/// server shutting down or crashed (57P01, 57P02), still starting (57P03), out of connection slots
/// (53300), or too slow to finish a statement within the statement timeout (57014): the request
/// may be tried again later, and nothing it wrote was kept.
fn is_unreachable_code(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "57014")
}

/// Deadlock victims (40P01) and serialization failures (40001) are safe to run again from the start.
fn is_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40P01" | "40001")),
        _ => false,
    }
}

/// An error inside a transaction: kept as the driver's until the end so a retryable one can be told
/// apart.
#[derive(Debug)]
pub enum TxError {
    Sql(sqlx::Error),
    Store(StoreError),
}

impl From<sqlx::Error> for TxError {
    fn from(error: sqlx::Error) -> Self {
        TxError::Sql(error)
    }
}

impl From<StoreError> for TxError {
    fn from(error: StoreError) -> Self {
        TxError::Store(error)
    }
}

impl From<TxError> for StoreError {
    fn from(error: TxError) -> Self {
        match error {
            TxError::Sql(error) => map_err(error),
            TxError::Store(error) => error,
        }
    }
}

pub type TxResult<T> = Result<T, TxError>;

/// Runs a transaction, running it again from the start when PostgreSQL aborted it as a deadlock
/// victim or for a serialization failure (its effects were rolled back).
pub async fn retrying<T, F, Fut>(what: &'static str, mut run: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = TxResult<T>>,
{
    let mut retries = 0;
    loop {
        match run().await {
            Err(TxError::Sql(error)) if is_retryable(&error) && retries < MAX_RETRIES => {
                retries += 1;
                tracing::debug!(%error, retries, "{what} was rolled back by the database; running it again");
                // A short pause that grows, so the transactions that collided do not meet again.
                tokio::time::sleep(Duration::from_millis(u64::from(retries) * 7)).await;
            }
            result => return result.map_err(StoreError::from),
        }
    }
}
