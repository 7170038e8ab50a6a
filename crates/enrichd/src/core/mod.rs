//! Mechanisms with no HTTP or database in them: each a set of plain, unit-tested functions.

pub mod callback_url;
pub mod csv_map;
pub mod duration;
pub mod keys;
pub mod leases;
pub mod signing;
pub mod validate;
