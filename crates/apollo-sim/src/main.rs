//! `apollo-sim`: the Apollo simulator as a standalone server.

use std::net::SocketAddr;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Apollo People Enrichment simulator: bulk_match, webhook deliveries, webhook_result polling and
/// api_usage_stats, with rate limits, credits and fault injection.
#[derive(Parser, Debug)]
#[command(name = "apollo-sim", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4010")]
    bind: SocketAddr,

    #[command(flatten)]
    sim: apollo_sim::SimConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,apollo_sim=debug")))
        .init();
    let cli = Cli::parse();
    let sim = apollo_sim::spawn_on(cli.bind, cli.sim).await?;
    tracing::info!(url = sim.url(), "apollo-sim ready; Ctrl-C stops it");
    tokio::signal::ctrl_c().await?;
    tracing::info!(calls = sim.calls().len(), credits = %sim.ledger().total, "stopping");
    sim.stop().await;
    Ok(())
}
