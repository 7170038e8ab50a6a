//! The HTTP API from the client's side, in the contract's types.

use reqwest::{Method, RequestBuilder, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use crate::cli::Connection;
use crate::models::{
    ErrorBody, Estimate, Job, JobPage, JobRequest, MAX_PAGE, PersonPage, RetryRequest, Suppression, SuppressionAdded,
    SuppressionIdentifier, SuppressionImport, SuppressionPage, SuppressionRemoved, SuppressionScope,
};

/// What a call to the service can end with besides success.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer, or an answer that is not the contract's shape.
    #[error("calling the service: {0}")]
    Transport(#[from] reqwest::Error),
    /// The service refused, with its error body.
    #[error("the service answered {status}: {message}{}", details(.body))]
    Refused {
        /// HTTP status.
        status: u16,
        /// The error message.
        message: String,
        /// The whole error body.
        body: Box<Option<ErrorBody>>,
    },
}

fn details(body: &Option<ErrorBody>) -> String {
    let problems = body.as_ref().and_then(|b| b.error.details.as_ref());
    problems.map(|ps| ps.iter().map(|p| format!("\n  {}: {}", p.field, p.message)).collect()).unwrap_or_default()
}

/// A client of one service with one key.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    key: SecretString,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for the connection's URL and key.
    pub fn new(conn: &Connection) -> Result<ApiClient, ClientError> {
        let http = reqwest::Client::builder().user_agent(concat!("enrichd-cli/", env!("CARGO_PKG_VERSION"))).build()?;
        Ok(ApiClient { base: conn.url.trim_end_matches('/').to_string(), key: conn.key.clone(), http })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(self.key.expose_secret())
    }

    async fn read<T: DeserializeOwned>(resp: Response) -> Result<T, ClientError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp.json().await?);
        }
        let text = resp.text().await?;
        let body: Option<ErrorBody> = serde_json::from_str(&text).ok();
        let message = body.as_ref().map(|b| b.error.message.clone()).unwrap_or(text);
        Err(ClientError::Refused { status: status.as_u16(), message, body: Box::new(body) })
    }

    /// `POST /v1/jobs`.
    pub async fn submit(&self, job: &JobRequest, idempotency_key: Option<&str>) -> Result<Job, ClientError> {
        let mut req = self.request(Method::POST, "/v1/jobs").json(job);
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        Self::read(req.send().await?).await
    }

    /// `POST /v1/jobs` with `dry_run`: the estimate, nothing stored.
    pub async fn estimate(&self, job: &JobRequest) -> Result<Estimate, ClientError> {
        Self::read(self.request(Method::POST, "/v1/jobs").json(job).send().await?).await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<Job, ClientError> {
        Self::read(self.request(Method::GET, &format!("/v1/jobs/{id}")).send().await?).await
    }

    /// `GET /v1/jobs/{id}/events`: the open event stream, after event `last` when given.
    pub async fn events(&self, id: &str, last: Option<i64>) -> Result<Response, ClientError> {
        let mut req = self.request(Method::GET, &format!("/v1/jobs/{id}/events"));
        if let Some(last) = last {
            req = req.header("last-event-id", last.to_string());
        }
        let resp = req.send().await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Self::read::<serde_json::Value>(resp).await.map(|_| unreachable!("a refusal reads as an error"))
    }

    /// `GET /v1/jobs?limit=`.
    pub async fn jobs(&self, limit: u64) -> Result<JobPage, ClientError> {
        let req = self.request(Method::GET, "/v1/jobs").query(&[("limit", limit.clamp(1, MAX_PAGE))]);
        Self::read(req.send().await?).await
    }

    /// One page of `GET /v1/jobs/{id}/people`.
    pub async fn people(&self, id: &str, after: Option<&str>) -> Result<PersonPage, ClientError> {
        let req = self
            .request(Method::GET, &format!("/v1/jobs/{id}/people"))
            .query(&[("limit", MAX_PAGE.to_string()), ("after", after.unwrap_or_default().to_string())]);
        Self::read(req.send().await?).await
    }

    /// `POST /v1/jobs/{id}/retry`: the new job.
    pub async fn retry(
        &self,
        id: &str,
        body: &RetryRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Job, ClientError> {
        let mut req = self.request(Method::POST, &format!("/v1/jobs/{id}/retry")).json(body);
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        Self::read(req.send().await?).await
    }

    /// `POST /v1/jobs/{id}/cancel`.
    pub async fn cancel(&self, id: &str) -> Result<Job, ClientError> {
        Self::read(self.request(Method::POST, &format!("/v1/jobs/{id}/cancel")).send().await?).await
    }

    fn scoped(req: RequestBuilder, scope: Option<SuppressionScope>) -> RequestBuilder {
        match scope {
            Some(SuppressionScope::Global) => req.query(&[("scope", "global")]),
            Some(SuppressionScope::Client) => req.query(&[("scope", "client")]),
            None => req,
        }
    }

    /// `POST /v1/suppressions`.
    pub async fn add_suppression(
        &self,
        id: &SuppressionIdentifier,
        scope: Option<SuppressionScope>,
    ) -> Result<SuppressionAdded, ClientError> {
        let req = Self::scoped(self.request(Method::POST, "/v1/suppressions"), scope).json(id);
        Self::read(req.send().await?).await
    }

    /// `POST /v1/suppressions/import` with a CSV (`text/csv`) or JSON body.
    pub async fn import_suppressions(
        &self,
        body: Vec<u8>,
        content_type: &str,
        scope: Option<SuppressionScope>,
    ) -> Result<SuppressionImport, ClientError> {
        let req = Self::scoped(self.request(Method::POST, "/v1/suppressions/import"), scope)
            .header("content-type", content_type)
            .body(body);
        Self::read(req.send().await?).await
    }

    /// Every entry of `GET /v1/suppressions`, page after page.
    pub async fn suppressions(&self, scope: Option<SuppressionScope>) -> Result<Vec<Suppression>, ClientError> {
        let mut all = Vec::new();
        let mut after: Option<uuid::Uuid> = None;
        loop {
            let req = Self::scoped(self.request(Method::GET, "/v1/suppressions"), scope)
                .query(&[("limit", MAX_PAGE.to_string()), ("after", after.map(|a| a.to_string()).unwrap_or_default())]);
            let page: SuppressionPage = Self::read(req.send().await?).await?;
            all.extend(page.entries);
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// `DELETE /v1/suppressions/{id}`.
    pub async fn remove_suppression(
        &self,
        id: &str,
        scope: Option<SuppressionScope>,
    ) -> Result<SuppressionRemoved, ClientError> {
        let req = Self::scoped(self.request(Method::DELETE, &format!("/v1/suppressions/{id}")), scope);
        Self::read(req.send().await?).await
    }

    /// `POST /v1/suppressions/remove`: the entry of an identifier.
    pub async fn remove_suppression_of(
        &self,
        id: &SuppressionIdentifier,
        scope: Option<SuppressionScope>,
    ) -> Result<SuppressionRemoved, ClientError> {
        let req = Self::scoped(self.request(Method::POST, "/v1/suppressions/remove"), scope).json(id);
        Self::read(req.send().await?).await
    }
}
