//! The `tidings` command: serve, migrate, and manage workspaces and keys.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tidings::config::{FlagOverrides, Settings};
use tidings_core::ids::WorkspaceId;
use tidings_core::matching::LevelPrecedence;
use tidings_store::{KeyScope, Page, Workspace};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tidings",
    version,
    about = "Webhook delivery for sales-engagement platforms"
)]
struct Cli {
    /// Settings file (TOML); see tidings.default.toml for every setting.
    #[arg(long, global = true, env = "TIDINGS_CONFIG")]
    config: Option<PathBuf>,
    /// Storage URL, e.g. sqlite://tidings.db.
    #[arg(long, global = true, env = "TIDINGS_DATABASE_URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API and deliver webhooks in one process.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "TIDINGS_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Allow webhook targets on loopback, private and other non-public addresses.
        #[arg(long)]
        allow_private_targets: bool,
        /// Allow http:// webhook URLs.
        #[arg(long)]
        allow_http_targets: bool,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Run a local receiver that verifies signatures and prints each delivery.
    Listen {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        addr: std::net::SocketAddr,
        /// The webhook's signing secret (whsec_...); without it nothing is verified.
        #[arg(long, env = "TIDINGS_LISTEN_SECRET")]
        secret: Option<String>,
        /// Header of `hmac-sha256` signatures.
        #[arg(long, default_value = "x-tidings-signature")]
        hmac_header: String,
    },
    /// Publish an event through a running Tidings and print its id and deliveries.
    Publish(tidings::publish::PublishOptions),
    /// Check the signature of one delivery, as its receiver got it; exits 0 only if it verifies.
    Verify(tidings::verify::VerifyOptions),
    /// Manage API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Manage workspaces.
    Workspace {
        #[command(subcommand)]
        command: WorkspaceCommand,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an API key and print it (only the key, on stdout).
    Create {
        /// A key that acts on every workspace.
        #[arg(
            long,
            conflicts_with = "workspace",
            required_unless_present = "workspace"
        )]
        operator: bool,
        /// A key that acts on this workspace only.
        #[arg(long)]
        workspace: Option<String>,
        /// A name to recognise the key by.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Revoke an API key by id (tdk_...); a running server refuses it within a second.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum WorkspaceCommand {
    /// Create a workspace and print its id.
    Create {
        name: String,
        /// `all` or `broadest`.
        #[arg(long, default_value = "all")]
        level_precedence: String,
    },
    /// List workspaces.
    List,
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDINGS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal(token: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!(
        "shutting down: no new work is claimed; attempts in flight finish or are given back"
    );
    token.cancel();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut flags = FlagOverrides {
        database_url: cli.database_url.clone(),
        ..FlagOverrides::default()
    };
    if let Command::Serve {
        listen,
        allow_private_targets,
        allow_http_targets,
    } = &cli.command
    {
        flags.listen = *listen;
        flags.allow_private_targets = allow_private_targets.then_some(true);
        flags.allow_http_targets = allow_http_targets.then_some(true);
    }
    // Commands that need no settings and no storage.
    let command = match cli.command {
        Command::Listen {
            addr,
            secret,
            hmac_header,
        } => {
            return tidings::listen::run(tidings::listen::ListenOptions {
                addr,
                secret,
                hmac_header: hmac_header.to_ascii_lowercase(),
            })
            .await;
        }
        Command::Publish(options) => {
            let published = tidings::publish::run(&options).await?;
            println!("{}", serde_json::to_string_pretty(&published)?);
            return Ok(());
        }
        Command::Verify(options) => {
            println!("verified ({})", tidings::verify::run(&options)?);
            return Ok(());
        }
        command => command,
    };
    let settings = Settings::load(cli.config.as_deref(), flags)?;
    match command {
        Command::Listen { .. } | Command::Publish { .. } | Command::Verify { .. } => Ok(()),
        Command::Serve { .. } => {
            init_logging(settings.log_format == "json");
            let app = tidings::Application::build(&settings).await?;
            tracing::info!(listen = %settings.listen, port = app.port(), ?settings, "tidings is serving");
            let token = CancellationToken::new();
            tokio::spawn(shutdown_signal(token.clone()));
            app.run_until_stopped(token).await
        }
        Command::Migrate => {
            tidings::open_store(&settings).await?.close().await;
            eprintln!("the database is up to date");
            Ok(())
        }
        Command::Key { command } => {
            let store = tidings::open_store(&settings).await?;
            match command {
                KeyCommand::Create {
                    workspace, name, ..
                } => {
                    let scope = match &workspace {
                        Some(ws) => {
                            WorkspaceId::parse(ws).ok_or_else(|| {
                                anyhow::anyhow!("`{ws}` is not a workspace id (ws_...)")
                            })?;
                            store
                                .get_workspace(ws)
                                .await
                                .map_err(|_| anyhow::anyhow!("no workspace `{ws}`"))?;
                            KeyScope::Workspace
                        }
                        None => KeyScope::Operator,
                    };
                    let (_, token) =
                        tidings_server::issue_key(store.as_ref(), scope, workspace, name).await?;
                    println!("{token}");
                }
                KeyCommand::Revoke { id } => {
                    store
                        .revoke_api_key(&id, tidings_core::now_millis())
                        .await
                        .map_err(|_| anyhow::anyhow!("no API key `{id}`"))?;
                    eprintln!("revoked {id}");
                }
            }
            store.close().await;
            Ok(())
        }
        Command::Workspace { command } => {
            let store = tidings::open_store(&settings).await?;
            match command {
                WorkspaceCommand::Create {
                    name,
                    level_precedence,
                } => {
                    let precedence =
                        LevelPrecedence::parse(&level_precedence).ok_or_else(|| {
                            anyhow::anyhow!("--level-precedence must be `all` or `broadest`")
                        })?;
                    let now = tidings_core::now_millis();
                    let ws = Workspace {
                        id: WorkspaceId::new().as_str().to_owned(),
                        name,
                        level_precedence: precedence,
                        created_at: now,
                        updated_at: now,
                    };
                    store.create_workspace(&ws).await?;
                    println!("{}", ws.id);
                }
                WorkspaceCommand::List => {
                    let mut after = None;
                    loop {
                        let page = store
                            .list_workspaces(&Page {
                                limit: 500,
                                after: after.clone(),
                            })
                            .await?;
                        for ws in &page {
                            println!("{}\t{}", ws.id, ws.name);
                        }
                        match page.last() {
                            Some(last) if page.len() == 500 => after = Some(last.id.clone()),
                            _ => break,
                        }
                    }
                }
            }
            store.close().await;
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
