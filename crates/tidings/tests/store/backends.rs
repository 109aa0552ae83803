//! The backends every story runs against, each on a database of its own.

use std::sync::Arc;
use std::time::Duration;

use tidings_store::Store;
use tidings_store_postgres::{PostgresOptions, PostgresStore};
use tidings_store_sqlite::{SqliteOptions, SqliteStore};

/// Which implementation a story is running against, for the few places the contract differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A fresh, empty database and the means to open stores on it. Opening twice gives two stores on the
/// same data, which for PostgreSQL stands for two nodes.
pub struct Backend {
    kind: Kind,
    url: String,
    /// Keeps the SQLite file's directory until the story ends.
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for the SQLite file");
        let url = format!("sqlite://{}", dir.path().join("tidings.db").display());
        Self {
            kind: Kind::Sqlite,
            url,
            _dir: Some(dir),
        }
    }

    /// A new empty database on the test cluster (started on first use, or the one
    /// `TIDINGS_TEST_POSTGRES_URL` names).
    pub async fn postgres() -> Self {
        Self {
            kind: Kind::Postgres,
            url: tidings_testkit::postgres::fresh_database().await,
            _dir: None,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Opens a store on this backend's database (migrating it the first time).
    pub async fn open(&self) -> Arc<dyn Store> {
        match self.kind {
            Kind::Sqlite => Arc::new(
                SqliteStore::open(&SqliteOptions {
                    url: self.url.clone(),
                    synchronous_full: false,
                    readers: 4,
                })
                .await
                .expect("open the SQLite store"),
            ),
            Kind::Postgres => Arc::new(
                PostgresStore::open(&PostgresOptions {
                    url: self.url.clone(),
                    max_connections: 8,
                    statement_timeout: Duration::from_secs(30),
                    acquire_timeout: Duration::from_secs(30),
                })
                .await
                .expect("open the PostgreSQL store"),
            ),
        }
    }
}
