//! The OpenAPI document's frame (the paths come from the handlers registered in `startup.rs`) and
//! the answer for paths and methods no handler takes.

use actix_web::{HttpRequest, HttpResponse, web};
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ApiError;

/// The document's title, description and security scheme.
#[derive(OpenApi)]
#[openapi(
    info(title = "enrichd", description = "Enrichment orchestrator in front of Apollo's Bulk People Enrichment. \
        Clients authenticate with `Authorization: Bearer <api key>`; errors are `{\"error\": {code, message, details?}}`."),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// Adds the `bearer` scheme the client routes name in their `security`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The methods each documented path template answers, to tell "no such method" (405) from "no
/// such path" (404).
#[derive(Debug, Clone, Default)]
pub struct PathMethods(Vec<(Vec<String>, Vec<String>)>);

impl PathMethods {
    /// Reads the path templates and their methods from the document.
    pub fn from_doc(doc: &Document) -> PathMethods {
        let list = doc
            .paths
            .paths
            .iter()
            .map(|(template, item)| {
                let segments = template.split('/').map(str::to_string).collect();
                let methods = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ];
                (segments, methods.iter().filter(|(_, has)| *has).map(|(m, _)| m.to_string()).collect())
            })
            .collect();
        PathMethods(list)
    }

    /// The methods of the template `path` matches, if any (`{x}` matches one non-empty segment).
    pub fn allowed(&self, path: &str) -> Option<&[String]> {
        let parts: Vec<&str> = path.split('/').collect();
        self.0
            .iter()
            .find(|(template, _)| {
                template.len() == parts.len()
                    && template.iter().zip(&parts).all(|(t, p)| if t.starts_with('{') { !p.is_empty() } else { t == p })
            })
            .map(|(_, methods)| methods.as_slice())
    }
}

/// The default service: 405 with `Allow` on a known path, else 404.
pub async fn unrouted(req: HttpRequest, methods: web::Data<PathMethods>) -> Result<HttpResponse, ApiError> {
    Err(match methods.allowed(req.path()) {
        Some(allow) => ApiError::MethodNotAllowed(allow.to_vec()),
        None => ApiError::NotFound("route"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem, PathsBuilder};

    #[test]
    fn templates_match_whole_segments() {
        let mut doc = ApiDoc::openapi();
        doc.paths = PathsBuilder::new()
            .path("/v1/jobs/{id}", PathItem::new(HttpMethod::Get, OperationBuilder::new()))
            .path("/v1/jobs", PathItem::new(HttpMethod::Post, OperationBuilder::new()))
            .build();
        let m = PathMethods::from_doc(&doc);
        assert_eq!(m.allowed("/v1/jobs/abc"), Some(&["GET".to_string()][..]));
        assert_eq!(m.allowed("/v1/jobs"), Some(&["POST".to_string()][..]));
        assert_eq!(m.allowed("/v1/jobs/"), None);
        assert_eq!(m.allowed("/v1/jobs/abc/people"), None);
        assert_eq!(m.allowed("/nothing"), None);
    }
}
