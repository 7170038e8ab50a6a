//! `enrichd-bench`: the benchmark runner (issue 6). It runs the service in-process against the
//! in-process Apollo simulator and a callback receiver, all over real HTTP on loopback, and writes
//! `BENCHMARKS.md` at the repository root:
//!
//! 1. rate-limit use: a 5,000-person job under the simulator's limit, then with the configured
//!    limit set twice too high; 1c (`matrix`): the release binary, one process and three replicas,
//!    against every way the simulator can count its limits, beside a client that sends until refused;
//! 2. many small jobs: 1,000 jobs of 1–3 people;
//! 3. overhead: no limit and no delay, people per second end to end, SQLite and PostgreSQL;
//! 4. webhook ingest: durable deliveries per second and latency against a bare actix-web handler;
//! 5. size: submitting a 100,000-person job, peak and idle RSS, `GET /v1/jobs/{id}` while ten
//!    jobs run; 5b (`5-post`): the steps of that POST one by one;
//! 6. replicas: 1, 2 and 3 replicas on one PostgreSQL database sharing one key (rate use, 429s,
//!    submit → first call, overhead), beside a client that sends until refused;
//! 7. credits saved (`credits`): 40 jobs of the same 5 people, and a re-run of a 5,000-person
//!    list with 10 % new people, with the reuse window off and on.
//!
//! Run: `cargo run --release -p e2e-tests --bin enrichd-bench` (PostgreSQL at `TEST_PG_URL`,
//! default `postgres://postgres@127.0.0.1:5432/postgres`). Each section runs in its own child
//! process (the same binary), so memory figures and leftover work never mix. Options:
//! `--only 1,3-sqlite` runs some sections; `--out PATH` writes elsewhere than `BENCHMARKS.md`.
//!
//! Layout: [`runner`] starts the children and collects their [`report`]s, [`render`] writes the
//! markdown; each section is its own module; [`stack`] starts the service on the test harness's
//! setup (`e2e_tests::TestSetup`), [`yardstick`] measures what figures are divided by so that runs
//! on different machines compare.

mod credits;
mod figures;
mod ingest;
mod matrix;
mod overhead;
mod post_breakdown;
mod procfs;
mod rate_use;
mod render;
mod replicas;
mod report;
mod runner;
mod size;
mod small_jobs;
mod stack;
mod workload;
mod yardstick;

fn main() {
    match std::env::var(runner::SECTION_VAR) {
        Ok(section) => runner::child(&section),
        Err(_) => runner::parent(),
    }
}
