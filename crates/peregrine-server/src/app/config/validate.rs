//! Rules across keys, checked after loading; each error names the key and the fix.

use super::{Config, ConfigError};
use crate::auth::{OriginPolicy, TokenVerifier};

impl Config {
    /// Checks the rules that types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: String| Err(ConfigError(m));
        let verifier = TokenVerifier::from_config(&self.token).map_err(ConfigError)?;
        if !self.token.allow_anonymous && !verifier.has_key() {
            return fail(
                "no way to authenticate clients: set token.hmac_secret, token.rsa_public_key or \
                 token.ecdsa_public_key, or token.allow_anonymous = true"
                    .into(),
            );
        }
        OriginPolicy::new(&self.allowed_origins).map_err(ConfigError)?;
        if let Some(tls) = &self.tls {
            for (key, path) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
                if !path.exists() {
                    return fail(format!("`{key}` {}: no such file", path.display()));
                }
            }
        }
        let client = &self.client;
        if client.pong_timeout.is_zero() || client.ping_interval.is_zero() {
            return fail("client.ping_interval and client.pong_timeout must be more than 0".into());
        }
        if client.publish_rate.is_nan() || client.publish_rate <= 0.0 || client.publish_burst == 0 {
            return fail("client.publish_rate and client.publish_burst must be more than 0".into());
        }
        if client.queue_max_bytes < client.max_message_size {
            return fail(format!(
                "client.queue_max_bytes ({}) is smaller than client.max_message_size ({}): \
                 one message would not fit; raise queue_max_bytes",
                client.queue_max_bytes, client.max_message_size
            ));
        }
        let named = self.channels.named.iter().map(|(n, o)| (format!("channels.named.{n}"), Some(n), o));
        let default = self.channels.default.iter().map(|o| ("channels.default".to_owned(), None, o));
        for (key, name, options) in default.chain(named) {
            if let Some(name) = name
                && (name.is_empty() || name.contains(':'))
            {
                return fail(format!("`{key}`: a namespace name is not empty and has no ':'"));
            }
            if options.join_leave && !options.presence {
                return fail(format!("`{key}.join_leave` needs `{key}.presence = true`"));
            }
        }
        Ok(())
    }

    /// The configuration as TOML with secrets replaced by `<redacted>`, for printing.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        let redact = |s: &mut Option<super::Secret>| {
            if s.is_some() {
                *s = Some(super::Secret::new("<redacted>"));
            }
        };
        redact(&mut shown.api_key);
        redact(&mut shown.token.hmac_secret);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print: {e}"))
    }
}
