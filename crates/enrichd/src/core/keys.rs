//! API keys: the client keys (`ENRICHD_API_KEYS`) and the admin keys (`ENRICHD_ADMIN_KEYS`), parsed
//! and checked in constant time; only their digests are kept.
//!
//! Both variables hold comma-separated entries, each either a bare key or `name=key`. Keys are
//! often base64 (`openssl rand -base64 24`), whose `=` padding only ever ends a key, so an entry is
//! named exactly when it has a `=` followed by something other than `=`: `crm=abc==` is the client
//! `crm` with the key `abc==`, and `abc==` is a bare key. Every key must have at least
//! [`MIN_KEY_CHARS`] characters; a key may appear only once; a name may carry several keys (rotation).

use sha2::{Digest, Sha256};

/// The shortest key accepted at start-up.
pub const MIN_KEY_CHARS: usize = 16;

/// Why a key list was refused. Entries are named by position (1-based), never by content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// An entry is empty (`a,,b`, or `name=` with nothing after it).
    #[error("{var}: entry {position} is empty")]
    Empty {
        /// The variable.
        var: &'static str,
        /// 1-based position of the entry.
        position: usize,
    },
    /// A key is shorter than [`MIN_KEY_CHARS`].
    #[error("{var}: the key of entry {position} is shorter than {MIN_KEY_CHARS} characters")]
    TooShort {
        /// The variable.
        var: &'static str,
        /// 1-based position of the entry.
        position: usize,
    },
    /// `=` inside an entry, but what precedes it is not a client name.
    #[error(
        "{var}: entry {position} has `=` before its end but no client name before it (use letters, digits, `-`, `_`, `.`)"
    )]
    BadName {
        /// The variable.
        var: &'static str,
        /// 1-based position of the entry.
        position: usize,
    },
    /// The same key twice: which client it stands for would be ambiguous.
    #[error("{var}: entries {first} and {position} have the same key")]
    DuplicateKey {
        /// The variable.
        var: &'static str,
        /// The earlier entry.
        first: usize,
        /// The later entry.
        position: usize,
    },
}

/// One parsed entry: the client name and its key.
#[derive(PartialEq, Eq)]
struct Entry<'a> {
    name: Option<&'a str>,
    key: &'a str,
}

/// Whether `name` is a possible client (or admin key) name: letters, digits, `-`, `_`, `.`.
pub fn is_client_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Splits one trimmed entry into name and key (see the module doc for the rule).
fn split_entry(entry: &str) -> Result<Entry<'_>, ()> {
    // Padding is only trailing: a `=` before the trailing run separates a name.
    let body = entry.trim_end_matches('=');
    let Some(eq) = body.find('=') else { return Ok(Entry { name: None, key: entry }) };
    let name = entry[..eq].trim();
    if !is_client_name(name) {
        return Err(());
    }
    Ok(Entry { name: Some(name), key: entry[eq + 1..].trim() })
}

/// A set of keys, each held as a SHA-256 digest with its client's name.
#[derive(Clone, Default)]
pub struct KeySet(Vec<([u8; 32], String)>);

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySet({} keys)", self.0.len())
    }
}

impl KeySet {
    /// Parses the value of `var` (unset or blank gives an empty set).
    pub fn parse(var: &'static str, text: Option<&str>) -> Result<KeySet, KeysError> {
        let mut keys: Vec<([u8; 32], String, usize)> = Vec::new();
        let text = text.unwrap_or("");
        if text.trim().is_empty() {
            return Ok(KeySet::default());
        }
        for (i, raw) in text.split(',').enumerate() {
            let position = i + 1;
            let entry = raw.trim();
            if entry.is_empty() {
                return Err(KeysError::Empty { var, position });
            }
            let Entry { name, key } = split_entry(entry).map_err(|()| KeysError::BadName { var, position })?;
            if key.is_empty() {
                return Err(KeysError::Empty { var, position });
            }
            if key.chars().count() < MIN_KEY_CHARS {
                return Err(KeysError::TooShort { var, position });
            }
            let d = digest(key);
            if let Some((_, _, first)) = keys.iter().find(|(k, _, _)| *k == d) {
                return Err(KeysError::DuplicateKey { var, first: *first, position });
            }
            // A bare key's client is named by a short digest prefix: stable, and not the key.
            let name = name.map_or_else(|| format!("key-{}", &hex(&d)[..8]), str::to_string);
            keys.push((d, name, position));
        }
        Ok(KeySet(keys.into_iter().map(|(d, name, _)| (d, name)).collect()))
    }

    /// The name a key belongs to. Every stored digest is compared in constant time, without an
    /// early exit, so timing tells nothing about which key (or how much of it) matched.
    pub fn client_for(&self, key: &str) -> Option<&str> {
        let d = digest(key);
        let mut found = None;
        for (k, name) in &self.0 {
            if constant_time_eq(k, &d) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a key of `self` is also in `other`.
    pub fn shares_a_key_with(&self, other: &KeySet) -> bool {
        self.0.iter().any(|(d, _)| other.0.iter().any(|(o, _)| constant_time_eq(d, o)))
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const B64_ONE: &str = "q83vEjRWeJCrze8SNFZ4kA0="; // 24 chars, one `=`
    const B64_TWO: &str = "q83vEjRWeJCrze8SNFZ4kA=="; // 24 chars, `==`
    const PLAIN: &str = "local-client-key"; // exactly 16

    fn parse(text: &str) -> Result<KeySet, KeysError> {
        KeySet::parse("ENRICHD_API_KEYS", Some(text))
    }

    #[test]
    fn every_spelling() {
        // (input, [(presented key, expected client)])
        let accepted: &[(&str, &[(&str, &str)])] = &[
            (B64_ONE, &[(B64_ONE, "key-")]),
            (B64_TWO, &[(B64_TWO, "key-")]),
            (PLAIN, &[(PLAIN, "key-")]),
            (&format!("crm={B64_TWO}"), &[(B64_TWO, "crm")]),
            (&format!("crm={B64_ONE},sheets={PLAIN}"), &[(B64_ONE, "crm"), (PLAIN, "sheets")]),
            (&format!("  crm = {B64_TWO} ,\t{PLAIN}  "), &[(B64_TWO, "crm"), (PLAIN, "key-")]),
            (&format!("crm.v2_x-y={PLAIN}"), &[(PLAIN, "crm.v2_x-y")]),
            // A key may itself contain `=` after the name's separator, and `+` and `/`.
            (&format!("crm=ab+/cd=ef{B64_TWO}"), &[(&format!("ab+/cd=ef{B64_TWO}"), "crm")]),
            // Rotation: one client, two keys.
            (&format!("crm={B64_ONE},crm={PLAIN}"), &[(B64_ONE, "crm"), (PLAIN, "crm")]),
        ];
        for (text, expect) in accepted {
            let set = parse(text).unwrap_or_else(|e| panic!("{text:?} refused: {e}"));
            assert_eq!(set.0.len(), expect.len(), "{text:?}");
            for (key, client) in *expect {
                let got = set.client_for(key).unwrap_or_else(|| panic!("{text:?}: {key:?} not accepted"));
                assert!(got.starts_with(client), "{text:?}: {key:?} is {got:?}, want {client:?}");
            }
            for wrong in ["=", "==", "", "crm", "q83vEjRWeJCrze8SNFZ4kA", "ab+/cd"] {
                assert_eq!(set.client_for(wrong), None, "{text:?} accepted {wrong:?}");
            }
        }
        // A bare key is named by its digest, the same each time and different per key.
        let a = parse(B64_ONE).unwrap();
        let b = parse(B64_TWO).unwrap();
        assert_eq!(a.client_for(B64_ONE), parse(B64_ONE).unwrap().client_for(B64_ONE));
        assert_ne!(a.client_for(B64_ONE), b.client_for(B64_TWO));

        let refused: &[(&str, KeysError)] = &[
            ("abc==", KeysError::TooShort { var: "ENRICHD_API_KEYS", position: 1 }),
            (&format!("{PLAIN},,{B64_ONE}"), KeysError::Empty { var: "ENRICHD_API_KEYS", position: 2 }),
            (&format!("{PLAIN}, "), KeysError::Empty { var: "ENRICHD_API_KEYS", position: 2 }),
            // Without a key after it, a trailing `=` is padding: a (too short) bare key.
            ("crm=", KeysError::TooShort { var: "ENRICHD_API_KEYS", position: 1 }),
            ("crm= ", KeysError::TooShort { var: "ENRICHD_API_KEYS", position: 1 }),
            (&format!("{PLAIN},crm=short-key"), KeysError::TooShort { var: "ENRICHD_API_KEYS", position: 2 }),
            ("local-client-ke", KeysError::TooShort { var: "ENRICHD_API_KEYS", position: 1 }),
            (&format!("=={B64_ONE}"), KeysError::BadName { var: "ENRICHD_API_KEYS", position: 1 }),
            (&format!("a+b={PLAIN}"), KeysError::BadName { var: "ENRICHD_API_KEYS", position: 1 }),
            (
                &format!("crm={PLAIN},{B64_ONE},sheets={PLAIN}"),
                KeysError::DuplicateKey { var: "ENRICHD_API_KEYS", first: 1, position: 3 },
            ),
            (
                &format!("{B64_TWO},{B64_TWO}"),
                KeysError::DuplicateKey { var: "ENRICHD_API_KEYS", first: 1, position: 2 },
            ),
        ];
        for (text, want) in refused {
            assert_eq!(parse(text).err().as_ref(), Some(want), "{text:?}");
        }
    }

    #[test]
    fn unset_and_blank_give_no_keys_and_errors_never_show_keys() {
        assert!(KeySet::parse("ENRICHD_ADMIN_KEYS", None).unwrap().is_empty());
        assert!(parse("  ").unwrap().is_empty());
        for text in ["crm=short-secret", "crm=secret-secret-1,x=secret-secret-1", "sec+ret=secret-secret-2"] {
            let message = parse(text).unwrap_err().to_string();
            assert!(!message.contains("secret"), "{message}");
        }
        let set = parse(&format!("crm={PLAIN}")).unwrap();
        assert_eq!(format!("{set:?}"), "KeySet(1 keys)");
    }

    #[test]
    fn shared_keys_are_found() {
        let clients = parse(&format!("crm={PLAIN}")).unwrap();
        assert!(clients.shares_a_key_with(&parse(&format!("ops={PLAIN}")).unwrap()));
        assert!(!clients.shares_a_key_with(&parse(B64_ONE).unwrap()));
    }
}
