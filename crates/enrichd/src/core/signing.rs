//! Standard Webhooks signatures for the final callback (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

/// A `whsec_…` signing secret, decoded. Never printed.
#[derive(Clone)]
pub struct SigningSecret(SecretSlice<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

/// Why a signing secret was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Not base64 after the optional `whsec_` prefix.
    #[error("signing secret is not base64 after the `whsec_` prefix")]
    NotBase64,
    /// Too short to be a real secret.
    #[error("signing secret must decode to at least 24 bytes, got {0}")]
    TooShort(usize),
}

impl SigningSecret {
    /// Parses `whsec_<base64>` (the prefix is optional).
    pub fn parse(s: &str) -> Result<SigningSecret, SecretError> {
        let b64 = s.trim().strip_prefix("whsec_").unwrap_or(s.trim());
        let bytes = STANDARD.decode(b64).map_err(|_| SecretError::NotBase64)?;
        if bytes.len() < 24 {
            return Err(SecretError::TooShort(bytes.len()));
        }
        Ok(SigningSecret(bytes.into()))
    }

    /// A fresh random secret (used by the demo).
    pub fn generate() -> (SigningSecret, String) {
        let bytes: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
        let text = format!("whsec_{}", STANDARD.encode(&bytes));
        (SigningSecret(bytes.into()), text)
    }

    /// The `webhook-signature` header value for one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret()).expect("HMAC takes any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Checks a `webhook-signature` header (space-separated `v1,…` entries) in constant time.
    pub fn verify(&self, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let expected = self.sign(msg_id, timestamp, body);
        header.split_whitespace().any(|candidate| constant_time_eq(candidate.as_bytes(), expected.as_bytes()))
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's published test vector.
    #[test]
    fn specification_vector() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(secret.verify(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
            &format!("v1,bogus {sig}")
        ));
        assert!(!secret.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, br#"{"test": 2432232314}"#, &sig));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"v1,abc", b"v1,abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        // Two differences that would cancel out if they were xor-ed together, not or-ed.
        assert!(!constant_time_eq(b"ab", b"ba"));
    }

    #[test]
    fn bad_secrets_are_refused_and_never_printed() {
        assert_eq!(SigningSecret::parse("whsec_!!!").unwrap_err(), SecretError::NotBase64);
        assert_eq!(SigningSecret::parse("whsec_c2hvcnQ=").unwrap_err(), SecretError::TooShort(5));
        let (s, text) = SigningSecret::generate();
        assert!(!format!("{s:?}").contains(&text[6..]));
        assert_eq!(format!("{s:?}"), "SigningSecret([redacted])", "says what it hides");
        assert!(SigningSecret::parse(&text).is_ok());
    }
}
