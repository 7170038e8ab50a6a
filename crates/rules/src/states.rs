//! The states of jobs, people, batches, deliveries and callbacks, each with its stored name. With
//! the `sea-orm` feature they are the store's typed columns (`DeriveActiveEnum`), stored as text so
//! that SQLite and PostgreSQL hold the same names and raw SQL can name them with `as_str()`.

use std::fmt;

/// A stored or requested name that is no state of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnknownState(pub String);

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "sea-orm", derive(sea_orm::EnumIter, sea_orm::DeriveActiveEnum))]
        #[serde(rename_all = "snake_case")]
        #[cfg_attr(feature = "sea-orm", sea_orm(rs_type = "String", db_type = "Text"))]
        pub enum $name {
            $($(#[$vmeta])* #[cfg_attr(feature = "sea-orm", sea_orm(string_value = $text))] $variant,)+
        }

        impl $name {
            /// Every state, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownState(format!("unknown {} {other:?}", stringify!($name)))),
                }
            }
        }
    };
}

string_enum!(
    /// What a waterfall vendor was asked to find: the trail's `emails` or `phone_numbers` steps.
    VendorKind {
        /// An email address (`waterfall.emails`).
        Email => "email",
        /// A phone number (`waterfall.phone_numbers`).
        Phone => "phone",
    }
);

string_enum!(
    /// The state of a job.
    JobState {
        /// Accepted, nothing dispatched yet.
        Queued => "queued",
        /// At least one batch was claimed.
        Running => "running",
        /// Dispatch is blocked (credits exhausted, key rejected); the reason is on the job.
        Paused => "paused",
        /// Every person reached a terminal state.
        Completed => "completed",
        /// Every person that could be sent failed.
        Failed => "failed",
        /// Cancelled by the client (in-flight people still finished).
        Cancelled => "cancelled",
    }
);

string_enum!(
    /// The state of one input person.
    PersonState {
        /// Waiting to be claimed into a batch.
        Queued => "queued",
        /// In a batch being sent (or waiting for a retry of it).
        Submitted => "submitted",
        /// Matched; asynchronous parts (phone, waterfall) still expected.
        AwaitingAsync => "awaiting_async",
        /// Matched and every expected part arrived.
        Complete => "complete",
        /// Matched, but some expected parts never arrived before the deadline.
        Partial => "partial",
        /// Apollo found no match.
        NotFound => "not_found",
        /// No usable identifier: never sent, no credits.
        Invalid => "invalid",
        /// Gave up after bounded retries; the reason is kept.
        Failed => "failed",
        /// The job was cancelled before the person was sent.
        Cancelled => "cancelled",
        /// Never sent: the job's credit budget could not cover this person's worst-case cost.
        SkippedBudget => "skipped_budget",
        /// Never sent: an identifier of the person is on the do-not-enrich list (no credits).
        Suppressed => "suppressed",
    }
);

string_enum!(
    /// The state of one batch (one Apollo call).
    BatchState {
        /// Formed but not yet claimed (unused by the dispatcher, which forms batches when claiming).
        Queued => "queued",
        /// Claimed under a lease; the HTTP call may be in progress. Committed before the call.
        Submitting => "submitting",
        /// The synchronous answer is recorded.
        Submitted => "submitted",
        /// Waiting for `next_attempt_at` before being claimed again.
        RetryWait => "retry_wait",
        /// Given up; its people failed.
        Failed => "failed",
    }
);

string_enum!(
    /// What a do-not-enrich entry identifies ([`crate::suppression`]).
    SuppressionKind {
        /// One email address.
        Email => "email",
        /// One LinkedIn profile URL.
        LinkedinUrl => "linkedin_url",
        /// One Apollo person id.
        ApolloId => "apollo_id",
        /// A whole domain: everyone whose `domain` or email's domain it is.
        Domain => "domain",
    }
);

string_enum!(
    /// The processing state of an inbound (Apollo webhook) delivery.
    DeliveryState {
        /// Stored, not yet merged.
        Pending => "pending",
        /// Merged into the people of its batch.
        Processed => "processed",
        /// Could not be used; the error is kept.
        Failed => "failed",
    }
);

string_enum!(
    /// The state of a job's final callback.
    CallbackState {
        /// To be sent (or retried) at `next_attempt_at`.
        Pending => "pending",
        /// The receiver answered 2xx.
        Delivered => "delivered",
        /// The retry schedule ran out.
        Exhausted => "exhausted",
        /// Not to be sent.
        Cancelled => "cancelled",
        /// Kept for the job's event stream only: the job has no callback URL.
        Recorded => "recorded",
    }
);

string_enum!(
    /// What a callback announces (its `type`).
    CallbackEvent {
        /// The job finished: the first event of a job.
        JobCompleted => "job.completed",
        /// The finished job changed later (a late asynchronous part was merged).
        JobUpdated => "job.updated",
        /// People of the job reached a final state (opt-in, batched).
        PersonCompleted => "person.completed",
        /// People already announced as completed changed (a late part; opt-in, batched).
        PersonUpdated => "person.updated",
    }
);

impl PersonState {
    /// Whether the person reached a final state (nothing more is sent for it; late parts may
    /// still change a `partial` one).
    pub fn is_final(self) -> bool {
        !matches!(self, PersonState::Queued | PersonState::Submitted | PersonState::AwaitingAsync)
    }
}

impl CallbackEvent {
    /// Whether the event announces people (batched, opt-in) rather than the job.
    pub fn is_person_event(self) -> bool {
        matches!(self, CallbackEvent::PersonCompleted | CallbackEvent::PersonUpdated)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    /// The stored name reads back as the same state; other names are refused.
    fn round_trips<E: FromStr<Err = UnknownState> + Copy + PartialEq + fmt::Debug>(
        all: &[E],
        name: fn(E) -> &'static str,
    ) {
        for &s in all {
            assert_eq!(name(s).parse::<E>().unwrap(), s);
        }
        assert!("no_such_state".parse::<E>().is_err());
    }

    #[test]
    fn stored_names_round_trip() {
        round_trips(JobState::ALL, JobState::as_str);
        round_trips(PersonState::ALL, PersonState::as_str);
        round_trips(BatchState::ALL, BatchState::as_str);
        round_trips(DeliveryState::ALL, DeliveryState::as_str);
        round_trips(CallbackState::ALL, CallbackState::as_str);
        round_trips(CallbackEvent::ALL, CallbackEvent::as_str);
        round_trips(SuppressionKind::ALL, SuppressionKind::as_str);
        assert_eq!(CallbackEvent::JobCompleted.as_str(), "job.completed");
        // Names from a request (the dashboard's filters) parse the same way; others are refused.
        assert_eq!("awaiting_async".parse::<PersonState>().unwrap(), PersonState::AwaitingAsync);
        assert!("awaiting".parse::<PersonState>().is_err());
    }

    /// The column value is the name raw SQL uses, and reading it back gives the same state.
    #[cfg(feature = "sea-orm")]
    #[test]
    fn column_values_are_the_stored_names() {
        use sea_orm::ActiveEnum;
        fn check<E: ActiveEnum<Value = String> + Copy + PartialEq + fmt::Debug>(
            all: &[E],
            name: fn(E) -> &'static str,
        ) {
            for &s in all {
                assert_eq!(s.to_value(), name(s), "{s:?}");
                assert_eq!(E::try_from_value(&name(s).to_owned()).unwrap(), s);
            }
            assert!(E::try_from_value(&"no_such_state".to_owned()).is_err());
        }
        check(JobState::ALL, JobState::as_str);
        check(PersonState::ALL, PersonState::as_str);
        check(BatchState::ALL, BatchState::as_str);
        check(DeliveryState::ALL, DeliveryState::as_str);
        check(CallbackState::ALL, CallbackState::as_str);
        check(CallbackEvent::ALL, CallbackEvent::as_str);
        check(SuppressionKind::ALL, SuppressionKind::as_str);
    }
}
