//! The `switchboard` command: parse arguments, then hand over to `app` (serve) or a small client.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use switchboard::{
    api::client::{self, AdminCommand},
    config::Config,
    telemetry::{self, LogFormat},
};

#[derive(Parser)]
#[command(name = "switchboard", version, about = "A fast, highly available LLM gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// LiteLLM-style config.yaml.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: PathBuf,
        /// Address for gRPC and HTTP (one port).
        #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "0.0.0.0:4000")]
        listen: SocketAddr,
        /// Also serve the OpenAI-compatible HTTP surface alone on this address.
        #[arg(long, env = "SWITCHBOARD_HTTP_LISTEN")]
        http_listen: Option<SocketAddr>,
        #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum, default_value = "json")]
        log_format: LogFormat,
        /// This replica's id in traces, metrics and the cluster view (default: hostname-pid).
        #[arg(long, env = "SWITCHBOARD_REPLICA_ID")]
        replica_id: Option<String>,
        /// `host:port` other replicas reach this one at (default: the listen address).
        #[arg(long, env = "SWITCHBOARD_ADVERTISE_ADDRESS")]
        advertise_address: Option<String>,
        /// etcd endpoints (`host:port,...`): keys, teams and users shared by the fleet.
        #[arg(long, env = "SWITCHBOARD_ETCD_ENDPOINTS")]
        etcd: Option<String>,
        /// Seconds that in-flight calls and streams get to finish after SIGTERM.
        #[arg(long, env = "SWITCHBOARD_SHUTDOWN_TIMEOUT", default_value_t = 30.0)]
        shutdown_timeout: f64,
        /// Serve TLS on every port with this PEM certificate chain (with --tls-key).
        #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require client certificates signed by one of these PEM CAs (mutual TLS).
        #[arg(long, env = "SWITCHBOARD_TLS_CLIENT_CA", requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
        /// Serve the data plane only: the master key, and with it every admin call, is refused
        /// here (run admin traffic on other replicas).
        #[arg(long, env = "SWITCHBOARD_DATA_PLANE_ONLY")]
        data_plane_only: bool,
    },
    /// Validate a config file and print the resolved model groups (never the secrets).
    CheckConfig { file: PathBuf },
    /// Send one chat request to a running gateway and stream the answer to the terminal.
    Chat {
        /// Model group, e.g. `smart`.
        #[arg(long)]
        model: String,
        /// Gateway address.
        #[arg(long, env = "SWITCHBOARD_URL", default_value = "http://127.0.0.1:4000")]
        url: String,
        /// Bearer key (master key or virtual key).
        #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
        key: Option<String>,
        /// Optional system prompt.
        #[arg(long)]
        system: Option<String>,
        /// Wait for the whole answer instead of streaming it.
        #[arg(long)]
        no_stream: bool,
        prompt: String,
    },
    /// Exit 0 if the gateway at `--url` reports ready (container HEALTHCHECK; no curl needed).
    Health {
        #[arg(long, env = "SWITCHBOARD_URL", default_value = "http://127.0.0.1:4000")]
        url: String,
    },
    /// Virtual keys on a running gateway (needs the master key).
    Keys {
        #[command(flatten)]
        admin: AdminConn,
        #[command(subcommand)]
        command: client::KeysCommand,
    },
    /// Teams on a running gateway (needs the master key).
    Teams {
        #[command(flatten)]
        admin: AdminConn,
        #[command(subcommand)]
        command: client::TeamsCommand,
    },
    /// Spend per day, by key, team, user, end user or model (needs the master key).
    Spend {
        #[command(flatten)]
        admin: AdminConn,
        #[command(flatten)]
        args: client::SpendArgs,
    },
}

/// Allocation is on every request's path; mimalloc is markedly cheaper than glibc's malloc here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Where the admin commands connect, and with which key.
#[derive(clap::Args)]
struct AdminConn {
    /// Gateway address.
    #[arg(long, env = "SWITCHBOARD_URL", default_value = "http://127.0.0.1:4000")]
    url: String,
    /// The master key.
    #[arg(long, env = "SWITCHBOARD_MASTER_KEY", hide_env_values = true)]
    key: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            config,
            listen,
            http_listen,
            log_format,
            replica_id,
            advertise_address,
            etcd,
            shutdown_timeout,
            tls_cert,
            tls_key,
            tls_client_ca,
            data_plane_only,
        } => {
            let replica_id = replica_id.unwrap_or_else(default_replica_id);
            let telemetry = telemetry::init(log_format, &telemetry::TraceSettings::from_env(&replica_id))?;
            let config_path = config;
            let mut config = Config::load(&config_path)?;
            if let Some(list) = etcd {
                let mut settings = switchboard::config::EtcdSettings::from_endpoints(&list)
                    .map_err(|e| anyhow::anyhow!("--etcd {e}"))?;
                if let Some(from_file) = &config.etcd {
                    settings.username.clone_from(&from_file.username);
                    settings.password.clone_from(&from_file.password);
                    settings.prefix.clone_from(&from_file.prefix);
                }
                config.etcd = Some(settings);
            }
            let bind = |addr: SocketAddr| async move {
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
            };
            let listeners = switchboard::app::Listeners {
                main: bind(listen).await?,
                http: match http_listen {
                    Some(addr) => Some(bind(addr).await?),
                    None => None,
                },
            };
            let drain_timeout = std::time::Duration::try_from_secs_f64(shutdown_timeout)
                .map_err(|_| anyhow::anyhow!("--shutdown-timeout must be a number of seconds >= 0"))?;
            let options = switchboard::app::Options {
                replica_id,
                drain_timeout,
                config_path: Some(config_path),
                advertise: advertise_address,
                tls: match (tls_cert, tls_key) {
                    (Some(cert), Some(key)) => Some(
                        switchboard::api::tls::TlsFiles {
                            cert,
                            key,
                            client_ca: tls_client_ca,
                        }
                        .server_config()?,
                    ),
                    _ => None,
                },
                data_plane_only,
            };
            let result = switchboard::app::run_as(listeners, config, options, shutdown_signal()).await;
            telemetry.shutdown().await;
            result
        }
        Command::CheckConfig { file } => {
            let config = Config::load(&file)?;
            print!("{}", config.describe());
            if !config.ignored_keys.is_empty() {
                println!(
                    "not implemented yet (ignored): {}",
                    config.ignored_keys.join(", ")
                );
            }
            for w in &config.warnings {
                println!("warning: {w}");
            }
            println!("config OK: {} deployments", config.deployments.len());
            Ok(())
        }
        Command::Chat {
            model,
            url,
            key,
            system,
            no_stream,
            prompt,
        } => switchboard::api::client::chat(url, key, model, system, prompt, !no_stream).await,
        Command::Health { url } => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let resp = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .build()?
                .get(format!("{}/health/readiness", url.trim_end_matches('/')))
                .send()
                .await?;
            anyhow::ensure!(resp.status().is_success(), "not ready: {}", resp.status());
            println!("ready");
            Ok(())
        }
        Command::Keys { admin, command } => {
            client::admin(admin.url, admin.key, AdminCommand::Keys(command)).await
        }
        Command::Teams { admin, command } => {
            client::admin(admin.url, admin.key, AdminCommand::Teams(command)).await
        }
        Command::Spend { admin, args } => {
            client::admin(admin.url, admin.key, AdminCommand::Spend(args)).await
        }
    }
}

fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "switchboard".into());
    format!("{host}-{}", std::process::id())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
