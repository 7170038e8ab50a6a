//! The do-not-enrich list's rules: how an identifier is normalised, and the keyed hash that is all
//! the list (and a person row) keeps of it.
//!
//! An entry is `HMAC-SHA256(key, "{kind}:{normalised value}")` in hex, keyed with the server's
//! `SUPPRESSION_KEY`: without the key nobody can test a guessed address against the list, and the
//! list holds no plaintext. A person matches an entry when one of its [`identifiers`] hashes to it.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::SuppressionKind;
use crate::person_key::{normalize_domain, normalize_linkedin};

/// The shortest accepted key, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// The server secret the hashes are keyed with. Its `Debug` never shows it.
#[derive(Clone)]
pub struct SuppressionKey {
    secret: Vec<u8>,
    /// The HMAC state after the key: each hash starts from a copy (a job hashes every person).
    keyed: Hmac<Sha256>,
}

impl PartialEq for SuppressionKey {
    fn eq(&self, other: &SuppressionKey) -> bool {
        self.secret == other.secret
    }
}

impl Eq for SuppressionKey {}

/// A key shorter than [`MIN_KEY_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the suppression key must be at least {MIN_KEY_BYTES} bytes long")]
pub struct ShortKey;

impl SuppressionKey {
    /// The key whose bytes are `secret`'s.
    pub fn new(secret: &str) -> Result<SuppressionKey, ShortKey> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(ShortKey);
        }
        // HMAC takes a key of any length.
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
        Ok(SuppressionKey { secret: secret.as_bytes().to_vec(), keyed })
    }

    /// The hex hash of the normalised `value` of `kind` (see the module's description).
    pub fn hash(&self, kind: SuppressionKind, value: &str) -> String {
        let mut mac = self.keyed.clone();
        mac.update(kind.as_str().as_bytes());
        mac.update(b":");
        mac.update(value.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// The hash of a raw identifier of `kind`, or `None` when it is not one ([`normalize`]).
    pub fn hash_raw(&self, kind: SuppressionKind, raw: &str) -> Option<String> {
        normalize(kind, raw).map(|v| self.hash(kind, &v))
    }

    /// A person's tokens ([`tokens`]) from the string fields `get` reads.
    pub fn person_tokens<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
        tokens(identifiers(get).iter().map(|(k, v)| (*k, self.hash(*k, v))))
    }
}

impl fmt::Debug for SuppressionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SuppressionKey(<redacted>)")
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The normalised form of `raw` as an identifier of `kind`, or `None` when it is not one:
/// - email: trimmed, lower-cased, a real address (no placeholder), as everywhere else;
/// - LinkedIn URL: no scheme, `www.` or country subdomain, query, fragment or trailing slash,
///   lower-cased (profile paths are case-insensitive): `linkedin.com/in/dana`;
/// - Apollo id: 24 hexadecimal characters, lower-cased;
/// - domain: lower-cased, no scheme, `www.`, leading `@`, path or trailing dot; it has a dot.
pub fn normalize(kind: SuppressionKind, raw: &str) -> Option<String> {
    let raw = raw.trim();
    match kind {
        SuppressionKind::Email => apollo_client::normalize_email(raw),
        SuppressionKind::LinkedinUrl => {
            let url = normalize_linkedin(raw)?;
            let at = url.find("linkedin.com/")?;
            // `uk.linkedin.com/in/x` is `linkedin.com/in/x`; a host merely ending so is not.
            if at > 0 && !url[..at].ends_with('.') || url[..at].contains('/') {
                return None;
            }
            let profile = &url[at..];
            (profile.len() > "linkedin.com/".len()).then(|| profile.to_owned())
        }
        SuppressionKind::ApolloId => {
            (raw.len() == 24 && raw.bytes().all(|b| b.is_ascii_hexdigit())).then(|| raw.to_ascii_lowercase())
        }
        SuppressionKind::Domain => normalize_domain(raw),
    }
}

/// What a person can be matched by, normalised, each once: its email, LinkedIn URL, Apollo id,
/// `domain`, and its email's domain. Fields that do not normalise are left out.
pub fn identifiers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Vec<(SuppressionKind, String)> {
    use SuppressionKind as K;
    let mut out = Vec::with_capacity(4);
    let email = get("email").and_then(|e| normalize(K::Email, e));
    for (kind, field) in
        [(K::Email, "email"), (K::LinkedinUrl, "linkedin_url"), (K::ApolloId, "id"), (K::Domain, "domain")]
    {
        if let Some(v) = get(field).and_then(|raw| normalize(kind, raw)) {
            out.push((kind, v));
        }
    }
    if let Some(domain) = email.as_deref().and_then(|e| e.rsplit_once('@')).and_then(|(_, d)| normalize(K::Domain, d))
        && !out.contains(&(K::Domain, domain.clone()))
    {
        out.push((K::Domain, domain));
    }
    out
}

/// Whether entries of `kind` name one person (email, LinkedIn URL, Apollo id), as opposed to a
/// whole domain: what erasing a job with `suppress=true` adds to the list.
pub fn names_one_person(kind: SuppressionKind) -> bool {
    kind != SuppressionKind::Domain
}

fn code(kind: SuppressionKind) -> char {
    match kind {
        SuppressionKind::Email => 'e',
        SuppressionKind::LinkedinUrl => 'l',
        SuppressionKind::ApolloId => 'a',
        SuppressionKind::Domain => 'd',
    }
}

/// The hashes of a person as one stored text: `e:<hex> d:<hex> …` (kind letter, hash), or `None`
/// when there are none.
pub fn tokens(hashes: impl IntoIterator<Item = (SuppressionKind, String)>) -> Option<String> {
    let mut out = String::new();
    for (kind, hash) in hashes {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push(code(kind));
        out.push(':');
        out.push_str(&hash);
    }
    (!out.is_empty()).then_some(out)
}

/// The (kind, hash) pairs of a stored [`tokens`] text; unreadable tokens are skipped.
pub fn parse_tokens(text: &str) -> impl Iterator<Item = (SuppressionKind, &str)> {
    text.split(' ').filter_map(|t| {
        let (c, hash) = t.split_once(':')?;
        let kind = SuppressionKind::ALL.iter().copied().find(|k| c.len() == 1 && c.starts_with(code(*k)))?;
        Some((kind, hash))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use SuppressionKind as K;

    #[test]
    fn emails_normalise_as_everywhere_else() {
        assert_eq!(
            normalize(K::Email, " Dana.Okafor@Northwind-Labs.COM ").as_deref(),
            Some("dana.okafor@northwind-labs.com")
        );
        assert_eq!(normalize(K::Email, "email_not_unlocked@domain.com"), None);
        assert_eq!(normalize(K::Email, "not an address"), None);
    }

    #[test]
    fn linkedin_urls_lose_scheme_www_subdomain_query_slash_and_case() {
        for url in [
            "https://www.linkedin.com/in/Dana-Okafor/",
            "http://linkedin.com/in/dana-okafor",
            "linkedin.com/in/DANA-OKAFOR?trk=abc",
            "https://uk.linkedin.com/in/dana-okafor/#top",
            " www.LinkedIn.com/in/dana-okafor ",
        ] {
            assert_eq!(normalize(K::LinkedinUrl, url).as_deref(), Some("linkedin.com/in/dana-okafor"), "{url}");
        }
        assert_eq!(normalize(K::LinkedinUrl, "https://notlinkedin.com/in/x"), None);
        assert_eq!(normalize(K::LinkedinUrl, "https://example.com/linkedin.com/in/x"), None);
        assert_eq!(normalize(K::LinkedinUrl, "linkedin.com/"), None, "no profile");
        assert_eq!(normalize(K::LinkedinUrl, "dana@example.com"), None);
    }

    #[test]
    fn apollo_ids_are_24_hex_lower_cased() {
        assert_eq!(normalize(K::ApolloId, " 5F2A9C0E1B3D4A0012345678 ").as_deref(), Some("5f2a9c0e1b3d4a0012345678"));
        assert_eq!(normalize(K::ApolloId, "5f2a9c0e1b3d4a001234567"), None, "23 characters");
        assert_eq!(normalize(K::ApolloId, "5f2a9c0e1b3d4a001234567g"), None, "not hex");
    }

    #[test]
    fn domains_lose_scheme_www_at_path_and_case() {
        for d in
            ["Northwind-Labs.com", "https://www.northwind-labs.com/about", "@northwind-labs.com", "northwind-labs.com."]
        {
            assert_eq!(normalize(K::Domain, d).as_deref(), Some("northwind-labs.com"), "{d}");
        }
        assert_eq!(normalize(K::Domain, "localhost"), None);
        assert_eq!(normalize(K::Domain, "   "), None);
    }

    #[test]
    fn a_person_is_matched_by_each_identifier_and_its_emails_domain() {
        let person = [
            ("email", "Dana@Northwind-Labs.com"),
            ("linkedin_url", "https://www.linkedin.com/in/dana/"),
            ("id", "5F2A9C0E1B3D4A0012345678"),
            ("domain", "harbor.io"),
            ("first_name", "Dana"),
        ];
        let get = |k: &str| person.iter().find(|(f, _)| *f == k).map(|(_, v)| *v);
        assert_eq!(
            identifiers(get),
            vec![
                (K::Email, "dana@northwind-labs.com".to_owned()),
                (K::LinkedinUrl, "linkedin.com/in/dana".to_owned()),
                (K::ApolloId, "5f2a9c0e1b3d4a0012345678".to_owned()),
                (K::Domain, "harbor.io".to_owned()),
                (K::Domain, "northwind-labs.com".to_owned()),
            ]
        );
        // The email's domain is not repeated when it is the `domain` too.
        let same = [("email", "a@harbor.io"), ("domain", "www.Harbor.io")];
        let get = |k: &str| same.iter().find(|(f, _)| *f == k).map(|(_, v)| *v);
        assert_eq!(identifiers(get), vec![(K::Email, "a@harbor.io".to_owned()), (K::Domain, "harbor.io".to_owned())]);
        assert!(identifiers(|_| None).is_empty());
    }

    const EXPECTED: &str = "5407cca83a7e3c4c283c90c9aed208bcaae4253308c09a9e407ad8dfd59e2a18";

    #[test]
    fn hashes_depend_on_key_kind_and_normalised_value_only() {
        let key = SuppressionKey::new("0123456789abcdef-key").unwrap();
        let h = key.hash_raw(K::Email, "Dana@X.com").unwrap();
        assert_eq!(h.len(), 64);
        assert!(!h.contains("dana"));
        assert_eq!(key.hash_raw(K::Email, " dana@x.com ").unwrap(), h, "same normalised value, same hash");
        assert_ne!(key.hash(K::Domain, "dana@x.com"), h, "the kind is part of the hash");
        let other = SuppressionKey::new("another-key-of-16-bytes").unwrap();
        assert_ne!(other.hash_raw(K::Email, "dana@x.com").unwrap(), h, "the key is part of the hash");
        // HMAC-SHA256 over "email:dana@x.com" with this key, computed independently (Python's hmac).
        assert_eq!(h, EXPECTED);
        assert_eq!(key.hash_raw(K::ApolloId, "nope"), None);
    }

    #[test]
    fn keys_are_long_enough_and_never_shown() {
        assert_eq!(SuppressionKey::new("short"), Err(ShortKey));
        let key = SuppressionKey::new("a-secret-that-is-long-enough").unwrap();
        assert_eq!(format!("{key:?}"), "SuppressionKey(<redacted>)");
    }

    #[test]
    fn tokens_round_trip_with_their_kinds() {
        let t = tokens([(K::Email, "ab".to_owned()), (K::Domain, "cd".to_owned())]).unwrap();
        assert_eq!(t, "e:ab d:cd");
        assert_eq!(parse_tokens(&t).collect::<Vec<_>>(), vec![(K::Email, "ab"), (K::Domain, "cd")]);
        assert_eq!(tokens(Vec::new()), None);
        assert_eq!(parse_tokens("x:zz e:ff junk").collect::<Vec<_>>(), vec![(K::Email, "ff")]);
        assert!(names_one_person(K::Email) && names_one_person(K::LinkedinUrl) && names_one_person(K::ApolloId));
        assert!(!names_one_person(K::Domain));
    }
}
