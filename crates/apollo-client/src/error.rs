//! Apollo's errors, classified into what the dispatcher can act on.

use std::time::Duration;

use serde_json::Value;

use crate::lenient::str_at;
use crate::rate_limit::RateLimit;

/// The message of an error body: `error_details.code`, else `error_code`, else `error`, else
/// `message`; a body that is not JSON is kept as raw text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// The machine-readable code, when one was given.
    pub code: Option<String>,
    /// The human-readable message (or the raw text).
    pub message: String,
    /// The parsed JSON body, when it was JSON.
    pub json: Option<Value>,
}

impl ErrorBody {
    /// Parses an error body.
    pub fn parse(body: &str) -> ErrorBody {
        let Ok(json) = serde_json::from_str::<Value>(body) else {
            return ErrorBody { code: None, message: body.trim().to_string(), json: None };
        };
        let details_code = json.get("error_details").and_then(|d| str_at(d, "code"));
        let code = details_code.or_else(|| str_at(&json, "error_code"));
        let message = str_at(&json, "error")
            .or_else(|| str_at(&json, "message"))
            .or_else(|| str_at(&json, "error_message"))
            .or_else(|| json.get("error_details").and_then(|d| str_at(d, "message")))
            .or_else(|| code.clone())
            .unwrap_or_else(|| body.trim().to_string());
        ErrorBody { code, message, json: Some(json) }
    }

    fn describe(&self) -> String {
        match &self.code {
            Some(c) if *c != self.message => format!("{c}: {}", self.message),
            _ => self.message.clone(),
        }
    }
}

/// Everything that can go wrong talking to Apollo.
#[derive(Debug, thiserror::Error)]
pub enum ApolloError {
    /// Refused before sending: `bulk_match` takes at most 10 details.
    #[error("bulk_match takes at most 10 details, got {count}")]
    TooManyDetails {
        /// How many were given.
        count: usize,
    },
    /// Refused before sending: `bulk_match` needs at least one detail.
    #[error("bulk_match needs at least one detail")]
    NoDetails,
    /// Refused before sending: Apollo rejects `webhook_url` together with `poll_only`.
    #[error("webhook_url and poll_only cannot be sent together")]
    WebhookWithPollOnly,
    /// 429: wait and try again; not a failed attempt.
    #[error("rate limited by Apollo: {}", .body.describe())]
    RateLimited {
        /// How long Apollo asked us to wait.
        retry_after: Option<Duration>,
        /// The rate-limit headers of the answer.
        limits: Box<RateLimit>,
        /// The error body.
        body: Box<ErrorBody>,
    },
    /// 422 `BILLING.LIMIT.CREDITS_EXHAUSTED`: pause dispatch until credits return.
    #[error("Apollo credits exhausted: {}", .body.describe())]
    CreditsExhausted {
        /// `error_details.context` (credits remaining, next billing date).
        context: Option<Value>,
        /// The error body.
        body: Box<ErrorBody>,
    },
    /// 401: the API key is wrong.
    #[error("Apollo rejected the API key (401): {}", .body.describe())]
    Unauthorized {
        /// The error body.
        body: Box<ErrorBody>,
    },
    /// 403: the key may not use this endpoint.
    #[error("Apollo API key is not allowed to use this endpoint (403): {}", .body.describe())]
    Forbidden {
        /// The error body.
        body: Box<ErrorBody>,
    },
    /// 400 / 422 / other 4xx: this request is wrong and will stay wrong.
    #[error("Apollo refused the request ({status}): {}", .body.describe())]
    InvalidRequest {
        /// HTTP status.
        status: u16,
        /// The error body.
        body: Box<ErrorBody>,
    },
    /// 5xx, timeouts, connection errors: retry with backoff.
    #[error("transient Apollo failure{}: {message}", .status.map(|s| format!(" ({s})")).unwrap_or_default())]
    Transient {
        /// HTTP status, when an answer came.
        status: Option<u16>,
        /// What happened.
        message: String,
    },
    /// A success status whose body could not be read.
    #[error("undecodable Apollo answer ({status}): {message}")]
    Undecodable {
        /// HTTP status.
        status: u16,
        /// The decoding error.
        message: String,
    },
}

/// How [`ApolloError::from_transport`] names what happened (its message starts with one).
const CONNECT_FAILED: &str = "connection failed";
const TIMEOUT: &str = "timeout";
const TRANSPORT: &str = "transport error";

impl ApolloError {
    /// Classifies a non-success answer.
    pub fn from_response(status: u16, limits: RateLimit, body: &str) -> ApolloError {
        let body = Box::new(ErrorBody::parse(body));
        match status {
            429 => ApolloError::RateLimited { retry_after: limits.retry_after, limits: Box::new(limits), body },
            401 => ApolloError::Unauthorized { body },
            403 => ApolloError::Forbidden { body },
            422 if body
                .code
                .as_deref()
                .is_some_and(|c| c.contains("CREDITS_EXHAUSTED") || c.contains("INSUFFICIENT_CREDITS")) =>
            {
                let context = body.json.as_ref().and_then(|j| j.pointer("/error_details/context")).cloned();
                ApolloError::CreditsExhausted { context, body }
            }
            408 | 500..=599 => ApolloError::Transient { status: Some(status), message: body.describe() },
            _ => ApolloError::InvalidRequest { status, body },
        }
    }

    /// Classifies a transport error (no answer, or the answer could not be read). The URL is left
    /// out of the message: its query carries our webhook token.
    pub fn from_transport(e: reqwest::Error) -> ApolloError {
        // A failed connection never reached Apollo; anything later may have.
        let kind = if e.is_connect() {
            CONNECT_FAILED
        } else if e.is_timeout() {
            TIMEOUT
        } else {
            TRANSPORT
        };
        let status = e.status().map(|s| s.as_u16());
        let e = e.without_url();
        let mut message = format!("{kind}: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        ApolloError::Transient { status, message }
    }

    /// Whether Apollo may have received, run and charged the request although no usable answer
    /// came: a timeout or transport error after connecting, a 502 or 504 (a gateway lost the
    /// answer), a success whose body could not be read. A retry of such a call may be charged
    /// twice, and its webhooks may still come.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            ApolloError::Undecodable { .. } => true,
            ApolloError::Transient { status: Some(s), .. } => matches!(s, 502 | 504) || (200..300).contains(s),
            ApolloError::Transient { status: None, message } => {
                message.starts_with(TIMEOUT) || message.starts_with(TRANSPORT)
            }
            _ => false,
        }
    }

    /// Whether dispatch as a whole must stop until an operator acts (bad key, no credits).
    pub fn blocks_dispatch(&self) -> bool {
        matches!(
            self,
            ApolloError::Unauthorized { .. } | ApolloError::Forbidden { .. } | ApolloError::CreditsExhausted { .. }
        )
    }

    /// A short name of the failure, for records and dashboards.
    pub fn kind(&self) -> &'static str {
        match self {
            ApolloError::TooManyDetails { .. } | ApolloError::NoDetails | ApolloError::WebhookWithPollOnly => {
                "not_sent"
            }
            ApolloError::RateLimited { .. } => "rate_limited",
            ApolloError::CreditsExhausted { .. } => "credits_exhausted",
            ApolloError::Unauthorized { .. } => "unauthorized",
            ApolloError::Forbidden { .. } => "forbidden",
            ApolloError::InvalidRequest { .. } => "invalid_request",
            ApolloError::Transient { status: None, .. } => "transport",
            ApolloError::Transient { .. } => "transient",
            ApolloError::Undecodable { .. } => "undecodable",
        }
    }

    /// The HTTP status Apollo answered with, when an answer came.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApolloError::TooManyDetails { .. } | ApolloError::NoDetails | ApolloError::WebhookWithPollOnly => None,
            ApolloError::RateLimited { .. } => Some(429),
            ApolloError::CreditsExhausted { .. } => Some(422),
            ApolloError::Unauthorized { .. } => Some(401),
            ApolloError::Forbidden { .. } => Some(403),
            ApolloError::InvalidRequest { status, .. } | ApolloError::Undecodable { status, .. } => Some(*status),
            ApolloError::Transient { status, .. } => *status,
        }
    }

    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ApolloError::RateLimited { .. } | ApolloError::Transient { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_that_may_have_been_charged_are_told_apart() {
        let t = |status, message: &str| ApolloError::Transient { status, message: message.into() };
        assert!(t(Some(502), "bad gateway").outcome_unknown());
        assert!(t(Some(504), "gateway timeout").outcome_unknown());
        assert!(!t(Some(500), "boom").outcome_unknown(), "a 500 is Apollo's own refusal");
        assert!(!t(Some(503), "unavailable").outcome_unknown());
        assert!(t(None, "timeout: operation timed out").outcome_unknown());
        assert!(t(None, "transport error: connection reset").outcome_unknown());
        assert!(!t(None, "connection failed: refused").outcome_unknown(), "never reached Apollo");
        assert!(!t(None, "building request: bad url").outcome_unknown());
        assert!(ApolloError::Undecodable { status: 200, message: "eof".into() }.outcome_unknown());
        let body = Box::new(ErrorBody::parse("{}"));
        assert!(!ApolloError::InvalidRequest { status: 422, body }.outcome_unknown());
    }

    fn example(name: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn examples_are_classified() {
        let none = RateLimit::default();
        match ApolloError::from_response(400, none, &example("error_400_record_limit.json")) {
            ApolloError::InvalidRequest { status: 400, body } => {
                assert_eq!(body.code.as_deref(), Some("RECORD_LIMIT_EXCEEDED"));
                assert_eq!(body.message, "You can enrich up to 10 records per request.");
            }
            other => panic!("400 misclassified: {other:?}"),
        }
        match ApolloError::from_response(401, none, &example("error_401.txt")) {
            ApolloError::Unauthorized { body } => {
                assert_eq!(body.code, None);
                assert_eq!(body.message, "Invalid API key. Please check the key you provided and try again.");
            }
            other => panic!("401 misclassified: {other:?}"),
        }
        match ApolloError::from_response(403, none, &example("error_403.json")) {
            ApolloError::Forbidden { body } => {
                assert_eq!(body.code.as_deref(), Some("API_INACCESSIBLE"));
                assert!(body.message.contains("not accessible"));
            }
            other => panic!("403 misclassified: {other:?}"),
        }
        match ApolloError::from_response(422, none, &example("error_422_credits_exhausted.json")) {
            ApolloError::CreditsExhausted { context, body } => {
                assert_eq!(body.code.as_deref(), Some("BILLING.LIMIT.CREDITS_EXHAUSTED"));
                assert_eq!(context.unwrap()["next_billing_date"], "2026-12-01");
            }
            other => panic!("422 misclassified: {other:?}"),
        }
        let limits = RateLimit { retry_after: Some(Duration::from_secs(17)), ..Default::default() };
        match ApolloError::from_response(429, limits, &example("error_429.json")) {
            ApolloError::RateLimited { retry_after, body, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(17)));
                assert_eq!(body.code.as_deref(), Some("USAGE.RATE_LIMIT.API_RATE_LIMIT_EXCEEDED"));
                assert!(body.message.contains("20 times per minute"));
            }
            other => panic!("429 misclassified: {other:?}"),
        }
        let e = ApolloError::from_response(503, none, "<html>bad gateway</html>");
        assert!(matches!(e, ApolloError::Transient { status: Some(503), .. }) && e.is_retryable());
        assert_eq!((e.kind(), e.status()), ("transient", Some(503)));
        let e = ApolloError::from_response(429, none, &example("error_429.json"));
        assert_eq!((e.kind(), e.status()), ("rate_limited", Some(429)));
        let e = ApolloError::Transient { status: None, message: "timeout: operation timed out".into() };
        assert_eq!((e.kind(), e.status()), ("transport", None));
        let e = ApolloError::from_response(422, none, r#"{"error":"details[0] is malformed"}"#);
        assert!(
            matches!(&e, ApolloError::InvalidRequest { status: 422, body } if body.message == "details[0] is malformed")
        );
        assert!(!e.is_retryable() && !e.blocks_dispatch());
    }
}
