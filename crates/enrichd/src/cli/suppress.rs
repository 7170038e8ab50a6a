//! `enrichd suppress add|import|list|remove`: the do-not-enrich list over `/v1/suppressions`.
//! A client key manages its client's list; `--global` (admin keys) the global one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::cli::ApiClient;
use crate::models::{SuppressionIdentifier, SuppressionScope};

/// One identifier, given by exactly one option.
#[derive(Args, Debug, Clone, Default)]
#[group(multiple = false)]
pub struct IdentifierArgs {
    /// An email address.
    #[arg(long)]
    pub email: Option<String>,
    /// A LinkedIn profile URL.
    #[arg(long)]
    pub linkedin_url: Option<String>,
    /// An Apollo person id (24 hexadecimal characters).
    #[arg(long)]
    pub apollo_id: Option<String>,
    /// A whole domain: everyone whose domain, or whose email's domain, it is.
    #[arg(long)]
    pub domain: Option<String>,
}

impl IdentifierArgs {
    fn given(&self) -> bool {
        self.email.is_some() || self.linkedin_url.is_some() || self.apollo_id.is_some() || self.domain.is_some()
    }

    fn identifier(&self) -> SuppressionIdentifier {
        SuppressionIdentifier {
            email: self.email.clone(),
            linkedin_url: self.linkedin_url.clone(),
            apollo_id: self.apollo_id.clone(),
            domain: self.domain.clone(),
        }
    }
}

/// `suppress`'s actions.
#[derive(Subcommand, Debug, Clone)]
pub enum SuppressCommand {
    /// Add one identifier (exactly one of --email, --linkedin-url, --apollo-id, --domain).
    Add {
        /// The identifier.
        #[command(flatten)]
        id: IdentifierArgs,
        /// The global list (admin keys).
        #[arg(long)]
        global: bool,
    },
    /// Add many: a `.csv` file with a header naming any of email, linkedin_url, apollo_id, domain,
    /// or a `.json` file holding an array of identifier objects.
    Import {
        /// The file.
        file: PathBuf,
        /// The global list (admin keys).
        #[arg(long)]
        global: bool,
    },
    /// The entries: id, kind, hash prefix, scope, when added (there is no plaintext to show).
    List {
        /// The global list (admin keys).
        #[arg(long)]
        global: bool,
    },
    /// Remove an entry by id, or the entry of an identifier given again (`--email X`, …).
    Remove {
        /// The entry id (from `suppress list`).
        #[arg(conflicts_with_all = ["email", "linkedin_url", "apollo_id", "domain"])]
        entry: Option<String>,
        /// The identifier, instead of the id.
        #[command(flatten)]
        id: IdentifierArgs,
        /// The global list (admin keys).
        #[arg(long)]
        global: bool,
    },
}

fn scope(global: bool) -> Option<SuppressionScope> {
    global.then_some(SuppressionScope::Global)
}

/// Runs one `suppress` action.
pub async fn run(api: &ApiClient, command: SuppressCommand) -> anyhow::Result<ExitCode> {
    match command {
        SuppressCommand::Add { id, global } => {
            if !id.given() {
                anyhow::bail!("give one of --email, --linkedin-url, --apollo-id, --domain");
            }
            let done = api.add_suppression(&id.identifier(), scope(global)).await?;
            let e = &done.entry;
            println!("{} {} {} {}", if done.added { "added" } else { "already present" }, e.id, e.kind, e.hash_prefix);
            Ok(ExitCode::SUCCESS)
        }
        SuppressCommand::Import { file, global } => import(api, &file, global).await,
        SuppressCommand::List { global } => {
            let entries = api.suppressions(scope(global)).await?;
            println!("{:<36}  {:<12} {:<12}  {:<6}  created", "id", "kind", "hash", "scope");
            for e in &entries {
                let scope = match e.scope {
                    SuppressionScope::Client => "client",
                    SuppressionScope::Global => "global",
                };
                println!(
                    "{}  {:<12} {:<12}  {:<6}  {}",
                    e.id,
                    e.kind,
                    e.hash_prefix,
                    scope,
                    e.created_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
            eprintln!("{} entr{}", entries.len(), if entries.len() == 1 { "y" } else { "ies" });
            Ok(ExitCode::SUCCESS)
        }
        SuppressCommand::Remove { entry, id, global } => {
            match (entry, id.given()) {
                (Some(entry), false) => api.remove_suppression(&entry, scope(global)).await?,
                (None, true) => api.remove_suppression_of(&id.identifier(), scope(global)).await?,
                _ => anyhow::bail!("give an entry id, or one of --email, --linkedin-url, --apollo-id, --domain"),
            };
            println!("removed");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn import(api: &ApiClient, file: &Path, global: bool) -> anyhow::Result<ExitCode> {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    let content_type = match ext.as_str() {
        "csv" => "text/csv",
        "json" => "application/json",
        _ => anyhow::bail!("{}: a .csv or .json file, please", file.display()),
    };
    let body = std::fs::read(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let done = api.import_suppressions(body, content_type, scope(global)).await?;
    for p in &done.errors {
        // CSV rows by file line (the header is line 1), JSON items by array index.
        let row = match (p.index, ext.as_str()) {
            (Some(i), "csv") => format!("line {}", i + 2),
            (Some(i), _) => format!("item {i}"),
            (None, _) => "row".into(),
        };
        let field = if p.field.is_empty() { String::new() } else { format!("{} ", p.field) };
        eprintln!("{row}: {field}{}", p.message);
    }
    println!("added {}, already present {}, invalid {}", done.added, done.already_present, done.invalid);
    Ok(if done.invalid == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
