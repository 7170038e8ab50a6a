//! The `enrichd` binary: `serve`, `demo`, `migrate`, and the client commands (`submit`, `watch`,
//! `export`, `jobs`, `show`, `cancel`, `retry`, `suppress`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use enrichd::config::Config;
use enrichd::startup::Application;

/// The enrichment orchestrator.
#[derive(Parser, Debug)]
#[command(name = "enrichd", version, about = "Enrichment orchestrator in front of Apollo's Bulk People Enrichment")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service (configuration from the environment; see --help of this command).
    Serve(Box<Config>),
    /// The whole flow on this machine: SQLite, the in-process Apollo simulator, a signed callback.
    #[cfg(feature = "sim")]
    Demo {
        /// People in the demo job.
        #[arg(long, default_value_t = 300)]
        people: usize,
        /// Keep the service running after the summary, to look at the dashboard (Ctrl-C stops it).
        #[arg(long)]
        keep_running: bool,
    },
    /// Apply database migrations and exit.
    Migrate {
        /// Database URL.
        #[arg(long, env = "DATABASE_URL", default_value = "sqlite://enrichd.db?mode=rwc")]
        database_url: String,
    },
    #[command(flatten)]
    Client(enrichd::cli::ClientCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let default_level = match cli.command {
        #[cfg(feature = "sim")]
        Command::Demo { .. } => "error",
        Command::Client(_) => "warn",
        _ => "info",
    };
    enrichd::logging::init(default_level)?;
    match cli.command {
        Command::Serve(config) => {
            let app = Application::build(*config).await?.start()?;
            tracing::info!(url = %app.url(), "enrichd serving");
            app.serve_until_signalled().await?;
        }
        #[cfg(feature = "sim")]
        Command::Demo { people, keep_running } => enrichd::demo::run(people, keep_running).await?,
        Command::Migrate { database_url } => {
            job_store::Store::connect(&database_url).await?;
            println!("migrations applied");
        }
        Command::Client(command) => return enrichd::cli::run(command).await,
    }
    Ok(ExitCode::SUCCESS)
}
