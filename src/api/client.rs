//! A small gRPC client for the CLI: `switchboard chat` (one chat request, printed as it arrives) and
//! `switchboard keys|teams|spend ...` (over AdminService).

use std::io::Write as _;

use futures_util::StreamExt;

use crate::proto::{self, chat_service_client::ChatServiceClient};

/// A channel to the gateway at `url`. `https://` speaks TLS, trusting the PEM CA in
/// `SWITCHBOARD_CA_CERT` (else the system's roots), with the client certificate and key in
/// `SWITCHBOARD_CLIENT_CERT` / `SWITCHBOARD_CLIENT_KEY` for a gateway that requires one.
pub async fn connect(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let mut endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    if url.starts_with("https://") {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |var: &str| -> anyhow::Result<Option<Vec<u8>>> {
            match std::env::var_os(var) {
                Some(path) => std::fs::read(&path)
                    .map(Some)
                    .map_err(|e| anyhow::anyhow!("{var}: cannot read {}: {e}", path.to_string_lossy())),
                None => Ok(None),
            }
        };
        let mut tls = ClientTlsConfig::new();
        tls = match read("SWITCHBOARD_CA_CERT")? {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
            None => tls.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (read("SWITCHBOARD_CLIENT_CERT")?, read("SWITCHBOARD_CLIENT_KEY")?) {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {url}: {e}"))
}

/// Sends one chat request to the gateway at `url` and prints the answer to stdout, then a line on
/// stderr naming the deployment that served it.
pub async fn chat(
    url: String,
    key: Option<String>,
    model: String,
    system: Option<String>,
    prompt: String,
    stream: bool,
) -> anyhow::Result<()> {
    let mut client = ChatServiceClient::new(connect(&url).await?);
    let text = |role: proto::Role, content: String| proto::Message {
        role: role as i32,
        content,
        ..Default::default()
    };
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(text(proto::Role::System, s));
    }
    messages.push(text(proto::Role::User, prompt));
    let mut request = tonic::Request::new(proto::ChatRequest {
        model,
        messages,
        ..Default::default()
    });
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse()?);
    }
    let status = |s: tonic::Status| anyhow::anyhow!("{:?}: {}", s.code(), s.message());
    let mut out = std::io::stdout();
    let route = if stream {
        let mut chunks = client
            .stream_complete(request)
            .await
            .map_err(status)?
            .into_inner();
        let mut route = None;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(status)?;
            for c in &chunk.choices {
                if let Some(d) = &c.delta {
                    write!(out, "{}", d.content)?;
                    out.flush()?;
                }
            }
            route = route.or(chunk.route);
        }
        route
    } else {
        let resp = client.complete(request).await.map_err(status)?.into_inner();
        for c in &resp.choices {
            if let Some(m) = &c.message {
                write!(out, "{}", m.content)?;
            }
        }
        resp.route
    };
    writeln!(out)?;
    if let Some(r) = route {
        eprintln!(
            "[{} via {} ({}), {} attempt(s)]",
            r.model_group, r.deployment_id, r.upstream_model, r.attempts
        );
    }
    Ok(())
}

/// Budget and limit flags shared by `keys create` and `teams create`.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct LimitArgs {
    /// USD per budget window (or for the key's lifetime).
    #[arg(long)]
    pub max_budget: Option<f64>,
    /// 30s, 1h, 1d, 30d, 1mo.
    #[arg(long)]
    pub budget_duration: Option<String>,
    /// USD: alert (once per window) when crossed.
    #[arg(long)]
    pub soft_budget: Option<f64>,
    #[arg(long)]
    pub rpm_limit: Option<u64>,
    #[arg(long)]
    pub tpm_limit: Option<u64>,
    #[arg(long)]
    pub max_parallel_requests: Option<u32>,
}

impl LimitArgs {
    fn proto(self) -> proto::Limits {
        proto::Limits {
            max_budget: self.max_budget,
            budget_duration: self.budget_duration.unwrap_or_default(),
            soft_budget: self.soft_budget,
            rpm_limit: self.rpm_limit,
            tpm_limit: self.tpm_limit,
            max_parallel_requests: self.max_parallel_requests,
        }
    }
}

/// `switchboard keys ...`: virtual keys, over AdminService.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints the secret (shown this once) and its id.
    Create {
        /// Model groups or access groups, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        #[arg(long)]
        alias: Option<String>,
        #[arg(long)]
        team_id: Option<String>,
        #[arg(long)]
        user_id: Option<String>,
        /// Seconds until the key expires.
        #[arg(long)]
        expires_in: Option<u64>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List keys (id, preview, alias, team, spend).
    List {
        #[arg(long)]
        team_id: Option<String>,
    },
    /// Show one key.
    Get {
        key_id: String,
    },
    /// Delete a key; it stops working on every replica.
    Delete {
        key_id: String,
    },
    /// Issue a new secret for a key; the old one stops working.
    Regenerate {
        key_id: String,
    },
    /// Refuse a key until it is unblocked.
    Block {
        key_id: String,
    },
    Unblock {
        key_id: String,
    },
}

/// `switchboard teams ...`: teams, over AdminService.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TeamsCommand {
    /// Create a team.
    Create {
        #[arg(long)]
        team_id: Option<String>,
        #[arg(long)]
        alias: Option<String>,
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Member user ids, comma-separated.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    List,
    /// Delete a team (it must have no keys left).
    Delete {
        team_id: String,
    },
}

/// `switchboard spend`: spend per day.
#[derive(Debug, Clone, clap::Args)]
pub struct SpendArgs {
    /// key, team, user, end_user, model or all.
    #[arg(long, default_value = "key")]
    pub group_by: String,
    /// YYYY-MM-DD (default: today, UTC).
    #[arg(long)]
    pub start_date: Option<String>,
    #[arg(long)]
    pub end_date: Option<String>,
}

/// One admin command from the CLI.
#[derive(Debug, Clone)]
pub enum AdminCommand {
    Keys(KeysCommand),
    Teams(TeamsCommand),
    Spend(SpendArgs),
}

fn spend_text(s: Option<&proto::Spend>) -> String {
    s.map_or("-".into(), |s| format!("${:.6}", s.spend_usd))
}

/// `msg` with the bearer key, when one is given.
fn authed<T>(key: &Option<String>, msg: T) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    if let Some(k) = key {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse()?);
    }
    Ok(r)
}

/// Runs one admin command against the gateway at `url` with the master key.
pub async fn admin(url: String, key: Option<String>, command: AdminCommand) -> anyhow::Result<()> {
    use proto::admin_service_client::AdminServiceClient;
    let mut client = AdminServiceClient::new(connect(&url).await?);
    let fail = |s: tonic::Status| anyhow::anyhow!("{}: {}", s.code(), s.message());
    match command {
        AdminCommand::Keys(KeysCommand::Create {
            models,
            alias,
            team_id,
            user_id,
            expires_in,
            limits,
        }) => {
            let expires = expires_in.map(|s| {
                let at = std::time::SystemTime::now() + std::time::Duration::from_secs(s);
                prost_types::Timestamp::from(at)
            });
            let spec = proto::KeySpec {
                key_alias: alias.unwrap_or_default(),
                models,
                limits: Some(limits.proto()),
                expires,
                team_id: team_id.unwrap_or_default(),
                user_id: user_id.unwrap_or_default(),
                ..Default::default()
            };
            let r = client
                .create_key(authed(&key, proto::CreateKeyRequest { spec: Some(spec) })?)
                .await
                .map_err(fail)?
                .into_inner();
            println!("key:    {}", r.key);
            println!("key_id: {}", r.info.map(|i| i.key_id).unwrap_or_default());
            eprintln!("store the key now: it is not shown again");
        }
        AdminCommand::Keys(KeysCommand::List { team_id }) => {
            let r = client
                .list_keys(authed(
                    &key,
                    proto::ListKeysRequest {
                        team_id: team_id.unwrap_or_default(),
                        user_id: String::new(),
                    },
                )?)
                .await
                .map_err(fail)?
                .into_inner();
            println!(
                "{:<22} {:<12} {:<16} {:<16} {:>12} blocked",
                "key_id", "preview", "alias", "team", "spend"
            );
            for k in r.keys {
                let spec = k.spec.unwrap_or_default();
                println!(
                    "{:<22} {:<12} {:<16} {:<16} {:>12} {}",
                    k.key_id,
                    k.key_preview,
                    spec.key_alias,
                    spec.team_id,
                    spend_text(k.spend.as_ref()),
                    k.blocked
                );
            }
        }
        AdminCommand::Keys(KeysCommand::Get { key_id }) => {
            let r = client
                .get_key(authed(&key, proto::GetKeyRequest { key_id })?)
                .await
                .map_err(fail)?
                .into_inner();
            println!("{:#?}", r.info.unwrap_or_default());
        }
        AdminCommand::Keys(KeysCommand::Delete { key_id }) => {
            client
                .delete_key(authed(&key, proto::DeleteKeyRequest { key_id })?)
                .await
                .map_err(fail)?;
            println!("deleted");
        }
        AdminCommand::Keys(KeysCommand::Regenerate { key_id }) => {
            let r = client
                .regenerate_key(authed(&key, proto::RegenerateKeyRequest { key_id })?)
                .await
                .map_err(fail)?
                .into_inner();
            println!("key:    {}", r.key);
            eprintln!("the previous secret no longer works; store this one now");
        }
        AdminCommand::Keys(KeysCommand::Block { key_id }) => {
            client
                .block_key(authed(
                    &key,
                    proto::BlockKeyRequest {
                        key_id,
                        blocked: true,
                    },
                )?)
                .await
                .map_err(fail)?;
            println!("blocked");
        }
        AdminCommand::Keys(KeysCommand::Unblock { key_id }) => {
            client
                .block_key(authed(
                    &key,
                    proto::BlockKeyRequest {
                        key_id,
                        blocked: false,
                    },
                )?)
                .await
                .map_err(fail)?;
            println!("unblocked");
        }
        AdminCommand::Teams(TeamsCommand::Create {
            team_id,
            alias,
            models,
            members,
            limits,
        }) => {
            let spec = proto::TeamSpec {
                team_id: team_id.unwrap_or_default(),
                team_alias: alias.unwrap_or_default(),
                models,
                members,
                limits: Some(limits.proto()),
                ..Default::default()
            };
            let r = client
                .create_team(authed(&key, proto::CreateTeamRequest { spec: Some(spec) })?)
                .await
                .map_err(fail)?
                .into_inner();
            println!(
                "team_id: {}",
                r.info.and_then(|i| i.spec).map(|s| s.team_id).unwrap_or_default()
            );
        }
        AdminCommand::Teams(TeamsCommand::List) => {
            let r = client
                .list_teams(authed(&key, proto::ListTeamsRequest {})?)
                .await
                .map_err(fail)?
                .into_inner();
            for t in r.teams {
                let spec = t.spec.unwrap_or_default();
                println!(
                    "{:<24} {:<16} {:>12} blocked={}",
                    spec.team_id,
                    spec.team_alias,
                    spend_text(t.spend.as_ref()),
                    t.blocked
                );
            }
        }
        AdminCommand::Teams(TeamsCommand::Delete { team_id }) => {
            client
                .delete_team(authed(&key, proto::DeleteTeamRequest { team_id })?)
                .await
                .map_err(fail)?;
            println!("deleted");
        }
        AdminCommand::Spend(SpendArgs {
            group_by,
            start_date,
            end_date,
        }) => {
            let r = client
                .get_spend(authed(
                    &key,
                    proto::GetSpendRequest {
                        group_by,
                        start_date: start_date.unwrap_or_default(),
                        end_date: end_date.unwrap_or_default(),
                    },
                )?)
                .await
                .map_err(fail)?
                .into_inner();
            println!(
                "{:<10} {:<40} {:>14} {:>9} {:>10}",
                "date", "name", "spend_usd", "requests", "tokens"
            );
            for row in r.rows {
                println!(
                    "{:<10} {:<40} {:>14.6} {:>9} {:>10}",
                    row.date, row.name, row.spend_usd, row.requests, row.tokens
                );
            }
        }
    }
    Ok(())
}
