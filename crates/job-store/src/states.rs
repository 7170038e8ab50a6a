//! The state names stored in the database (as text, the same on SQLite and PostgreSQL).

use std::fmt;
use std::str::FromStr;

use crate::StoreError;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
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

        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(StoreError::Corrupt(format!("unknown {} {other:?}", stringify!($name)))),
                }
            }
        }
    };
}

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
    }
);

impl PersonState {
    /// Whether the person still needs work (queued or in flight).
    pub fn is_open(self) -> bool {
        matches!(self, PersonState::Queued | PersonState::Submitted | PersonState::AwaitingAsync)
    }
}

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
    }
);

string_enum!(
    /// What a callback announces (its `type`).
    CallbackEvent {
        /// The job finished: the first event of a job.
        JobCompleted => "job.completed",
        /// The finished job changed later (a late asynchronous part was merged).
        JobUpdated => "job.updated",
    }
);
