//! The store suite: every test runs on SQLite and on PostgreSQL, each in its own database.

mod harness;

mod budget;
mod callbacks;
mod claims;
mod collisions;
mod concurrency;
mod deliveries;
mod erase;
mod jobs;
mod leases;
mod lifecycle;
mod limiter;
mod person_events;
mod random_ops;
mod suppressions;
mod sync_results;
