//! Rules across keys, checked after loading; each error names the key and the fix.
//!
//! Only rules on the values themselves live here: the configuration is the ground floor and
//! imports nothing above it. Whether key files parse and Origin patterns are well formed is
//! checked where they are used, when the node is built (`Node::with_backends`), with errors
//! that name the key just the same.

use super::{Config, ConfigError};

impl Config {
    /// Checks the rules that types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: String| Err(ConfigError(m));
        let token = &self.token;
        let has_key =
            token.hmac_secret.is_some() || token.rsa_public_key.is_some() || token.ecdsa_public_key.is_some();
        if !token.allow_anonymous && !has_key {
            return fail(
                "no way to authenticate clients: set token.hmac_secret, token.rsa_public_key or \
                 token.ecdsa_public_key, or token.allow_anonymous = true"
                    .into(),
            );
        }
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
        if client.handshake_timeout.is_zero() {
            return fail("client.handshake_timeout must be more than 0 (e.g. \"10s\")".into());
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
        if client.handshake_rate_per_address.is_nan() || client.handshake_rate_per_address < 0.0 {
            return fail("client.handshake_rate_per_address must be 0 (no limit) or more".into());
        }
        for (i, proxy) in self.trusted_proxies.iter().enumerate() {
            super::parse_network(proxy).map_err(|e| ConfigError(format!("`trusted_proxies[{i}]`: {e}")))?;
        }
        self.validate_redis()
    }

    fn validate_redis(&self) -> Result<(), ConfigError> {
        let redis = &self.broker.redis;
        if self.broker.kind != super::BrokerKind::Redis {
            return Ok(());
        }
        let fail = |m: String| Err(ConfigError(m));
        if redis.addresses.is_empty() {
            return fail("`broker.redis.addresses` is empty: give at least one \"host:port\"".into());
        }
        for address in &redis.addresses {
            let port = address
                .rsplit_once(':')
                .and_then(|(host, port)| (!host.is_empty()).then_some(port.parse::<u16>().ok()).flatten());
            if port.is_none() {
                return fail(format!(
                    "`broker.redis.addresses`: {address:?} is not \"host:port\" (e.g. \"127.0.0.1:6379\")"
                ));
            }
        }
        if redis.cluster && redis.db != 0 {
            return fail(
                "`broker.redis.db` must be 0 with `broker.redis.cluster = true`: a cluster has one database"
                    .into(),
            );
        }
        if redis.prefix.is_empty() || redis.prefix.contains(['{', '}']) {
            return fail(
                "`broker.redis.prefix` must be non-empty and without braces (they are hash tags)".into(),
            );
        }
        if redis.timeout.is_zero() || redis.stream_ttl.is_zero() {
            return fail("`broker.redis.timeout` and `broker.redis.stream_ttl` must be more than 0".into());
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
        redact(&mut shown.broker.redis.password);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print: {e}"))
    }
}
