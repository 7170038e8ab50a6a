//! enrichd: the enrichment orchestrator service — HTTP API and background workers over the job
//! store, driving Apollo through `apollo-client`.

pub mod cli;
pub mod config;
pub mod core;
pub mod demo;
pub mod error;
pub mod logging;
pub mod models;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod ui;
pub mod v1;
pub mod worker;
