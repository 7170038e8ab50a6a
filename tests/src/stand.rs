//! A stand of real processes: `enrichd serve` replicas on one database, against the simulator,
//! with a receiver of signed callbacks. One replica is its own public address; several share a
//! small load balancer's, as a deployment behind one does.

use std::path::PathBuf;

use apollo_sim::{SimConfig, SimHandle};
use enrichd::core::signing::SigningSecret;
use enrichd::demo::receiver::CallbackReceiver;

use crate::process::{Service, free_port};
use crate::proxy::Proxy;
use crate::{Api, Backend, CLIENT_KEY, TestDb, enrichd_binary};

/// What a stand runs.
pub struct StandSpec<'a> {
    /// Names the client key (`ENRICHD_API_KEYS`) and the folder of the logs.
    pub name: &'a str,
    /// The database every replica shares.
    pub backend: Backend,
    /// How many `enrichd` processes.
    pub replicas: usize,
    /// The simulator; its `api_key` is the replicas' Apollo key.
    pub sim: SimConfig,
    /// Settings beyond the ones every stand has (database, Apollo, public address, client key,
    /// signing secret, callbacks to loopback over plain HTTP).
    pub env: &'a [(&'a str, &'a str)],
    /// Settings of replica `i` alone (a clock offset, say).
    pub replica_env: &'a dyn Fn(usize) -> Vec<(String, String)>,
}

/// The processes of a running stand.
pub struct Stand {
    /// The shared database.
    pub db: TestDb,
    /// The simulator, whose records are the judge.
    pub sim: SimHandle,
    /// Where callbacks go.
    pub receiver: CallbackReceiver,
    /// The balancer in front of several replicas.
    pub proxy: Option<Proxy>,
    /// The replicas, started.
    pub services: Vec<Service>,
    /// The signing secret as configured (`whsec_…`), for tests that look for it in logs.
    pub signing_text: String,
    dir: PathBuf,
}

impl Stand {
    /// Starts the simulator, the receiver, the balancer (several replicas) and every replica, the
    /// replicas at the same moment (their migrations run once, under the database's lock).
    pub async fn start(spec: StandSpec<'_>) -> Stand {
        enrichd::startup::install_tls();
        let bin = enrichd_binary();
        let db = TestDb::create(spec.backend).await.unwrap();
        let apollo_key = spec.sim.api_key.clone();
        let sim = apollo_sim::spawn(spec.sim).await.unwrap();
        let (signer, signing_text) = SigningSecret::generate();
        let receiver = CallbackReceiver::start(signer).await.unwrap();
        let ports: Vec<u16> = (0..spec.replicas).map(|_| free_port()).collect();
        let urls: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
        let proxy = if spec.replicas > 1 { Some(Proxy::start(urls.clone()).await.unwrap()) } else { None };
        let base = proxy.as_ref().map_or(urls[0].clone(), |p| p.url.clone());
        let dir = std::env::temp_dir().join(format!("enrichd-{}-{}", spec.name, uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let shared: Vec<(String, String)> = [
            ("DATABASE_URL", db.url.as_str()),
            ("APOLLO_API_KEY", &apollo_key),
            ("APOLLO_BASE_URL", sim.url()),
            ("PUBLIC_BASE_URL", &base),
            ("ENRICHD_API_KEYS", &format!("{}={CLIENT_KEY}", spec.name)),
            ("CALLBACK_SIGNING_SECRET", &signing_text),
            ("CALLBACK_ALLOW_HTTP", "true"),
            ("CALLBACK_ALLOW_HOSTS", "127.0.0.1"),
        ]
        .into_iter()
        .chain(spec.env.iter().copied())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut set = tokio::task::JoinSet::new();
        for (i, (port, url)) in ports.iter().zip(&urls).enumerate() {
            let mut env = shared.clone();
            env.push(("BIND".into(), format!("127.0.0.1:{port}")));
            env.extend((spec.replica_env)(i));
            let log = dir.join(format!("enrichd-{i}.log"));
            let mut service = Service { bin: bin.clone(), env, log, child: None, api: Api::new(url.clone()) };
            set.spawn(async move {
                service.start().await;
                (i, service)
            });
        }
        let mut services = set.join_all().await;
        services.sort_by_key(|(i, _)| *i);
        let services = services.into_iter().map(|(_, s)| s).collect();
        Stand { db, sim, receiver, proxy, services, signing_text, dir }
    }

    /// The API at the stand's public address (the balancer's, or the one replica's).
    pub fn api(&self) -> Api {
        Api::new(self.proxy.as_ref().map_or_else(|| self.services[0].api.base.clone(), |p| p.url.clone()))
    }

    /// What replica `i` has logged so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.services[i].log).unwrap_or_default()
    }

    /// Kills every replica and stops the rest; drops the database and the logs.
    pub async fn finish(mut self) {
        self.shut(false).await;
    }

    /// Where the replicas' logs are.
    pub fn log_dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Kills every replica and stops the rest; drops the database, and the logs unless `keep_logs`.
    pub async fn shut(&mut self, keep_logs: bool) {
        for s in &mut self.services {
            s.kill().await;
        }
        if let Some(p) = self.proxy.take() {
            p.stop().await;
        }
        self.receiver.stop().await;
        self.sim.stop().await;
        self.db.drop_db().await;
        if !keep_logs {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// No setting of a replica's own.
pub fn same_for_all(_: usize) -> Vec<(String, String)> {
    Vec::new()
}
