//! Fault injection: the random draws, all from the simulator's seeded generator.

use crate::config::SimConfig;

/// True with probability `p`. Probabilities of 0 and 1 draw nothing, so switching a fault fully
/// on or off does not shift the random sequence of the other choices.
pub fn chance(rng: &mut fastrand::Rng, p: f64) -> bool {
    if p <= 0.0 {
        false
    } else if p >= 1.0 {
        true
    } else {
        rng.f64() < p
    }
}

/// The faults picked for one asynchronous delivery when its request is accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryFaults {
    /// Never POSTed; only pollable.
    pub drop: bool,
    /// POSTed before the synchronous answer is returned.
    pub early: bool,
    /// POSTed twice.
    pub duplicate: bool,
    /// Held back until a later delivery of another request has gone out.
    pub reorder: bool,
}

impl DeliveryFaults {
    /// Draws the delivery faults; nothing applies to poll-only requests, which POST nothing.
    pub fn draw(rng: &mut fastrand::Rng, c: &SimConfig, poll_only: bool) -> Self {
        if poll_only {
            return DeliveryFaults::default();
        }
        let drop = chance(rng, c.fault_drop);
        DeliveryFaults {
            drop,
            early: !drop && chance(rng, c.fault_early),
            duplicate: !drop && chance(rng, c.fault_duplicate),
            reorder: !drop && chance(rng, c.fault_reorder),
        }
    }
}

/// The status of a `bulk_match` answer hit by the 5xx fault, if it is.
pub fn server_error(rng: &mut fastrand::Rng, c: &SimConfig) -> Option<u16> {
    chance(rng, c.fault_5xx).then(|| [500, 502, 503][rng.usize(..3)])
}

/// Content type and body of a 5xx answer, in the shapes such failures take in front of an API:
/// JSON from the application, HTML from a gateway, plain text from a load balancer.
pub fn server_error_body(status: u16) -> (&'static str, String) {
    match status {
        500 => ("application/json", r#"{"error":"Internal Server Error","status":500}"#.to_string()),
        502 => (
            "text/html",
            "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"
                .to_string(),
        ),
        _ => ("text/plain", "Service Unavailable: back-end server is at capacity".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certain_and_impossible_faults_draw_nothing() {
        let mut a = fastrand::Rng::with_seed(7);
        let mut b = fastrand::Rng::with_seed(7);
        assert!(chance(&mut a, 1.0) && !chance(&mut a, 0.0));
        assert_eq!(a.u64(..), b.u64(..));
    }

    #[test]
    fn draws_are_reproducible_and_respect_poll_only() {
        let c = SimConfig { fault_drop: 0.5, fault_duplicate: 0.5, fault_5xx: 1.0, ..SimConfig::default() };
        let run = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..50).map(|_| DeliveryFaults::draw(&mut rng, &c, false)).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert!(run(3).iter().any(|f| f.drop) && run(3).iter().any(|f| f.duplicate));
        assert!(run(3).iter().all(|f| !(f.drop && f.duplicate)));
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(DeliveryFaults::draw(&mut rng, &c, true), DeliveryFaults::default());
        assert!(matches!(server_error(&mut rng, &c), Some(500 | 502 | 503)));
    }
}
