//! The real `enrichd` binary as a child process: started, SIGKILLed, restarted.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::Api;

/// A free port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `enrichd serve` process, its environment, and its log file.
pub struct Service {
    /// The binary.
    pub bin: PathBuf,
    /// Its whole environment (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go (appended across restarts).
    pub log: PathBuf,
    /// The process, while running.
    pub child: Option<Child>,
    /// A client of its API.
    pub api: Api,
}

impl Service {
    /// Starts the process and waits until `/healthz` answers.
    pub async fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let child = Command::new(&self.bin)
            .arg("serve")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("start enrichd");
        self.child = Some(child);
        let started = Instant::now();
        while self.api.http.get(format!("{}/healthz", self.api.base)).send().await.is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("enrichd exited with {status}; see {}", self.log.display());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "enrichd did not come up; see {}", self.log.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM (as a deploy does) without waiting.
    pub fn signal_term(&self) {
        let pid = self.child.as_ref().and_then(|c| c.id()).expect("enrichd is running");
        let sent = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
        assert!(sent.success(), "kill -TERM {pid}");
    }

    /// SIGTERM, then waits up to `limit` for the process to exit: its exit status and how long
    /// it took. Panics if it is still running then.
    pub async fn terminate(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        self.signal_term();
        let mut child = self.child.take().expect("enrichd is running");
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => (status.expect("wait for enrichd"), started.elapsed()),
            Err(_) => {
                let _ = child.kill().await;
                panic!("enrichd still running {limit:?} after SIGTERM; see {}", self.log.display());
            }
        }
    }

    /// SIGKILL: no shutdown code runs, as in a crash.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("SIGKILL");
        }
    }
}
