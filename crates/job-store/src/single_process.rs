//! SQLite is the one-process store: a second process on the same database file is refused with a
//! clear message, instead of two dispatchers each believing they own Apollo's rate allowance.
//! PostgreSQL is how enrichd runs as several replicas.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;

use crate::error::{StoreError, StoreResult};

/// The database file of a `sqlite:` URL; `None` for in-memory databases and other backends.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    let in_memory = path.is_empty() || path == ":memory:" || url.contains("mode=memory");
    (!in_memory).then(|| PathBuf::from(path))
}

/// Takes an exclusive lock on `<file>.lock` beside the database file, held as long as the returned
/// file is open (the operating system drops it when the process dies, even by SIGKILL).
pub(crate) fn lock(url: &str) -> StoreResult<Option<File>> {
    let Some(db) = sqlite_path(url) else { return Ok(None) };
    let mut name = db.clone().into_os_string();
    name.push(".lock");
    let path = PathBuf::from(name);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::InUse(format!("cannot open the lock file {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Err(StoreError::InUse(format!(
            "another enrichd process is using the SQLite database {} (it holds {}); SQLite serves one \
             process: stop the other one, or use PostgreSQL (DATABASE_URL=postgres://…) to run several replicas",
            db.display(),
            path.display()
        ))),
        Err(TryLockError::Error(e)) => {
            Err(StoreError::InUse(format!("cannot lock {} for this process: {e}", path.display())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_sqlite_urls() {
        assert_eq!(sqlite_path("sqlite://enrichd.db?mode=rwc"), Some(PathBuf::from("enrichd.db")));
        assert_eq!(sqlite_path("sqlite:///tmp/x/e.db?mode=rwc"), Some(PathBuf::from("/tmp/x/e.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("sqlite://x.db?mode=memory&cache=shared"), None);
        assert_eq!(sqlite_path("postgres://u@h/db"), None);
    }
}
