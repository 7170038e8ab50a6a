//! The HTTP client: `bulk_match` and `webhook_result` polling.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::error::{ApolloError, ErrorBody};
use crate::numbers::RequestId;
use crate::rate_limit::RateLimit;
use crate::wire::{BulkMatchResponse, EnrichFlags, Flag, PersonDetail, WebhookResult};

/// Apollo's limit of details per `bulk_match` call.
pub const MAX_DETAILS: usize = 10;

/// A typed Apollo client. Cheap to clone; the API key never appears in `Debug`.
#[derive(Clone)]
pub struct ApolloClient {
    http: reqwest::Client,
    base: String,
    api_key: SecretString,
}

impl std::fmt::Debug for ApolloClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApolloClient").field("base", &self.base).field("api_key", &"[redacted]").finish()
    }
}

/// A successful `bulk_match`: the parsed answer plus what the transport said about it.
#[derive(Clone, Debug)]
pub struct BulkMatchOutcome {
    /// The parsed body.
    pub response: BulkMatchResponse,
    /// The rate-limit headers of the answer.
    pub limits: RateLimit,
    /// HTTP status (200).
    pub status: u16,
    /// How long the call took.
    pub elapsed: Duration,
}

/// The outcome of polling `webhook_result`.
#[derive(Clone, Debug)]
pub enum WebhookResultPoll {
    /// 200: the result (its `webhook_status` may still be `in_progress`).
    Ready(WebhookResult),
    /// 404 `result_pending`: poll again after the given delay.
    Pending {
        /// `retry_after_seconds`, when given.
        retry_after: Option<Duration>,
    },
    /// 404 `request_id_unknown`, 410 `request_id_expired`, 400 `invalid_request_id`: never coming.
    Gone {
        /// The error code Apollo gave.
        code: String,
    },
}

impl ApolloClient {
    /// A client for `base_url` (`https://api.apollo.io`, or a simulator) with a 30 s timeout.
    pub fn new(base_url: &str, api_key: SecretString) -> Result<Self, ApolloError> {
        Self::with_timeout(base_url, api_key, Duration::from_secs(30))
    }

    /// A client with a per-request timeout.
    pub fn with_timeout(base_url: &str, api_key: SecretString, timeout: Duration) -> Result<Self, ApolloError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(50))
            // A proxy from the environment must not see the key or reroute calls to a local simulator.
            .no_proxy()
            .build()
            .map_err(|e| ApolloError::Transient { status: None, message: format!("building HTTP client: {e}") })?;
        Ok(ApolloClient { http, base: base_url.trim_end_matches('/').to_string(), api_key })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Builds the `bulk_match` request without sending it (checks the details count first).
    pub fn build_bulk_match(
        &self,
        details: &[PersonDetail],
        flags: &EnrichFlags,
        webhook_url: Option<&str>,
        poll_only: bool,
    ) -> Result<reqwest::Request, ApolloError> {
        if details.is_empty() {
            return Err(ApolloError::NoDetails);
        }
        if details.len() > MAX_DETAILS {
            return Err(ApolloError::TooManyDetails { count: details.len() });
        }
        if poll_only && webhook_url.is_some() {
            return Err(ApolloError::WebhookWithPollOnly);
        }
        let b = |v: bool| if v { "true" } else { "false" };
        let mut query: Vec<(&str, &str)> = Flag::ALL.iter().map(|f| (f.name(), b(flags.get(*f)))).collect();
        if let Some(url) = webhook_url {
            query.push(("webhook_url", url));
        }
        if poll_only {
            query.push(("poll_only", "true"));
        }
        self.authed(self.http.post(format!("{}/api/v1/people/bulk_match", self.base)))
            .query(&query)
            .json(&serde_json::json!({ "details": details }))
            .build()
            .map_err(|e| ApolloError::Transient { status: None, message: format!("building request: {e}") })
    }

    /// One `bulk_match` call of at most 10 details.
    pub async fn bulk_match(
        &self,
        details: &[PersonDetail],
        flags: &EnrichFlags,
        webhook_url: Option<&str>,
        poll_only: bool,
    ) -> Result<BulkMatchOutcome, ApolloError> {
        let request = self.build_bulk_match(details, flags, webhook_url, poll_only)?;
        let started = Instant::now();
        let (status, limits, body) = self.send(request).await?;
        if !status.is_success() {
            return Err(ApolloError::from_response(status.as_u16(), limits, &body));
        }
        let undecodable = |message: String| ApolloError::Undecodable { status: status.as_u16(), message };
        let json: Value = serde_json::from_str(&body).map_err(|e| undecodable(e.to_string()))?;
        let response = BulkMatchResponse::from_value(json).map_err(|e| undecodable(e.to_string()))?;
        Ok(BulkMatchOutcome { response, limits, status: status.as_u16(), elapsed: started.elapsed() })
    }

    /// Polls `GET /api/v1/webhook_result/{id}` (free): a top-level `request_id` or a phone job id.
    pub async fn webhook_result(&self, id: &str) -> Result<WebhookResultPoll, ApolloError> {
        let request = self
            .authed(self.http.get(format!("{}/api/v1/webhook_result/{}", self.base, id.trim())))
            .build()
            .map_err(|e| ApolloError::Transient { status: None, message: format!("building request: {e}") })?;
        let (status, limits, body) = self.send(request).await?;
        if status.is_success() {
            let json: Value = serde_json::from_str(&body)
                .map_err(|e| ApolloError::Undecodable { status: status.as_u16(), message: e.to_string() })?;
            return Ok(WebhookResultPoll::Ready(WebhookResult::from_value(json)));
        }
        let parsed = ErrorBody::parse(&body);
        let code = parsed.code.clone().unwrap_or_default();
        match (status.as_u16(), code.as_str()) {
            (404, "result_pending") => Ok(WebhookResultPoll::Pending {
                retry_after: parsed
                    .json
                    .as_ref()
                    .and_then(|j| j.get("retry_after_seconds"))
                    .and_then(Value::as_f64)
                    .and_then(crate::rate_limit::wait_from_secs),
            }),
            (404, "request_id_unknown") | (410, _) | (400, "invalid_request_id") => {
                Ok(WebhookResultPoll::Gone { code })
            }
            (s, _) => Err(ApolloError::from_response(s, limits, &body)),
        }
    }

    /// Convenience for polling by a numeric `request_id`.
    pub async fn webhook_result_for(&self, id: RequestId) -> Result<WebhookResultPoll, ApolloError> {
        self.webhook_result(&id.to_string()).await
    }

    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        rb.header("x-api-key", self.api_key.expose_secret())
            .header("accept", "application/json")
            .header("cache-control", "no-cache")
    }

    async fn send(&self, request: reqwest::Request) -> Result<(StatusCode, RateLimit, String), ApolloError> {
        let endpoint = endpoint_of(request.url().path());
        let started = Instant::now();
        let answer = self.exchange(request).await;
        let outcome = match &answer {
            Ok((status, ..)) if status.is_success() => "ok",
            Ok((status, ..)) if status.as_u16() == 429 => "rate_limited",
            Ok((status, ..)) if status.is_client_error() => "client_error",
            Ok(_) => "server_error",
            Err(ApolloError::Transient { message, .. }) if message.starts_with("timeout") => "timeout",
            Err(_) => "transport_error",
        };
        metrics::counter!("enrichd_apollo_requests_total", "endpoint" => endpoint, "outcome" => outcome).increment(1);
        metrics::histogram!("enrichd_apollo_request_duration_seconds", "endpoint" => endpoint)
            .record(started.elapsed().as_secs_f64());
        if let Ok((_, limits, _)) = &answer {
            for (window, w) in [("minute", &limits.minute), ("hour", &limits.hour), ("day", &limits.day)] {
                if let Some(left) = w.left {
                    metrics::gauge!("enrichd_apollo_rate_limit_remaining", "window" => window).set(left as f64);
                }
            }
        }
        answer
    }

    async fn exchange(&self, request: reqwest::Request) -> Result<(StatusCode, RateLimit, String), ApolloError> {
        let response = self.http.execute(request).await.map_err(ApolloError::from_transport)?;
        let status = response.status();
        let limits = RateLimit::from_headers(response.headers());
        let body = response.text().await.map_err(ApolloError::from_transport)?;
        Ok((status, limits, body))
    }
}

/// The metric label of an Apollo path (never the id inside it).
fn endpoint_of(path: &str) -> &'static str {
    if path.ends_with("/bulk_match") {
        "bulk_match"
    } else if path.contains("/webhook_result/") {
        "webhook_result"
    } else {
        "other"
    }
}
