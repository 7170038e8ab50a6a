//! Which callback URLs we will POST to: no SSRF into loopback, link-local or private networks
//! unless the configuration allows a host explicitly, and plain HTTP only when configured.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use reqwest::Url;

/// The callback URL policy from configuration.
#[derive(Debug, Clone, Default)]
pub struct CallbackPolicy {
    /// Allow `http://` callbacks (otherwise only `https://`).
    pub allow_http: bool,
    /// Hosts or IP addresses allowed even when private (e.g. `127.0.0.1` for local testing).
    pub allow_hosts: Vec<String>,
}

/// Why a callback URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackUrlError {
    /// Not an absolute URL.
    #[error("callback_url is not a valid absolute URL")]
    Invalid,
    /// Not https (or http when allowed).
    #[error("callback_url must use https{}", if *.0 { " or http" } else { "" })]
    Scheme(bool),
    /// Credentials in the URL would be sent to and logged by intermediaries.
    #[error("callback_url must not contain user credentials")]
    Credentials,
    /// The host is loopback, link-local, private or otherwise internal.
    #[error(
        "callback_url host {0} is a loopback, link-local or private address; allow it in the configuration to use it"
    )]
    Internal(String),
}

impl CallbackPolicy {
    /// Checks a URL given at submit time.
    pub fn check(&self, raw: &str) -> Result<Url, CallbackUrlError> {
        let url = Url::parse(raw.trim()).map_err(|_| CallbackUrlError::Invalid)?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => return Err(CallbackUrlError::Scheme(self.allow_http)),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(CallbackUrlError::Credentials);
        }
        let host = url.host_str().ok_or(CallbackUrlError::Invalid)?.to_ascii_lowercase();
        // `localhost.` is `localhost`: a fully qualified name ends with a dot.
        let bare = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
        if self.allowed(bare) {
            return Ok(url);
        }
        let internal = match bare.parse::<IpAddr>() {
            Ok(ip) => is_internal(ip),
            Err(_) => {
                bare == "localhost"
                    || bare.ends_with(".localhost")
                    || bare.ends_with(".internal")
                    || !bare.contains('.')
            }
        };
        if internal {
            return Err(CallbackUrlError::Internal(host));
        }
        Ok(url)
    }

    /// Checks an address a host name resolved to at send time (guards DNS rebinding).
    pub fn check_resolved(&self, host: &str, ip: IpAddr) -> Result<(), CallbackUrlError> {
        let host = host.trim_end_matches('.');
        if is_internal(ip) && !self.allowed(host) && !self.allowed(&ip.to_string()) {
            return Err(CallbackUrlError::Internal(ip.to_string()));
        }
        Ok(())
    }

    fn allowed(&self, host: &str) -> bool {
        self.allow_hosts.iter().any(|a| a.eq_ignore_ascii_case(host))
    }
}

/// Whether an address is one a callback must not reach without an explicit allowance.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_internal_v4(v4);
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0], s[1], s[2]) == (0x64, 0xff9b, 1) // local-use NAT64 (64:ff9b:1::/48)
                || (s[0], s[1]) == (0x2001, 0) // Teredo: the IPv4 inside is obfuscated
                || (s[0], s[1], s[2], s[3]) == (0x100, 0, 0, 0) // discard-only
                || s[..6] == [0; 6] // IPv4-compatible (::a.b.c.d), deprecated
        }
    }
}

/// The IPv4 address an IPv6 one carries to the IPv4 internet: IPv4-mapped (`::ffff:a.b.c.d`),
/// NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::/48`) reach that IPv4 address, so they
/// are as internal as it is.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(v4(s[6], s[7]));
    }
    (s[0] == 0x2002).then(|| v4(s[1], s[2]))
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT
        || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking
        || o[0] >= 240
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_targets_are_refused() {
        let p = CallbackPolicy::default();
        for bad in [
            "https://127.0.0.1/cb",
            "https://localhost:8443/cb",
            "https://10.1.2.3/cb",
            "https://192.168.0.10/cb",
            "https://172.16.5.5/cb",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/cb",
            "https://[fe80::1]/cb",
            "https://[fd00::1]/cb",
            "https://[::ffff:127.0.0.1]/cb",
            "https://0.0.0.0/cb",
            "https://100.64.0.1/cb",
            "https://metadata/cb",
            "https://localhost./cb",
            "https://api.localhost./cb",
            "https://[64:ff9b::7f00:1]/cb",
            "https://[64:ff9b::a00:1]/cb",
            "https://[64:ff9b:1::1]/cb",
            "https://[2002:7f00:1::1]/cb",
            "https://[2002:c0a8:1::]/cb",
            "https://[::127.0.0.1]/cb",
            "https://[::8.8.8.8]/cb",
            "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/cb",
        ] {
            assert!(matches!(p.check(bad), Err(CallbackUrlError::Internal(_))), "{bad}");
        }
        assert_eq!(p.check("http://hooks.example.com/cb").unwrap_err(), CallbackUrlError::Scheme(false));
        assert_eq!(p.check("ftp://hooks.example.com/cb").unwrap_err(), CallbackUrlError::Scheme(false));
        assert_eq!(p.check("https://u:p@hooks.example.com/cb").unwrap_err(), CallbackUrlError::Credentials);
        assert_eq!(p.check("not a url").unwrap_err(), CallbackUrlError::Invalid);
        assert!(p.check("https://hooks.example.com/cb?x=1").is_ok());
        // The same families around public IPv4 addresses are the public internet.
        assert!(p.check("https://[64:ff9b::5db8:d822]/cb").is_ok(), "NAT64 of 93.184.216.34");
        assert!(p.check("https://[2002:5db8:d822::1]/cb").is_ok(), "6to4 of 93.184.216.34");
        assert!(p.check("https://[2606:4700::1111]/cb").is_ok());
        assert!(p.check_resolved("localhost.", "127.0.0.1".parse().unwrap()).is_err());
        assert!(p.check_resolved("evil.example.com", "10.0.0.1".parse().unwrap()).is_err());
        assert!(p.check_resolved("good.example.com", "93.184.216.34".parse().unwrap()).is_ok());
    }

    #[test]
    fn the_allowlist_and_http_switch_open_exactly_what_they_name() {
        let p = CallbackPolicy { allow_http: true, allow_hosts: vec!["127.0.0.1".into(), "receiver.local".into()] };
        assert!(p.check("http://127.0.0.1:9999/cb").is_ok());
        assert!(p.check("https://receiver.local/cb").is_ok());
        assert!(p.check("http://127.0.0.2/cb").is_err());
        assert!(p.check_resolved("receiver.local", "10.0.0.9".parse().unwrap()).is_ok());
    }
}
