//! Settings: defaults < tidings.toml < TIDINGS_* environment < flags, validated at start-up.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The commented defaults, embedded so `tidings` runs with no file at all.
pub const DEFAULTS: &str = include_str!("../tidings.default.toml");

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    pub sqlite_synchronous_full: bool,
    pub allow_private_targets: bool,
    pub allow_http_targets: bool,
    pub retry_schedule: Vec<u32>,
    pub per_webhook_concurrency: usize,
    pub max_in_flight: usize,
    pub log_format: String,
    pub auto_disable_after_s: u64,
    pub auto_disable_min_failures: u32,
    pub retention_days: f64,
    pub retention_interval_s: u64,
    pub operator_webhook_url: String,
    pub operator_webhook_secret: String,
    pub public_url: String,
    pub database_pool_size: u32,
    pub database_statement_timeout_s: u64,
    pub claim_lease_s: u64,
    pub node_name: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A database URL may carry a password.
        let database = match self.database_url.split_once('@') {
            Some((_, host)) => format!("…@{host}"),
            None => self.database_url.clone(),
        };
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("database_url", &database)
            .field("sqlite_synchronous_full", &self.sqlite_synchronous_full)
            .field("allow_private_targets", &self.allow_private_targets)
            .field("allow_http_targets", &self.allow_http_targets)
            .field("retry_schedule", &self.retry_schedule)
            .field("per_webhook_concurrency", &self.per_webhook_concurrency)
            .field("max_in_flight", &self.max_in_flight)
            .field("log_format", &self.log_format)
            .field("auto_disable_after_s", &self.auto_disable_after_s)
            .field("auto_disable_min_failures", &self.auto_disable_min_failures)
            .field("retention_days", &self.retention_days)
            .field("retention_interval_s", &self.retention_interval_s)
            .field("operator_webhook_url", &self.operator_webhook_url)
            .field("public_url", &self.public_url)
            .field("database_pool_size", &self.database_pool_size)
            .field(
                "database_statement_timeout_s",
                &self.database_statement_timeout_s,
            )
            .field("claim_lease_s", &self.claim_lease_s)
            .field("node_name", &self.node_name)
            .field(
                "operator_webhook_secret",
                &if self.operator_webhook_secret.is_empty() {
                    ""
                } else {
                    "[redacted]"
                },
            )
            .finish()
    }
}

/// Every setting's name, as read from `TIDINGS_<NAME>` environment variables.
const SETTING_NAMES: [&str; 20] = [
    "listen",
    "database_url",
    "sqlite_synchronous_full",
    "allow_private_targets",
    "allow_http_targets",
    "retry_schedule",
    "per_webhook_concurrency",
    "max_in_flight",
    "log_format",
    "auto_disable_after_s",
    "auto_disable_min_failures",
    "retention_days",
    "retention_interval_s",
    "operator_webhook_url",
    "operator_webhook_secret",
    "public_url",
    "database_pool_size",
    "database_statement_timeout_s",
    "claim_lease_s",
    "node_name",
];

/// Values given as flags; only those present override the layers below.
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_private_targets: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_http_targets: Option<bool>,
}

impl Settings {
    /// Whether storage is PostgreSQL (shared by several nodes) rather than the embedded SQLite file.
    pub fn uses_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }

    /// This process's name in claims: `node_name`, else the host name, plus a random suffix so two
    /// processes (or one restarted) never share a name.
    pub fn node_id(&self) -> String {
        let base = if self.node_name.is_empty() {
            std::fs::read_to_string("/etc/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_default()
        } else {
            self.node_name.clone()
        };
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let suffix = &suffix[suffix.len() - 8..];
        if base.is_empty() {
            format!("node-{suffix}")
        } else {
            format!("{base}-{suffix}")
        }
    }

    /// Loads and validates the layered settings.
    pub fn load(config_file: Option<&Path>, flags: FlagOverrides) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(path) = config_file {
            if !path.exists() {
                anyhow::bail!("the config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        let settings: Settings = figment
            // TIDINGS_CONFIG and TIDINGS_LOG are read elsewhere; TIDINGS_TEST_PYTHON is exported by
            // scripts/test.sh for the interop tests and must not make every start-up fail.
            // Only settings are read from the environment: other TIDINGS_* variables (the log filter,
            // the config path, the listen command's secret, test tooling) are not settings.
            .merge(Env::prefixed("TIDINGS_").only(&SETTING_NAMES))
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        tidings_core::retry::validate_schedule(&self.retry_schedule)
            .map_err(|e| anyhow::anyhow!("retry_schedule: {e}"))?;
        if self.per_webhook_concurrency == 0 || self.per_webhook_concurrency > 1000 {
            anyhow::bail!("per_webhook_concurrency must be between 1 and 1000");
        }
        if self.max_in_flight == 0 || self.max_in_flight > 100_000 {
            anyhow::bail!("max_in_flight must be between 1 and 100000");
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            anyhow::bail!("log_format must be \"text\" or \"json\"");
        }
        if !(self.retention_days > 0.0 && self.retention_days <= 36_500.0) {
            anyhow::bail!("retention_days must be more than 0 and at most 36500");
        }
        if self.retention_interval_s == 0 {
            anyhow::bail!("retention_interval_s must be at least 1");
        }
        if self.auto_disable_min_failures == 0 {
            anyhow::bail!("auto_disable_min_failures must be at least 1");
        }
        if !self.operator_webhook_url.is_empty() {
            // The operator's own endpoint may be internal, so only its form is checked.
            let any_target = tidings_core::webhook::TargetPolicy {
                allow_http: true,
                allow_private: true,
            };
            tidings_core::webhook::validate_url(&self.operator_webhook_url, any_target)
                .map_err(|e| anyhow::anyhow!("operator_webhook_url: {e}"))?;
            if !self.operator_webhook_secret.starts_with("whsec_") {
                anyhow::bail!(
                    "operator_webhook_secret must be set to a whsec_ secret when operator_webhook_url is"
                );
            }
        }
        if !self.public_url.is_empty() {
            let any_target = tidings_core::webhook::TargetPolicy {
                allow_http: true,
                allow_private: true,
            };
            tidings_core::webhook::validate_url(&self.public_url, any_target)
                .map_err(|e| anyhow::anyhow!("public_url: {e}"))?;
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            anyhow::bail!(
                "database_url must be sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE (got `{}`)",
                self.database_url.split('@').next_back().unwrap_or_default()
            );
        }
        if self.database_pool_size == 0 || self.database_pool_size > 1000 {
            anyhow::bail!("database_pool_size must be between 1 and 1000");
        }
        if self.database_statement_timeout_s == 0 {
            anyhow::bail!("database_statement_timeout_s must be at least 1");
        }
        if !(3..=3600).contains(&self.claim_lease_s) {
            anyhow::bail!("claim_lease_s must be between 3 and 3600");
        }
        if self.node_name.len() > 200 {
            anyhow::bail!("node_name must be at most 200 characters");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_load_and_flags_override_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tidings.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9999\"\nper_webhook_concurrency = 3\n",
        )
        .expect("write");
        let from_file = Settings::load(Some(&file), FlagOverrides::default()).expect("loads");
        assert_eq!(from_file.listen.port(), 9999);
        assert_eq!(from_file.per_webhook_concurrency, 3);
        assert_eq!(from_file.retry_schedule, vec![60, 300, 1800]);
        let flags = FlagOverrides {
            listen: Some("127.0.0.1:7777".parse().expect("addr")),
            ..FlagOverrides::default()
        };
        assert_eq!(
            Settings::load(Some(&file), flags)
                .expect("loads")
                .listen
                .port(),
            7777
        );
    }

    #[test]
    fn bad_settings_are_refused_with_a_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tidings.toml");
        std::fs::write(&file, "retry_schedule = [0]\n").expect("write");
        let error = Settings::load(Some(&file), FlagOverrides::default()).expect_err("refused");
        assert!(error.to_string().contains("retry_schedule"), "{error}");
        std::fs::write(&file, "listn = \"x\"\n").expect("write");
        assert!(Settings::load(Some(&file), FlagOverrides::default()).is_err());
        assert!(
            Settings::load(
                Some(&dir.path().join("missing.toml")),
                FlagOverrides::default()
            )
            .is_err()
        );
    }
}
