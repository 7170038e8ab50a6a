//! The normalised identity of an input person: people of one job with the same key are looked up
//! once, and a person without any key is `invalid` (never sent).

use apollo_client::normalize_email;
use serde_json::Value;

use crate::person_fields::PersonField;

/// The identity of an input person, or `None` when it has no usable identifier.
///
/// In order of preference: Apollo `id`, `email`, `linkedin_url`, `hashed_email`, and a name
/// (`first_name` + `last_name`, or `name`) with a `domain` or an `organization_name`. Everything is
/// lower-cased and trimmed; URLs and domains lose their scheme, `www.` and trailing slash.
pub fn person_key(input: &Value) -> Option<String> {
    person_key_of(|f| input.get(f.name()).and_then(Value::as_str))
}

/// [`person_key`] of a person whose fields are read by `get` (the string value of a field, if
/// any): the same key without building a JSON object first.
pub fn person_key_of<'a>(get: impl Fn(PersonField) -> Option<&'a str>) -> Option<String> {
    let field = |f: PersonField| get(f).map(str::trim).filter(|s| !s.is_empty());
    if let Some(id) = field(PersonField::Id) {
        return Some(format!("id:{}", id.to_lowercase()));
    }
    if let Some(email) = field(PersonField::Email).and_then(normalize_email) {
        return Some(format!("email:{email}"));
    }
    if let Some(url) = field(PersonField::LinkedinUrl).and_then(normalize_linkedin) {
        return Some(format!("linkedin:{url}"));
    }
    if let Some(hash) = field(PersonField::HashedEmail) {
        return Some(format!("hashed:{}", hash.to_lowercase()));
    }
    let name = match (field(PersonField::FirstName), field(PersonField::LastName)) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        _ => field(PersonField::Name).map(str::to_owned),
    }
    .map(|n| collapse_spaces(&n.to_lowercase()))
    .filter(|n| !n.is_empty())?;
    if let Some(domain) = field(PersonField::Domain).and_then(normalize_domain) {
        return Some(format!("name:{name}|{domain}"));
    }
    let org =
        field(PersonField::OrganizationName).map(|o| collapse_spaces(&o.to_lowercase())).filter(|o| !o.is_empty())?;
    Some(format!("name:{name}|org:{org}"))
}

fn collapse_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn strip_scheme_and_www(s: &str) -> String {
    let s = s.trim().to_lowercase();
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(&s);
    let s = s.strip_prefix("www.").unwrap_or(s);
    s.to_owned()
}

/// `https://www.LinkedIn.com/in/Dana/?trk=x` → `linkedin.com/in/dana`.
pub(crate) fn normalize_linkedin(url: &str) -> Option<String> {
    let s = strip_scheme_and_www(url);
    let s = s.split(['?', '#']).next().unwrap_or_default().trim_end_matches('/');
    (!s.is_empty()).then(|| s.to_owned())
}

/// `https://www.Example.com/about` or `@example.com` → `example.com`.
pub(crate) fn normalize_domain(domain: &str) -> Option<String> {
    let s = strip_scheme_and_www(domain);
    let s = s.trim_start_matches('@');
    let s = s.split(['/', '?', '#']).next().unwrap_or_default().trim_end_matches('.');
    s.contains('.').then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn preference_order() {
        let all = json!({"id": "ABC", "email": "x@y.com", "linkedin_url": "linkedin.com/in/x"});
        assert_eq!(person_key(&all).as_deref(), Some("id:abc"));
        let email = json!({"email": " Dana@Northwind.COM ", "linkedin_url": "linkedin.com/in/x"});
        assert_eq!(person_key(&email).as_deref(), Some("email:dana@northwind.com"));
        let hashed = json!({"hashed_email": "ABCDEF0123"});
        assert_eq!(person_key(&hashed).as_deref(), Some("hashed:abcdef0123"));
    }

    #[test]
    fn placeholder_or_bad_email_falls_through() {
        let p = json!({"email": "email_not_unlocked@domain.com", "first_name": "Dana", "last_name": "Okafor", "domain": "northwind.com"});
        assert_eq!(person_key(&p).as_deref(), Some("name:dana okafor|northwind.com"));
        assert_eq!(person_key(&json!({"email": "not an email"})), None);
    }

    #[test]
    fn linkedin_urls_normalise() {
        let a = json!({"linkedin_url": "https://www.LinkedIn.com/in/Dana-Okafor/?trk=abc"});
        let b = json!({"linkedin_url": "http://linkedin.com/in/dana-okafor"});
        assert_eq!(person_key(&a).as_deref(), Some("linkedin:linkedin.com/in/dana-okafor"));
        assert_eq!(person_key(&a), person_key(&b));
    }

    #[test]
    fn names_need_a_domain_or_organization() {
        assert_eq!(person_key(&json!({"first_name": "Dana", "last_name": "Okafor"})), None);
        assert_eq!(person_key(&json!({"name": "Dana Okafor"})), None);
        let dom = json!({"name": "  Dana   Okafor ", "domain": "https://www.Northwind.com/team"});
        assert_eq!(person_key(&dom).as_deref(), Some("name:dana okafor|northwind.com"));
        let org = json!({"first_name": "Dana", "last_name": "Okafor", "organization_name": "Northwind  Labs"});
        assert_eq!(person_key(&org).as_deref(), Some("name:dana okafor|org:northwind labs"));
        assert_eq!(person_key(&json!({"first_name": "Dana", "domain": "northwind.com"})), None);
        assert_eq!(person_key(&json!({"name": "Dana", "domain": "localhost"})), None);
    }

    #[test]
    fn nothing_usable() {
        assert_eq!(person_key(&json!({})), None);
        assert_eq!(person_key(&json!({"external_id": "crm-1", "id": "  "})), None);
        assert_eq!(person_key(&json!("dana@northwind.com")), None);
        assert_eq!(person_key(&json!({"email": 42})), None);
    }
}
