//! The browser Origin allowlist, checked before the upgrade: the defence against
//! cross-site WebSocket hijacking (a page on another site opening a WebSocket with the
//! user's cookies).
//!
//! Patterns: `*` (any origin), an exact origin `https://app.example.com[:port]`, or a
//! subdomain wildcard `https://*.example.com` (any subdomain, not the bare domain). Scheme
//! and host compare case-insensitively; default ports (80, 443) may be left out. An empty
//! list allows only the same origin as the request's `Host`. A request without `Origin`
//! (not a browser) is always allowed: Origin protects browsers' users, and other clients
//! can send anything anyway.

/// A parsed origin: scheme, host and port (explicit or the scheme's default).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

fn parse_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || s.starts_with('[') => match p.parse::<u16>() {
            Ok(port) => (h, Some(port)),
            Err(_) => return Err(format!("bad port in {s:?}")),
        },
        _ => (s, None),
    };
    if host.is_empty() {
        return Err(format!("no host in {s:?}"));
    }
    Ok((host.to_ascii_lowercase(), port))
}

fn parse_origin(s: &str) -> Result<Origin, String> {
    let (scheme, rest) = s.split_once("://").ok_or_else(|| format!("{s:?} is not scheme://host[:port]"))?;
    if rest.contains('/') {
        return Err(format!("{s:?} has a path; an origin is scheme://host[:port]"));
    }
    let scheme = scheme.to_ascii_lowercase();
    let (host, port) = parse_host_port(rest)?;
    let port = port.or_else(|| default_port(&scheme));
    Ok(Origin { scheme, host, port })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    Exact(Origin),
    /// `scheme://*.domain[:port]`: `host` holds `domain`.
    Subdomains(Origin),
}

/// The allowed origins.
///
/// ```
/// use peregrine_server::auth::OriginPolicy;
/// let policy = OriginPolicy::new(&["https://*.example.com".to_owned()]).unwrap();
/// assert!(policy.check(Some("https://app.example.com"), Some("ws.example.com")).is_ok());
/// assert!(policy.check(Some("https://example.com.evil.net"), Some("ws.example.com")).is_err());
/// assert!(policy.check(None, Some("ws.example.com")).is_ok());
/// ```
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    patterns: Vec<Pattern>,
}

impl OriginPolicy {
    /// Parses the patterns; an error names the bad one.
    pub fn new(patterns: &[String]) -> Result<OriginPolicy, String> {
        let patterns = patterns
            .iter()
            .map(|p| {
                if p == "*" {
                    return Ok(Pattern::Any);
                }
                let bad = |why: String| format!("allowed_origins: {p:?}: {why}");
                match p.split_once("://*.") {
                    Some((scheme, domain)) => {
                        parse_origin(&format!("{scheme}://{domain}")).map(Pattern::Subdomains).map_err(bad)
                    }
                    None => parse_origin(p).map(Pattern::Exact).map_err(bad),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(OriginPolicy { patterns })
    }

    /// Whether a browser at `origin` may connect to a server it reached as `host`; the error
    /// is the reason for the 403.
    pub fn check(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), String> {
        let Some(raw) = origin else { return Ok(()) };
        if self.patterns.contains(&Pattern::Any) {
            return Ok(());
        }
        let refuse = || {
            if self.patterns.is_empty() {
                format!(
                    "Origin {raw} is not allowed: only the same origin as the server is, by default; \
                     add it to allowed_origins"
                )
            } else {
                format!("Origin {raw} is not allowed: add it to allowed_origins")
            }
        };
        let Ok(origin) = parse_origin(raw) else { return Err(refuse()) };
        if self.patterns.is_empty() {
            let same = host.and_then(|h| parse_host_port(h).ok()).is_some_and(|(h, port)| {
                h == origin.host && port.or_else(|| default_port(&origin.scheme)) == origin.port
            });
            return if same { Ok(()) } else { Err(refuse()) };
        }
        let allowed = self.patterns.iter().any(|p| match p {
            Pattern::Any => true,
            Pattern::Exact(o) => *o == origin,
            Pattern::Subdomains(o) => {
                o.scheme == origin.scheme
                    && o.port == origin.port
                    && origin
                        .host
                        .strip_suffix(&o.host)
                        .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
            }
        });
        if allowed { Ok(()) } else { Err(refuse()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(p: &[&str]) -> OriginPolicy {
        OriginPolicy::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exact_origins_match_case_insensitively_with_default_ports() {
        let p = policy(&["https://App.Example.com"]);
        assert!(p.check(Some("https://app.example.com"), None).is_ok());
        assert!(p.check(Some("https://app.example.com:443"), None).is_ok());
        assert!(p.check(Some("https://app.example.com:8443"), None).is_err());
        assert!(p.check(Some("http://app.example.com"), None).is_err(), "scheme matters");
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let p = policy(&["https://*.example.com"]);
        assert!(p.check(Some("https://a.b.example.com"), None).is_ok());
        assert!(p.check(Some("https://example.com"), None).is_err(), "not the bare domain");
        assert!(p.check(Some("https://evilexample.com"), None).is_err());
        assert!(p.check(Some("https://example.com.evil.net"), None).is_err());
    }

    #[test]
    fn empty_list_means_same_origin() {
        let p = policy(&[]);
        assert!(p.check(Some("http://localhost:8080"), Some("localhost:8080")).is_ok());
        assert!(p.check(Some("https://chat.example.com"), Some("chat.example.com")).is_ok());
        assert!(p.check(Some("http://evil.example:8080"), Some("localhost:8080")).is_err());
        assert!(p.check(Some("http://localhost:9999"), Some("localhost:8080")).is_err());
    }

    #[test]
    fn null_and_garbage_origins_are_refused_with_a_reason() {
        let p = policy(&["https://a.example"]);
        let reason = p.check(Some("null"), None).unwrap_err();
        assert!(reason.contains("allowed_origins"), "{reason}");
        assert!(policy(&["*"]).check(Some("null"), None).is_ok());
    }

    #[test]
    fn bad_patterns_are_named() {
        let e = OriginPolicy::new(&["example.com".into()]).unwrap_err();
        assert!(e.contains("\"example.com\""), "{e}");
        assert!(OriginPolicy::new(&["https://x.example/path".into()]).is_err());
    }
}
