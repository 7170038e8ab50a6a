//! The command-line client: `submit`, `watch`, `export`, `jobs`, `show`, `cancel`, `retry`, `suppress`, talking to a
//! running service over its HTTP API (`ENRICHD_URL`, `ENRICHD_KEY`) with the contract's types.

mod api;
mod export;
mod submit;
mod suppress;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use apollo_client::{EnrichFlags, Flag};
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Subcommand, ValueEnum};
use secrecy::SecretString;

pub use api::{ApiClient, ClientError};
pub use suppress::{IdentifierArgs, SuppressCommand};

use crate::models::{Job, JobStatus, RetryRequest};

/// Where the service is and the key to use.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// The service's base URL.
    #[arg(long, env = "ENRICHD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// A client API key.
    #[arg(long, env = "ENRICHD_KEY", hide_env_values = true)]
    pub key: SecretString,
}

/// One option per Apollo flag ([`Flag::ALL`]): `--reveal-personal-emails`, `--reveal-phone-number`,
/// `--run-waterfall-email`, `--run-waterfall-phone`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlagArgs(pub EnrichFlags);

impl FromArgMatches for FlagArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(FlagArgs(EnrichFlags::of(Flag::ALL.into_iter().filter(|f| matches.get_flag(f.name())))))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = FlagArgs::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for FlagArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Flag::ALL.into_iter().fold(cmd, |cmd, f| {
            cmd.arg(
                Arg::new(f.name())
                    .long(f.name().replace('_', "-"))
                    .action(ArgAction::SetTrue)
                    .help(format!("Ask Apollo: {}", f.label().to_lowercase())),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        FlagArgs::augment_args(cmd)
    }
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// `submit`'s options.
#[derive(Args, Debug, Clone)]
pub struct SubmitArgs {
    /// A `.csv` file (header row first) or a `.jsonl` file (one person object per line).
    pub file: PathBuf,
    /// The Apollo flags asked for (`--reveal-phone-number`, …).
    #[command(flatten)]
    pub flags: FlagArgs,
    /// Where the service sends the signed `job.completed` callback.
    #[arg(long)]
    pub callback_url: Option<String>,
    /// Credit budget of each job sent (decimal credits): the service stops sending a job's people
    /// before its worst-case cost could pass this; the rest end `skipped_budget`.
    #[arg(long, value_name = "CREDITS")]
    pub max_credits: Option<f64>,
    /// Print what each job would take (people after dedup, calls, worst-case credits) as JSON
    /// instead of submitting: nothing is stored, no Apollo call is made.
    #[arg(long)]
    pub dry_run: bool,
    /// Answer people enriched this recently (`30d`, `12h`; `0s`: never) from the service's stored
    /// records: no call, no credit (default: the service's `REUSE_WITHIN`).
    #[arg(long, value_name = "DURATION")]
    pub reuse_within: Option<String>,
    /// `column=field` (or `column=-` to ignore a column); repeatable. Overrides the header aliases.
    #[arg(long = "map", value_name = "COLUMN=FIELD")]
    pub map: Vec<String>,
    /// Submit the valid rows even if some are invalid (they are listed either way).
    #[arg(long)]
    pub skip_invalid: bool,
    /// The idempotency key (default: a hash of the file and these options); a job of several
    /// parts adds `-<part>`.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Most people per job; a larger file becomes several jobs.
    #[arg(long, default_value_t = 10_000)]
    pub job_size: usize,
}

/// The client's subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum ClientCommand {
    /// Submit a CSV or JSONL file of people; prints the job id(s).
    Submit {
        /// The service.
        #[command(flatten)]
        conn: Connection,
        /// What to submit.
        #[command(flatten)]
        args: SubmitArgs,
    },
    /// Follow a job until it finishes: exit 0 when completed, 2 when failed, 3 when cancelled.
    Watch {
        /// The service.
        #[command(flatten)]
        conn: Connection,
        /// Job id.
        job: String,
        /// Seconds between polls.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Write a job's people: input columns (with `--with-input`), then the enriched columns.
    Export {
        /// The service.
        #[command(flatten)]
        conn: Connection,
        /// Job id.
        job: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Put the submitted columns first (the file's own columns, in order, when submitted from CSV).
        #[arg(long)]
        with_input: bool,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// This client's recent jobs.
    Jobs {
        /// The service.
        #[command(flatten)]
        conn: Connection,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// One job, as JSON.
    Show {
        /// The service.
        #[command(flatten)]
        conn: Connection,
        /// Job id.
        job: String,
    },
    /// Cancel a job.
    Cancel {
        /// The service.
        #[command(flatten)]
        conn: Connection,
        /// Job id.
        job: String,
    },
    /// Send a finished job's failed (or partial, or not-found) people again as a new job; prints its id.
    Retry {
        /// The service.
        #[command(flatten)]
        conn: Connection,
        /// Job id.
        job: String,
        /// The states to retry, comma-separated: failed, partial, not_found [default: failed,partial].
        #[arg(long, value_delimiter = ',')]
        states: Vec<String>,
        /// The idempotency key: the same key gives the same new job.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// The do-not-enrich list: `add`, `import`, `list`, `remove` (client keys: the client's list;
    /// `--global` with an admin key: the list for every client).
    Suppress {
        /// The service.
        #[command(flatten)]
        conn: Connection,
        /// What to do.
        #[command(subcommand)]
        action: SuppressCommand,
    },
}

/// Runs one client command; the exit code says how it went.
pub async fn run(command: ClientCommand) -> anyhow::Result<ExitCode> {
    crate::startup::install_tls();
    match command {
        ClientCommand::Submit { conn, args } => submit::run(&ApiClient::new(&conn)?, &args).await,
        ClientCommand::Watch { conn, job, interval } => {
            watch(&ApiClient::new(&conn)?, &job, Duration::from_secs_f64(interval.max(0.05))).await
        }
        ClientCommand::Export { conn, job, format, with_input, output } => {
            export::run(&ApiClient::new(&conn)?, &job, format, with_input, output.as_deref()).await
        }
        ClientCommand::Jobs { conn, limit } => {
            let page = ApiClient::new(&conn)?.jobs(limit).await?;
            println!("{:<36}  {:<10} {:>7} {:>7} {:>9}  created", "id", "status", "total", "done", "credits");
            for j in page.data {
                let credits = serde_json::to_string(&j.credits_consumed)?;
                println!(
                    "{}  {:<10} {:>7} {:>7} {:>9}  {}",
                    j.id,
                    status_name(j.status),
                    j.total,
                    done(&j),
                    credits,
                    j.created_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Show { conn, job } => {
            let job = ApiClient::new(&conn)?.job(&job).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Cancel { conn, job } => {
            let job = ApiClient::new(&conn)?.cancel(&job).await?;
            println!("{} {}", job.id, status_name(job.status));
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Retry { conn, job, states, idempotency_key } => {
            let body = RetryRequest { states: (!states.is_empty()).then_some(states) };
            let job = ApiClient::new(&conn)?.retry(&job, &body, idempotency_key.as_deref()).await?;
            eprintln!(
                "{} people of job {} sent again",
                job.total,
                job.retry_of.map(|j| j.to_string()).unwrap_or_default()
            );
            println!("{}", job.id);
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Suppress { conn, action } => suppress::run(&ApiClient::new(&conn)?, action).await,
    }
}

/// People that reached a final state.
fn done(j: &Job) -> i64 {
    j.total - j.counts.queued - j.counts.submitted - j.counts.awaiting_async
}

fn status_name(s: JobStatus) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The exit code for a finished job.
fn exit_for(status: JobStatus) -> ExitCode {
    match status {
        JobStatus::Completed => ExitCode::SUCCESS,
        JobStatus::Failed => ExitCode::from(2),
        _ => ExitCode::from(3),
    }
}

/// Follows the job until it ends: its event stream wakes the progress bar as people finish
/// (reconnecting with `Last-Event-ID` if it drops), and the job is read at least every `every`
/// (a job without events is quiet on the stream until it ends).
async fn watch(api: &ApiClient, id: &str, every: Duration) -> anyhow::Result<ExitCode> {
    let mut job = api.job(id).await?;
    let bar = indicatif::ProgressBar::new(job.total.max(0) as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} people  {msg}  ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut last: Option<i64> = None;
    let mut pending = String::new();
    let mut stream = api.events(id, None).await.ok();
    loop {
        bar.set_position(done(&job).max(0) as u64);
        bar.set_message(format!(
            "{}  credits {}",
            status_name(job.status),
            serde_json::to_string(&job.credits_consumed)?
        ));
        if job.status.is_final() {
            break;
        }
        match stream.as_mut() {
            Some(resp) => match tokio::time::timeout(every, resp.chunk()).await {
                Ok(Ok(Some(chunk))) => {
                    pending.push_str(&String::from_utf8_lossy(&chunk));
                    if let Some(end) = pending.rfind('\n') {
                        for line in pending[..end].lines() {
                            if let Some(n) = line.strip_prefix("id: ").and_then(|v| v.trim().parse().ok()) {
                                last = Some(n);
                            }
                        }
                        pending.drain(..=end);
                    }
                }
                // Timed out: read the job anyway.
                Err(_) => {}
                // The stream ended or dropped: resume after the last event seen.
                Ok(_) => {
                    pending.clear();
                    stream = api.events(id, last).await.ok();
                    if stream.is_none() {
                        tokio::time::sleep(every).await;
                    }
                }
            },
            None => tokio::time::sleep(every).await,
        }
        job = api.job(id).await?;
    }
    bar.finish();
    println!(
        "{} {}: {} people, {} complete, {} partial, {} not found, {} failed, credits {}",
        job.id,
        status_name(job.status),
        job.total,
        job.counts.complete,
        job.counts.partial,
        job.counts.not_found,
        job.counts.failed + job.counts.invalid,
        serde_json::to_string(&job.credits_consumed)?
    );
    Ok(exit_for(job.status))
}
