//! The Tidings process: settings, storage, the API and the dispatcher, started and stopped together.

pub mod config;
pub mod listen;
pub mod publish;
pub mod verify;

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::time::Duration;
use tidings_core::webhook::TargetPolicy;

use tidings_delivery::maintenance::{self, OperatorEndpoint};
use tidings_delivery::{DeliveryClient, Dispatcher, DispatcherConfig};
use tidings_server::{ApiSettings, AppState};
use tidings_store::{HealthPolicy, Store};
use tidings_store_postgres::{PostgresOptions, PostgresStore};
use tidings_store_sqlite::{SqliteOptions, SqliteStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Settings;

/// Opens the configured storage, creating and migrating it.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    if settings.uses_postgres() {
        let store = PostgresStore::open(&PostgresOptions {
            url: settings.database_url.clone(),
            max_connections: settings.database_pool_size,
            statement_timeout: Duration::from_secs(settings.database_statement_timeout_s),
            acquire_timeout: Duration::from_secs(5),
        })
        .await?;
        return Ok(Arc::new(store));
    }
    let store = SqliteStore::open(&SqliteOptions {
        url: settings.database_url.clone(),
        synchronous_full: settings.sqlite_synchronous_full,
        readers: 8,
    })
    .await?;
    Ok(Arc::new(store))
}

/// The process-wide Prometheus recorder (installed once, shared by every application in a process).
fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .clone()
}

/// A running Tidings: the bound API listener and the dispatcher, sharing one store.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    dispatcher: Dispatcher,
    store: Arc<dyn Store>,
    operator: Option<OperatorEndpoint>,
    retention: Duration,
    retention_interval: Duration,
}

impl Application {
    /// Opens storage and binds the listener (port 0 picks a free port).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let store = open_store(settings).await?;
        let dyn_store = store.clone();
        let policy = TargetPolicy {
            allow_http: settings.allow_http_targets,
            allow_private: settings.allow_private_targets,
        };
        let dispatcher = Dispatcher::new(
            dyn_store.clone(),
            DispatcherConfig {
                node: settings.node_id(),
                lease_ms: i64::try_from(settings.claim_lease_s.saturating_mul(1000))
                    .unwrap_or(i64::MAX),
                retry_schedule: settings.retry_schedule.clone(),
                per_webhook_concurrency: settings.per_webhook_concurrency,
                // Deep enough that a busy lane refilled at half (a claim takes at most 256) does
                // not run dry while its claim waits behind publishing commits.
                per_webhook_claims: settings.per_webhook_concurrency.saturating_mul(32),
                max_in_flight: settings.max_in_flight,
                allow_private_targets: settings.allow_private_targets,
                health: HealthPolicy {
                    auto_disable_after_ms: i64::try_from(
                        settings.auto_disable_after_s.saturating_mul(1000),
                    )
                    .unwrap_or(i64::MAX),
                    auto_disable_min_failures: settings.auto_disable_min_failures,
                    notify_operator: !settings.operator_webhook_url.is_empty(),
                },
                ..DispatcherConfig::default()
            },
        )
        .map_err(anyhow::Error::msg)?;
        let state = AppState::new(
            dyn_store.clone(),
            ApiSettings {
                target_policy: policy,
                public_url: (!settings.public_url.is_empty()).then(|| settings.public_url.clone()),
                ..ApiSettings::default()
            },
            metrics_handle(),
            dispatcher.clone(),
        );
        let router = tidings_server::router(state);
        let operator = (!settings.operator_webhook_url.is_empty()).then(|| OperatorEndpoint {
            url: settings.operator_webhook_url.clone(),
            secret: settings.operator_webhook_secret.clone(),
            user_agent: format!("Tidings/{}", env!("CARGO_PKG_VERSION")),
        });
        let retention = Duration::from_secs_f64(settings.retention_days * 86_400.0);
        let retention_interval = Duration::from_secs(settings.retention_interval_s);
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
        Ok(Self {
            listener,
            router,
            dispatcher,
            store,
            operator,
            retention,
            retention_interval,
        })
    }

    /// The store this application runs on (tests and the CLI issue keys through it).
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves and delivers until `shutdown` is cancelled, then stops accepting requests, lets the
    /// dispatcher finish or give back its attempts, and closes storage.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let store = self.store.clone();
        let mut jobs = vec![tokio::spawn(maintenance::run_retention(
            store.clone(),
            self.retention,
            self.retention_interval,
            shutdown.clone(),
        ))];
        if let Some(endpoint) = self.operator.clone() {
            // The operator's own endpoint is configuration, not tenant input: it may be internal,
            // so the address guard for webhook targets does not apply to it.
            let client = DeliveryClient::new(true).map_err(anyhow::Error::msg)?;
            jobs.push(tokio::spawn(maintenance::run_notifier(
                store,
                client,
                endpoint,
                shutdown.clone(),
            )));
        }
        let dispatcher = tokio::spawn(self.dispatcher.run(shutdown.clone()));
        let server_shutdown = shutdown.clone();
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { server_shutdown.cancelled().await })
            .await;
        shutdown.cancel();
        if let Err(error) = dispatcher.await {
            tracing::error!(%error, "the dispatcher stopped abnormally");
        }
        for job in jobs {
            if let Err(error) = job.await {
                tracing::error!(%error, "a background job stopped abnormally");
            }
        }
        self.store.close().await;
        served.map_err(|e| anyhow::anyhow!("the API server failed: {e}"))
    }
}
