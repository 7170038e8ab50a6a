//! What the harness did, written down as it happens: the jobs it submitted and what each should
//! become, the identifiers it suppressed, the requests refused, and the chaos it caused. The
//! checks hold the simulator's record and the service's answers against this.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use apollo_client::{Credits, EnrichFlags};

/// The clients of the run, each with its own habits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Who {
    /// Many small and medium jobs of every flag combination: duplicates, bad rows, dry runs,
    /// suppressions, cancels, retries, erasures, events.
    Steady,
    /// Pairs of jobs at once from one pool of people, with a reuse window.
    Reuse,
    /// Expensive jobs with tight budgets.
    Budget,
    /// Bursts of big jobs submitted at once, against the daily cap.
    Heavy,
}

impl Who {
    /// Every client.
    pub const ALL: [Who; 4] = [Who::Steady, Who::Reuse, Who::Budget, Who::Heavy];

    /// The client's name (its key's name, and the first letter of its people's emails).
    pub fn name(self) -> &'static str {
        match self {
            Who::Steady => "steady",
            Who::Reuse => "reuse",
            Who::Budget => "budget",
            Who::Heavy => "heavy",
        }
    }

    /// The client whose people's emails start with `email`'s first letter.
    pub fn of_email(email: &str) -> Option<Who> {
        Who::ALL.into_iter().find(|w| email.starts_with(&w.name()[..1]))
    }

    /// Its API key.
    pub fn key(self) -> String {
        format!("soak-{}-key-9f2c41e7", self.name())
    }
}

/// A job the service accepted, and what its people should become.
#[derive(Clone, Debug)]
pub struct JobNote {
    /// The service's job id.
    pub id: String,
    /// Whose.
    pub who: Who,
    /// Its flags.
    pub flags: EnrichFlags,
    /// Each person's email, in input order (duplicates included).
    pub emails: Vec<String>,
    /// The budget it was given.
    pub max_credits: Option<f64>,
    /// It asked for per-person events.
    pub events: bool,
    /// It has a callback URL.
    pub callback: bool,
    /// The harness cancelled it.
    pub cancelled: bool,
    /// The job this one retries.
    pub retry_of: Option<String>,
}

/// What the verifier found for a finished job.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Its final status.
    pub status: String,
    /// Credits the service reports for it.
    pub credits: Credits,
    /// Possible double charges it reports, and their credits.
    pub double_charges: i64,
    /// Their credits.
    pub double_charge_credits: Credits,
    /// People by state.
    pub states: BTreeMap<String, usize>,
    /// The people ids by which events name them.
    pub people: Vec<String>,
    /// Records compared with the simulator's.
    pub compared: usize,
    /// People answered from an earlier lookup.
    pub reused: usize,
    /// Erased after checking.
    pub erased: bool,
    /// When it was checked.
    pub checked_at: Option<std::time::Instant>,
}

/// The whole book, shared by every task of the run.
pub struct Book {
    /// When the run started, on the wall clock (the timeline counts from it).
    pub started_at: SystemTime,
    /// Jobs by id.
    pub jobs: BTreeMap<String, JobNote>,
    /// Checked jobs.
    pub outcomes: HashMap<String, Outcome>,
    /// Identifiers on a client's do-not-enrich list, and since when.
    pub suppressed: HashMap<String, SystemTime>,
    /// Emails of dry runs (never to be sent).
    pub dry_emails: Vec<String>,
    /// Requests the service refused, by what it said (`422 invalid_request`, …).
    pub refused: BTreeMap<String, usize>,
    /// Bad requests the harness sent on purpose and the service refused as expected.
    pub bad_refused: usize,
    /// Dry runs answered with an estimate.
    pub dry_runs: usize,
    /// Erasures, and those that also suppressed.
    pub erasures: (usize, usize),
    /// Retries submitted.
    pub retries: usize,
    /// The chaos timeline: when (since the start), what.
    pub timeline: Vec<(Duration, String)>,
    /// When replicas were SIGKILLed.
    pub kills: Vec<SystemTime>,
    /// Windows in which 429s or 422s were caused on purpose: (from, to, what).
    pub windows: Vec<(SystemTime, SystemTime, &'static str)>,
    /// Problems found along the way (each fails the run).
    pub problems: Vec<String>,
    /// SIGTERM shutdowns: (seconds it took, exit status success).
    pub shutdowns: Vec<(f64, bool)>,
    /// Checked jobs that retention had purged by the end.
    pub purged: usize,
}

/// The shared book and the run's start.
#[derive(Clone)]
pub struct Shared {
    /// The book.
    pub book: Arc<Mutex<Book>>,
    /// The run's start.
    pub started: Instant,
}

impl Shared {
    /// A new book.
    pub fn new() -> Shared {
        let book = Book {
            started_at: SystemTime::now(),
            jobs: BTreeMap::new(),
            outcomes: HashMap::new(),
            suppressed: HashMap::new(),
            dry_emails: Vec::new(),
            refused: BTreeMap::new(),
            bad_refused: 0,
            dry_runs: 0,
            erasures: (0, 0),
            retries: 0,
            timeline: Vec::new(),
            kills: Vec::new(),
            windows: Vec::new(),
            problems: Vec::new(),
            shutdowns: Vec::new(),
            purged: 0,
        };
        Shared { book: Arc::new(Mutex::new(book)), started: Instant::now() }
    }

    /// Locks the book.
    pub fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a chaos event on the timeline (and prints it).
    pub fn note(&self, what: String) {
        let at = self.started.elapsed();
        eprintln!("[{:>7.1}s] {what}", at.as_secs_f64());
        self.book().timeline.push((at, what));
    }

    /// Notes a problem: the run fails.
    pub fn problem(&self, what: String) {
        eprintln!("PROBLEM: {what}");
        self.book().problems.push(what);
    }
}
