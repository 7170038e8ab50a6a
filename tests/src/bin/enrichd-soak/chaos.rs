//! The timetable's chaos, done to the running stand: deploys, crashes, the database restarting,
//! the callback receiver away, and Apollo failing, storming, pausing and changing how it counts.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use apollo_client::Credits;
use e2e_tests::cluster::Cluster;
use e2e_tests::stand::Stand;
use enrichd::core::signing::SigningSecret;
use enrichd::demo::receiver::CallbackReceiver;
use tokio::sync::Mutex;

use crate::book::Shared;
use crate::plan::{Args, Chaos, LIMIT_WAYS, PER_MINUTE, limit_way, timetable};

/// What chaos acts on.
pub struct World {
    /// The replicas, the simulator, the balancer.
    pub stand: Arc<Mutex<Stand>>,
    /// The throwaway PostgreSQL cluster (none on SQLite).
    pub cluster: Option<Arc<Cluster>>,
    /// Receivers started again after the first one was stopped (callbacks land in any of them).
    pub receivers: Arc<Mutex<Vec<CallbackReceiver>>>,
    /// The receivers' signing secret.
    pub secret: SigningSecret,
    /// The book.
    pub shared: Shared,
}

/// Runs the timetable from `start` over the run.
pub async fn run(world: Arc<World>, args: Args, start: Instant) {
    for (at, chaos) in timetable(&args) {
        tokio::time::sleep_until((start + args.run().mul_f64(at)).into()).await;
        let w = world.clone();
        // Faults with a duration run on their own, so the timetable keeps its times.
        tokio::spawn(async move { act(&w, chaos).await });
    }
}

/// Notes a window in which Apollo refuses calls on purpose (their 429s and 422s are not the
/// service's), from now for `d` plus the time the service needs to notice the end.
fn window(world: &World, d: Duration, what: &'static str) {
    let now = SystemTime::now();
    world.shared.book().windows.push((now, now + d + Duration::from_secs(5), what));
}

async fn act(world: &World, chaos: Chaos) {
    let shared = &world.shared;
    match chaos {
        Chaos::RollingRestart => {
            let mut stand = world.stand.lock().await;
            let n = stand.services.len();
            // Replica 0 stays up (its memory is measured over the whole run) unless it is the only one.
            for i in (if n > 1 { 1 } else { 0 })..n {
                shared.note(format!("SIGTERM replica {i} (deploy)"));
                let (status, took) = stand.services[i].terminate(Duration::from_secs(60)).await;
                shared
                    .note(format!("replica {i} exited {status} after {:.2} s; starting it again", took.as_secs_f64()));
                shared.book().shutdowns.push((took.as_secs_f64(), status.success()));
                stand.services[i].start().await;
            }
        }
        Chaos::Kill(i) => {
            let mut stand = world.stand.lock().await;
            let i = i.min(stand.services.len() - 1);
            shared.note(format!("SIGKILL replica {i}"));
            shared.book().kills.push(SystemTime::now());
            stand.services[i].kill().await;
            drop(stand);
            tokio::time::sleep(Duration::from_secs(3)).await;
            world.stand.lock().await.services[i].start().await;
            shared.note(format!("replica {i} started again"));
        }
        Chaos::DatabaseDown(d) => {
            let Some(cluster) = &world.cluster else { return };
            shared.note(format!("PostgreSQL stopped (immediate) for {} s", d.as_secs()));
            cluster.stop();
            tokio::time::sleep(d).await;
            cluster.start();
            shared.note("PostgreSQL started again".into());
        }
        Chaos::ReceiverDown(d) => {
            let stand = world.stand.lock().await;
            let url = stand.receiver.url().to_string();
            let port: u16 =
                url.rsplit(':').next().and_then(|p| p.split('/').next()).and_then(|p| p.parse().ok()).expect("port");
            let mut receivers = world.receivers.lock().await;
            match receivers.last() {
                Some(r) => r.stop().await,
                None => stand.receiver.stop().await,
            }
            drop(stand);
            shared.note(format!("callback receiver down for {} s", d.as_secs()));
            tokio::time::sleep(d).await;
            let again = CallbackReceiver::start_on(port, world.secret.clone()).await.expect("receiver again");
            receivers.push(again);
            shared.note("callback receiver up again".into());
        }
        Chaos::ServerErrors(p, d) => {
            let sim = world.stand.lock().await.sim.clone();
            shared.note(format!("Apollo answers 5xx to {:.0} % of calls for {} s", p * 100.0, d.as_secs()));
            let before = sim.config().fault_5xx;
            sim.update_config(|c| c.fault_5xx = p);
            tokio::time::sleep(d).await;
            sim.update_config(|c| c.fault_5xx = before);
            shared.note("Apollo's 5xx burst over".into());
        }
        Chaos::RateStorm(limit, d) => {
            let sim = world.stand.lock().await.sim.clone();
            shared.note(format!("429 storm: Apollo cuts the key to {limit} calls a minute for {} s", d.as_secs()));
            window(world, d, "rate storm");
            sim.update_config(|c| c.minute_limit = Some(limit));
            tokio::time::sleep(d).await;
            sim.update_config(|c| c.minute_limit = Some(PER_MINUTE));
            shared.note("429 storm over".into());
        }
        Chaos::CreditsOut(d) => {
            let sim = world.stand.lock().await.sim.clone();
            shared.note(format!("Apollo's credits exhausted for {} s", d.as_secs()));
            window(world, d, "credits exhausted");
            sim.update_config(|c| c.credit_balance = Some(Credits::ZERO));
            tokio::time::sleep(d).await;
            sim.update_config(|c| c.credit_balance = None);
            shared.note("Apollo's credits back".into());
        }
        Chaos::LateWebhooks(ms, d) => {
            let sim = world.stand.lock().await.sim.clone();
            shared.note(format!("Apollo's deliveries {} s late for {} s", ms / 1000, d.as_secs()));
            let before = sim.config().delivery_delay_ms;
            sim.update_config(|c| c.delivery_delay_ms = ms);
            tokio::time::sleep(d).await;
            sim.update_config(|c| c.delivery_delay_ms = before);
            shared.note("Apollo's deliveries on time again".into());
        }
        Chaos::LimitWay(i) => {
            let sim = world.stand.lock().await.sim.clone();
            shared.note(format!("Apollo now counts its limit with {}", LIMIT_WAYS[i]));
            sim.update_config(|c| limit_way(c, i));
        }
    }
}
