//! A throwaway PostgreSQL cluster of a test's own, on a free port, so that stopping or restarting
//! it disturbs no other test. Needs the server binaries under `/usr/lib/postgresql` and the
//! `postgres` system user (`scripts/ensure-postgres.sh` installs both).

use std::process::Command;

/// The cluster; stopped and deleted when dropped.
pub struct Cluster {
    bin: String,
    data: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Cluster {
    fn pg_ctl(&self, args: &str) -> bool {
        let cmd = format!("{}/pg_ctl -D {} {args}", self.bin, self.data);
        Command::new("su").args(["postgres", "-c", &cmd]).status().map(|s| s.success()).unwrap_or(false)
    }

    /// Creates and starts a new cluster (trust authentication, fsync off).
    pub fn create() -> Cluster {
        let bin = String::from_utf8(
            Command::new("sh")
                .args(["-c", "ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1"])
                .output()
                .expect("find PostgreSQL")
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string();
        assert!(!bin.is_empty(), "no PostgreSQL server binaries under /usr/lib/postgresql");
        let dir = format!("/tmp/enrichd-cluster-{}", uuid::Uuid::new_v4().simple());
        let port = crate::process::free_port();
        assert!(
            Command::new("install").args(["-d", "-o", "postgres", "-g", "postgres", &dir]).status().unwrap().success()
        );
        let data = format!("{dir}/data");
        let init = format!("{bin}/initdb -D {data} -U postgres --auth=trust -E UTF8 >{dir}/initdb.log 2>&1");
        assert!(Command::new("su").args(["postgres", "-c", &init]).status().unwrap().success(), "initdb failed");
        let c = Cluster { bin, data, port };
        c.start();
        c
    }

    /// The admin URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) {
        let args = format!(
            "-o '-p {} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200' -l {}/../server.log -w start",
            self.port, self.data
        );
        assert!(self.pg_ctl(&args), "PostgreSQL did not start");
    }

    /// Stops the server at once (`immediate`: as a crash of the database host).
    pub fn stop(&self) {
        assert!(self.pg_ctl("-m immediate -w stop"), "PostgreSQL did not stop");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl("-m immediate -w stop");
        let _ = std::fs::remove_dir_all(std::path::Path::new(&self.data).parent().unwrap());
    }
}
