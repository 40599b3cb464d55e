//! `kci local ...`: import, query and count nodes in a local SQLite node store.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;
use kernelci::models::{Node, ObjectId};
use kernelci::query::Query;
use kernelci::store::{EventMode, FindOptions, NodeStore, Sort, SqliteStore};

/// Commands on a local store.
#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Import nodes from JSON files (one JSON object per line, or one JSON array per file).
    Import {
        /// The store file.
        #[arg(long, default_value = "kernelci.sqlite3", env = "KCI_DB")]
        db: PathBuf,
        /// Files to import.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Find nodes with upstream's query syntax, e.g. `kind=test result=fail created__gt=2024-01-01`.
    Find {
        /// The store file.
        #[arg(long, default_value = "kernelci.sqlite3", env = "KCI_DB")]
        db: PathBuf,
        /// `field__op=value` conditions; `limit=N` and `offset=N` page.
        query: Vec<String>,
        /// Sort by this field (prefix with `-` for descending).
        #[arg(long)]
        sort: Option<String>,
        /// Print JSON (one node per line) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Count nodes matching a query.
    Count {
        /// The store file.
        #[arg(long, default_value = "kernelci.sqlite3", env = "KCI_DB")]
        db: PathBuf,
        /// `field__op=value` conditions.
        query: Vec<String>,
    },
    /// Fill a store with sample nodes and run a few queries, printing how long each took.
    Demo {
        /// The store file.
        #[arg(long, default_value = "kernelci-demo.sqlite3")]
        db: PathBuf,
        /// How many sample nodes to add.
        #[arg(long, default_value_t = 100_000)]
        nodes: usize,
    },
}

type CliResult = Result<(), String>;

fn open(db: &Path) -> Result<SqliteStore, String> {
    SqliteStore::open(db).map_err(|e| format!("{}: {e}", db.display()))
}

fn parse_query(args: &[String]) -> Result<Query, String> {
    let mut pairs = Vec::new();
    for a in args {
        let (k, v) = a.split_once('=').ok_or_else(|| {
            format!("'{a}' is not a condition; write field=value or field__op=value")
        })?;
        pairs.push((k.to_owned(), v.to_owned()));
    }
    Query::parse(pairs).map_err(|e| e.to_string())
}

/// Runs a `kci local` command.
pub async fn run(cmd: LocalCommand) -> CliResult {
    match cmd {
        LocalCommand::Import { db, files } => import(&db, &files).await,
        LocalCommand::Find {
            db,
            query,
            sort,
            json,
        } => find(&db, &query, sort, json).await,
        LocalCommand::Count { db, query } => {
            let q = parse_query(&query)?;
            let n = open(&db)?
                .count_nodes(&q.filter)
                .await
                .map_err(|e| e.to_string())?;
            println!("{n}");
            Ok(())
        }
        LocalCommand::Demo { db, nodes } => demo(&db, nodes).await,
    }
}

/// Reads nodes from a file: a JSON array, or one object per line. Errors name the file, the
/// line and the field.
fn read_nodes(path: &Path) -> Result<Vec<Node>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut first = String::new();
    reader
        .read_line(&mut first)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut nodes = Vec::new();
    if first.trim_start().starts_with('[') {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut reader, &mut rest)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let all = first + &rest;
        let values: Vec<serde_json::Value> = serde_json::from_str(&all)
            .map_err(|e| format!("{}:{}: {e}", path.display(), e.line()))?;
        for (i, v) in values.into_iter().enumerate() {
            let mut node =
                Node::from_value(v).map_err(|e| format!("{}: item {i}: {e}", path.display()))?;
            node.validate()
                .map_err(|e| format!("{}: item {i}: {e}", path.display()))?;
            nodes.push(node);
        }
        return Ok(nodes);
    }
    let lines = std::iter::once(Ok(first)).chain(reader.lines());
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let lineno = i + 1;
        let mut node = Node::from_json(line.as_bytes())
            .map_err(|e| format!("{}:{lineno}: {e}", path.display()))?;
        node.validate()
            .map_err(|e| format!("{}:{lineno}: {e}", path.display()))?;
        nodes.push(node);
    }
    Ok(nodes)
}

async fn import(db: &Path, files: &[PathBuf]) -> CliResult {
    let store = open(db)?;
    for f in files {
        let nodes = read_nodes(f)?;
        let n = nodes.len();
        store
            .insert_nodes(nodes, EventMode::Publish)
            .await
            .map_err(|e| format!("{}: {e}", f.display()))?;
        eprintln!("{}: imported {n} nodes", f.display());
    }
    Ok(())
}

async fn find(db: &Path, args: &[String], sort: Option<String>, json: bool) -> CliResult {
    let q = parse_query(args)?;
    let sort = sort.map(|s| match s.strip_prefix('-') {
        Some(f) => Sort {
            field: f.to_owned(),
            descending: true,
        },
        None => Sort {
            field: s,
            descending: false,
        },
    });
    let opts = FindOptions {
        limit: Some(q.limit.unwrap_or(50)),
        offset: q.offset.unwrap_or(0),
        sort,
        after: None,
    };
    let page = open(db)?
        .find_nodes(&q.filter, &opts)
        .await
        .map_err(|e| e.to_string())?;
    if json {
        for n in &page.items {
            println!("{}", serde_json::to_string(n).map_err(|e| e.to_string())?);
        }
        return Ok(());
    }
    println!(
        "{:<24}  {:<10}  {:<9}  {:<10}  {:<26}  NAME",
        "ID", "KIND", "STATE", "RESULT", "CREATED"
    );
    for n in &page.items {
        println!(
            "{:<24}  {:<10}  {:<9}  {:<10}  {:<26}  {}",
            n.id.map(|i| i.to_hex()).unwrap_or_default(),
            n.kind,
            n.state.as_str(),
            n.result.map(|r| r.as_str()).unwrap_or("-"),
            n.created.to_string(),
            n.name
        );
    }
    eprintln!("{} node(s)", page.items.len());
    Ok(())
}

async fn demo(db: &Path, count: usize) -> CliResult {
    let store = open(db)?;
    eprintln!("filling {} with {count} sample nodes...", db.display());
    let start = Instant::now();
    let mut done = 0;
    while done < count {
        let batch = (count - done).min(10_000);
        let nodes: Vec<Node> = kernelci_sample(batch);
        store
            .insert_nodes(nodes, EventMode::Silent)
            .await
            .map_err(|e| e.to_string())?;
        done += batch;
        eprint!("\r  {done}/{count}");
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "\r  inserted {count} nodes in {secs:.2} s ({:.0} nodes/s)",
        count as f64 / secs
    );
    for args in [
        vec!["kind=test", "result=fail", "limit=50"],
        vec![
            "data.kernel_revision.tree=mainline",
            "state__ne=done",
            "limit=50",
        ],
        vec!["parent=null", "limit=50"],
        vec![
            "created__gt=2024-01-01T12:00:00",
            "retry_counter__gt=1",
            "limit=50",
        ],
        vec!["name__re=^node-1[0-2]$", "limit=50"],
    ] {
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let q = parse_query(&args)?;
        let t = Instant::now();
        let page = store
            .find_nodes(
                &q.filter,
                &FindOptions {
                    limit: q.limit,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let total = store
            .count_nodes(&q.filter)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "{:<60} {:>3} shown of {:>7}  ({:.2} ms)",
            args.join(" "),
            page.items.len(),
            total,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}

fn kernelci_sample(n: usize) -> Vec<Node> {
    kernelci::models::sample::sample_nodes(n)
        .into_iter()
        .map(|mut node| {
            node.id = Some(ObjectId::new());
            node
        })
        .collect()
}
