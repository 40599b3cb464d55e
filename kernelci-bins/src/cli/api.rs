//! `kci node|events|user|token ...`: the API from the command line.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use kernelci::client::{ApiClient, Hierarchy, Listener, ListenerConfig, NodeEventFilter};
use kernelci::models::{Node, ObjectId};
use serde_json::Value;

use kernelci::config::Settings;

/// Where the API is and who we are.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// API base URL (default: `[DEFAULT] api_url` in kernelci.toml, then http://localhost:8001).
    #[arg(long, env = "KCI_API_URL", global = true)]
    pub api: Option<String>,
    /// API token (default: `[DEFAULT] api_token` in kernelci.toml, or `$KCI_API_TOKEN`).
    #[arg(long, env = "KCI_API_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Settings file (default: $KCI_SETTINGS, ./kernelci.toml, ~/.config/kernelci/kernelci.toml).
    #[arg(long, env = "KCI_SETTINGS", global = true)]
    pub settings: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ApiArgs {
    pub(crate) fn client(&self) -> Result<ApiClient, String> {
        let settings = Settings::load(self.settings.as_deref()).map_err(|e| e.to_string())?;
        let url = self
            .api
            .clone()
            .or(settings.get_str("DEFAULT", "api_url"))
            .unwrap_or_else(|| "http://localhost:8001".into());
        let api = ApiClient::new(&url).map_err(|e| e.to_string())?;
        Ok(
            match self
                .token
                .clone()
                .or(settings.api_token().map(|t| t.expose().to_owned()))
            {
                Some(t) => api.with_token(t),
                None => api,
            },
        )
    }
}

/// `kci node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Print a node.
    Get {
        /// Node id.
        id: String,
    },
    /// Find nodes: `kci node find kind=test result=fail limit=20`.
    Find {
        /// `field__op=value` conditions.
        query: Vec<String>,
    },
    /// Count nodes matching conditions.
    Count {
        /// `field__op=value` conditions.
        query: Vec<String>,
    },
    /// Create a node from a JSON file (`-` for stdin).
    Create {
        /// The JSON file.
        file: PathBuf,
    },
    /// Replace a node from a JSON file (`-` for stdin); the file's `id` names the node.
    Update {
        /// The JSON file.
        file: PathBuf,
    },
    /// Submit a result hierarchy (`{"node": ..., "child_nodes": [...]}`) from a JSON file.
    Submit {
        /// The JSON file.
        file: PathBuf,
    },
}

/// `kci events ...`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Follow a channel and print each event as one JSON line.
    Listen {
        /// The channel.
        #[arg(default_value = "node")]
        channel: String,
        /// A durable subscriber id: resume where it stopped.
        #[arg(long)]
        durable: Option<String>,
        /// Every owner's events, not only yours.
        #[arg(long)]
        promisc: bool,
        /// Filters `kind=test`, `state=done`, `result=fail`, `name=x` (repeatable; same key = any of).
        #[arg(long = "filter")]
        filters: Vec<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
}

/// `kci user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Log in and print a token.
    Login {
        /// Username.
        username: String,
        /// Password (default: $KCI_PASSWORD, else read from stdin).
        #[arg(long, env = "KCI_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Who the token belongs to.
    Whoami,
    /// Invite a user (admin); prints the invite URL.
    Invite {
        /// Username.
        username: String,
        /// E-mail.
        email: String,
        /// Groups to join.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Make an admin.
        #[arg(long)]
        superuser: bool,
    },
    /// List users.
    List,
}

/// `kci token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a named API token for yourself.
    Create {
        /// A label.
        name: String,
        /// Lifetime in seconds.
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// Revoke a token by its id (`jti`).
    Revoke {
        /// The token id.
        jti: String,
    },
}

fn read_json(path: &PathBuf) -> Result<Value, String> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| format!("stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
    };
    serde_json::from_str(&text)
        .map_err(|e| format!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))
}

fn node_from(path: &PathBuf) -> Result<Node, String> {
    Node::from_value(read_json(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

fn pairs(args: &[String]) -> Result<Vec<(String, String)>, String> {
    args.iter()
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    format!("'{a}' is not a condition; write field=value or field__op=value")
                })
        })
        .collect()
}

fn print_nodes(nodes: &[Node], json: bool) -> Result<(), String> {
    if json {
        for n in nodes {
            println!("{}", serde_json::to_string(n).map_err(|e| e.to_string())?);
        }
        return Ok(());
    }
    println!(
        "{:<24}  {:<10}  {:<9}  {:<10}  NAME",
        "ID", "KIND", "STATE", "RESULT"
    );
    for n in nodes {
        println!(
            "{:<24}  {:<10}  {:<9}  {:<10}  {}",
            n.id.map(|i| i.to_hex()).unwrap_or_default(),
            n.kind,
            n.state.as_str(),
            n.result.map(|r| r.as_str()).unwrap_or("-"),
            n.name
        );
    }
    Ok(())
}

fn e(err: kernelci::client::ClientError) -> String {
    err.to_string()
}

/// Runs `kci node ...`.
pub async fn node(args: &ApiArgs, cmd: NodeCommand) -> Result<(), String> {
    let api = args.client()?;
    match cmd {
        NodeCommand::Get { id } => {
            let id = ObjectId::parse_str(&id).map_err(|e| e.to_string())?;
            match api.get_node(id).await.map_err(e)? {
                Some(n) => println!(
                    "{}",
                    serde_json::to_string_pretty(&n).map_err(|e| e.to_string())?
                ),
                None => return Err(format!("no node with id {id}")),
            }
        }
        NodeCommand::Find { query } => {
            let p = pairs(&query)?;
            let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let page = api.find_nodes(&refs).await.map_err(e)?;
            print_nodes(&page.items, args.json)?;
            if !args.json {
                eprintln!("{} shown of {}", page.items.len(), page.total);
            }
        }
        NodeCommand::Count { query } => {
            let p = pairs(&query)?;
            let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            println!("{}", api.count_nodes(&refs).await.map_err(e)?);
        }
        NodeCommand::Create { file } => {
            let n = api.create_node(&node_from(&file)?).await.map_err(e)?;
            print_nodes(&[n], args.json)?;
        }
        NodeCommand::Update { file } => {
            let n = api
                .update_node(&node_from(&file)?, false)
                .await
                .map_err(e)?;
            print_nodes(&[n], args.json)?;
        }
        NodeCommand::Submit { file } => {
            fn tree(v: &Value, path: &str) -> Result<Hierarchy, String> {
                let node = Node::from_value(
                    v.get("node")
                        .cloned()
                        .ok_or(format!("{path}: missing 'node'"))?,
                )
                .map_err(|e| format!("{path}.node: {e}"))?;
                let children = v
                    .get("child_nodes")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let child_nodes = children
                    .iter()
                    .enumerate()
                    .map(|(i, c)| tree(c, &format!("{path}.child_nodes.{i}")))
                    .collect::<Result<_, _>>()?;
                Ok(Hierarchy { node, child_nodes })
            }
            let h = tree(&read_json(&file)?, &file.display().to_string())?;
            let written = api.submit_results(&h).await.map_err(e)?;
            print_nodes(&written, args.json)?;
        }
    }
    Ok(())
}

/// Runs `kci events ...`.
pub async fn events(args: &ApiArgs, cmd: EventsCommand) -> Result<(), String> {
    let EventsCommand::Listen {
        channel,
        durable,
        promisc,
        filters,
        count,
    } = cmd;
    let mut filter = NodeEventFilter::default();
    for (k, v) in pairs(&filters)? {
        match k.as_str() {
            "kind" => filter.kind.push(v),
            "state" => filter.state.push(v),
            "result" => filter.result.push(v),
            "name" => filter.name.push(v),
            other => {
                return Err(format!(
                    "--filter {other}=...: use kind, state, result or name"
                ));
            }
        }
    }
    let mut config = ListenerConfig::new(channel).filter(filter);
    if let Some(d) = durable {
        config = config.durable(d);
    }
    if promisc {
        config = config.promiscuous();
    }
    let mut listener = Listener::new(args.client()?, config);
    let mut n = 0usize;
    loop {
        let ev = tokio::select! {
            ev = listener.next() => ev.map_err(e)?,
            _ = tokio::signal::ctrl_c() => break,
        };
        println!("{}", ev.event.to_json());
        listener.ack(&ev);
        n += 1;
        if count.is_some_and(|c| n >= c) {
            break;
        }
    }
    listener.close().await.map_err(e)
}

/// Runs `kci user ...`.
pub async fn user(args: &ApiArgs, cmd: UserCommand) -> Result<(), String> {
    let api = args.client()?;
    match cmd {
        UserCommand::Login { username, password } => {
            let password = match password {
                Some(p) => p,
                None => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_line(&mut s)
                        .map_err(|e| format!("stdin: {e}"))?;
                    s.trim_end().to_owned()
                }
            };
            println!("{}", api.login(&username, &password).await.map_err(e)?);
        }
        UserCommand::Whoami => {
            let u = api.whoami().await.map_err(e)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&u).map_err(|e| e.to_string())?
            );
        }
        UserCommand::Invite {
            username,
            email,
            groups,
            superuser,
        } => {
            let g: Vec<&str> = groups.iter().map(String::as_str).collect();
            let r = api
                .invite(&username, &email, &g, superuser, true)
                .await
                .map_err(e)?;
            println!("{}", r["invite_url"].as_str().unwrap_or_default());
        }
        UserCommand::List => {
            let page = api.find_users(&[("limit", "1000")]).await.map_err(e)?;
            for u in page.items {
                let groups: Vec<String> = u.groups.iter().map(|g| g.name.clone()).collect();
                println!(
                    "{:<24}  {:<20}  {:<30}  admin={} verified={} groups={}",
                    u.id,
                    u.username,
                    u.email,
                    u.is_superuser,
                    u.is_verified,
                    groups.join(",")
                );
            }
        }
    }
    Ok(())
}

/// Runs `kci token ...`.
pub async fn token(args: &ApiArgs, cmd: TokenCommand) -> Result<(), String> {
    let api = args.client()?;
    match cmd {
        TokenCommand::Create { name, expires_in } => {
            let t = api.create_token(&name, expires_in).await.map_err(e)?;
            if args.json {
                println!("{t}");
            } else {
                println!("{}", t["access_token"].as_str().unwrap_or_default());
                eprintln!(
                    "token id (for revoke): {}",
                    t["jti"].as_str().unwrap_or_default()
                );
            }
        }
        TokenCommand::Revoke { jti } => {
            api.revoke_token(&jti).await.map_err(e)?;
            eprintln!("revoked {jti}");
        }
    }
    Ok(())
}
