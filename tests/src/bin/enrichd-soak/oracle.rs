//! The simulator's own record, indexed as the run goes: every detail it received by email, every
//! payload's facts by request and person, every call's status and time, and every charge. Read
//! incrementally (`calls_from`), so a long run never copies the whole record again.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use apollo_client::{Credits, DeliveryKind, EnrichFlags, RequestId};
use apollo_sim::{ChargeKind, DeliveredFacts, SimHandle};
use e2e_tests::truth::Expected;
use serde_json::Value;

/// One detail of a 200 `bulk_match` answer.
#[derive(Clone, Debug)]
pub struct Sent {
    /// When the call arrived.
    pub at: SystemTime,
    /// Its flags.
    pub flags: EnrichFlags,
    /// Its request id.
    pub request_id: Option<RequestId>,
    /// The Apollo id matched.
    pub apollo_id: Option<String>,
    /// The person object answered.
    pub answered: Option<Value>,
    /// Its phone reveal was answered `skipped`.
    pub phone_skipped: bool,
}

/// One `bulk_match` call, as the checks need it.
#[derive(Clone, Debug)]
pub struct Call {
    /// When it arrived.
    pub at: SystemTime,
    /// The status answered.
    pub status: u16,
    /// The batch its webhook URL names.
    pub batch: Option<String>,
    /// Its details' emails (answered calls only).
    pub emails: Vec<String>,
}

/// The index.
#[derive(Default)]
pub struct Oracle {
    calls_read: usize,
    payloads_read: usize,
    /// 200 answers by email.
    pub sent: HashMap<String, Vec<Sent>>,
    /// Payload facts by (request, Apollo id).
    facts: HashMap<(RequestId, String), Vec<(DeliveryKind, DeliveredFacts)>>,
    /// Apollo id → email.
    pub email_of: HashMap<String, String>,
    /// Every `bulk_match` call.
    pub calls: Vec<Call>,
    /// The emails of each answered request's matched details (all of them if none matched).
    request_emails: HashMap<RequestId, Vec<String>>,
    /// `webhook_result` polls by status.
    pub polls: BTreeMap<u16, usize>,
}

/// The batch a webhook URL names (`…/v1/webhooks/apollo/{batch}?token=…`).
pub fn batch_of(url: &str) -> Option<String> {
    url.split('?').next()?.rsplit('/').next().map(str::to_string)
}

impl Oracle {
    /// Reads what the simulator recorded since the last call.
    pub fn refresh(&mut self, sim: &SimHandle) {
        let calls = sim.calls_from(self.calls_read);
        self.calls_read += calls.len();
        for c in calls {
            if c.route.contains("webhook_result") {
                *self.polls.entry(c.status).or_default() += 1;
            }
            if !c.route.ends_with("bulk_match") {
                continue;
            }
            let emails = if c.status == 200 {
                c.received.iter().filter_map(|r| r.detail["email"].as_str().map(str::to_lowercase)).collect()
            } else {
                Vec::new()
            };
            self.calls.push(Call {
                at: c.at,
                status: c.status,
                batch: c.webhook_url.as_deref().and_then(batch_of),
                emails,
            });
            if c.status != 200 {
                continue;
            }
            if let Some(r) = c.request_id {
                // A payload's charge is the matched people's (all of the call's if none matched).
                let email = |r: &apollo_sim::ReceivedDetail| r.detail["email"].as_str().map(str::to_lowercase);
                let matched: Vec<String> =
                    c.received.iter().filter(|r| r.apollo_id.is_some()).filter_map(email).collect();
                let emails = if matched.is_empty() { c.received.iter().filter_map(email).collect() } else { matched };
                self.request_emails.insert(r, emails);
            }
            let phone_skipped =
                c.answer.as_ref().and_then(|a| a["phone_enrichment"]["status"].as_str()) == Some("skipped");
            for r in &c.received {
                let Some(email) = r.detail["email"].as_str().map(str::to_lowercase) else { continue };
                if let Some(id) = &r.apollo_id {
                    self.email_of.insert(id.clone(), email.clone());
                }
                self.sent.entry(email).or_default().push(Sent {
                    at: c.at,
                    flags: c.flags.unwrap_or_default(),
                    request_id: c.request_id,
                    apollo_id: r.apollo_id.clone(),
                    answered: r.answered.clone(),
                    phone_skipped,
                });
            }
        }
        let payloads = sim.payloads_from(self.payloads_read);
        self.payloads_read += payloads.len();
        for p in payloads {
            for f in p.facts {
                self.facts.entry((p.request_id, f.apollo_id.clone())).or_default().push((p.kind, f));
            }
        }
    }

    /// What a person of this email in a job with these flags should hold, from every 200 answer
    /// that carried the email with exactly these flags (the simulator answers a person and flag
    /// set the same way each time) and their payloads. `None` when no call carried it.
    pub fn expected(&self, email: &str, flags: EnrichFlags) -> Result<Option<Expected>, String> {
        let mut out = Expected::default();
        let mut matched: Option<bool> = None;
        for s in self.sent.get(email).into_iter().flatten().filter(|s| s.flags == flags) {
            if matched.is_some_and(|m| m != s.apollo_id.is_some()) {
                return Err(format!("{email}: matched by one call and not by another"));
            }
            matched = Some(s.apollo_id.is_some());
            let Some(id) = &s.apollo_id else { continue };
            out.add_answer(id, s.answered.as_ref().ok_or("a match without its answer")?)?;
            if s.phone_skipped {
                out.note_phone_skipped();
            }
            for (kind, f) in s.request_id.and_then(|r| self.facts.get(&(r, id.clone()))).into_iter().flatten() {
                out.add_facts(*kind, f)?;
            }
        }
        Ok(matched.map(|_| out))
    }

    /// Every charge of the simulator's ledger attributed to `key` of the people it was for, by
    /// the rule the service books by (and documents): a synchronous charge to each person matched,
    /// a payload's evenly over the people its call matched (Apollo's payload gives only its
    /// total). Returns the attribution, what no key took, and how many charges were split
    /// (each split may differ from the service's by a micro-credit of rounding).
    pub fn charges<K: std::hash::Hash + Eq>(
        &self,
        sim: &SimHandle,
        key: impl Fn(&str) -> Option<K>,
    ) -> (HashMap<K, Credits>, Credits, usize) {
        let mut out: HashMap<K, Credits> = HashMap::new();
        let mut unattributed = Credits::ZERO;
        let mut splits = 0;
        for e in sim.ledger().entries {
            let mut left = e.credits.micros();
            match e.kind {
                ChargeKind::Sync => {
                    let each = e.credits.micros() / e.people.len().max(1) as i64;
                    for k in e.people.iter().filter_map(|id| self.email_of.get(id)).filter_map(|m| key(m)) {
                        *out.entry(k).or_default() += Credits(each);
                        left -= each;
                    }
                }
                ChargeKind::Phone | ChargeKind::Waterfall => {
                    let people = self.request_emails.get(&e.request_id).map(Vec::as_slice).unwrap_or(&[]);
                    splits += 1;
                    let (total, n) = (i128::from(e.credits.micros()), people.len() as i128);
                    for (i, m) in people.iter().enumerate() {
                        // Exact shares: they add up to the charge.
                        let share = (total * (i as i128 + 1) / n - total * i as i128 / n) as i64;
                        if let Some(k) = key(m) {
                            *out.entry(k).or_default() += Credits(share);
                            left -= share;
                        }
                    }
                }
            }
            unattributed += Credits(left);
        }
        (out, unattributed, splits)
    }
}
