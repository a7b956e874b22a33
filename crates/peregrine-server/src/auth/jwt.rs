//! JWT connection and subscription tokens: HS256 with a shared secret, RS256 and ES256 with
//! a public key (through the `jsonwebtoken` crate).
//!
//! The algorithm named in a token's header picks the key: an HS256 token is checked only
//! against the HMAC secret, never against a configured public key, which rules out the
//! "alg confusion" attack (an HS256 token signed with the server's public RSA key).
//! `exp` is optional (a token without it does not expire) and checked with no leeway.
//!
//! Tokens never appear in errors, `Debug` output or logs.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, errors::ErrorKind};
use peregrine_wire::codes::{disconnect as dc, error as err};
use serde::Deserialize;

use crate::config::TokenConfig;

/// What a connection token says.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ConnectionClaims {
    /// The user id (`sub`); empty is anonymous.
    #[serde(default, rename = "sub")]
    pub user: String,
    /// Unix seconds after which the token (and the connection) expires (`exp`).
    #[serde(default, rename = "exp")]
    pub expires: Option<u64>,
    /// Channels the server subscribes the connection to at connect.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Information about the user, shown to others in presence and join/leave.
    #[serde(default)]
    pub info: Option<serde_json::Value>,
}

/// What a subscription token (for a private channel) says.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SubscriptionClaims {
    /// The user the token was made for (`sub`): must be the connection's user.
    #[serde(default, rename = "sub")]
    pub user: String,
    /// The channel the token opens.
    pub channel: String,
    /// Expiry (`exp`), unix seconds.
    #[serde(default, rename = "exp")]
    pub expires: Option<u64>,
    /// Channel-specific information about the user, shown in presence and join/leave.
    #[serde(default)]
    pub info: Option<serde_json::Value>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// No token was given where one is required.
    Missing,
    /// The token's `exp` has passed.
    Expired,
    /// The signature does not match the configured key.
    BadSignature,
    /// The token is not a well-formed JWT, or its claims are malformed.
    Malformed(String),
    /// The header names an algorithm this server has no key for.
    UnsupportedAlgorithm(String),
    /// A subscription token for another channel.
    WrongChannel,
    /// A subscription token for another user.
    WrongUser,
    /// No key is configured at all.
    NoKeyConfigured,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Missing => f.write_str("a token is required"),
            TokenError::Expired => f.write_str("the token has expired"),
            TokenError::BadSignature => f.write_str("the token's signature is invalid"),
            TokenError::Malformed(why) => write!(f, "the token is malformed: {why}"),
            TokenError::UnsupportedAlgorithm(alg) => {
                write!(f, "tokens signed with {alg} are not accepted by this server")
            }
            TokenError::WrongChannel => f.write_str("the subscription token is for another channel"),
            TokenError::WrongUser => f.write_str("the subscription token is for another user"),
            TokenError::NoKeyConfigured => f.write_str("this server has no token key configured"),
        }
    }
}

impl std::error::Error for TokenError {}

impl TokenError {
    /// The reply error code: 109 (token expired) or 101 (unauthorized).
    pub fn error_code(&self) -> u32 {
        if *self == TokenError::Expired { err::TOKEN_EXPIRED } else { err::UNAUTHORIZED }
    }

    /// The disconnect code for a refused connection token: 3005 (expired: reconnect with a
    /// fresh token) or 3500 (invalid: terminal).
    pub fn disconnect_code(&self) -> u16 {
        if *self == TokenError::Expired { dc::EXPIRED } else { dc::INVALID_TOKEN }
    }
}

/// Checks tokens against the configured keys.
#[derive(Clone)]
pub struct TokenVerifier {
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    ecdsa: Option<DecodingKey>,
    audience: Option<String>,
    issuer: Option<String>,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("hs256", &self.hmac.is_some())
            .field("rs256", &self.rsa.is_some())
            .field("es256", &self.ecdsa.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// Loads the keys of `config`; an error names the key and the file.
    pub fn from_config(config: &TokenConfig) -> Result<TokenVerifier, String> {
        let pem =
            |key: &str, path: &Option<std::path::PathBuf>, parse: fn(&[u8]) -> _| -> Result<_, String> {
                let Some(path) = path else { return Ok(None) };
                let bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read `token.{key}` {}: {e}", path.display()))?;
                let key_result: jsonwebtoken::errors::Result<DecodingKey> = parse(&bytes);
                key_result.map(Some).map_err(|e| {
                    format!("`token.{key}` {} is not a PEM public key of the right type: {e}", path.display())
                })
            };
        Ok(TokenVerifier {
            hmac: config.hmac_secret.as_ref().map(|s| DecodingKey::from_secret(s.expose().as_bytes())),
            rsa: pem("rsa_public_key", &config.rsa_public_key, DecodingKey::from_rsa_pem)?,
            ecdsa: pem("ecdsa_public_key", &config.ecdsa_public_key, DecodingKey::from_ec_pem)?,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
        })
    }

    /// Whether any key is configured.
    pub fn has_key(&self) -> bool {
        self.hmac.is_some() || self.rsa.is_some() || self.ecdsa.is_some()
    }

    fn check<T: serde::de::DeserializeOwned>(&self, token: &str) -> Result<T, TokenError> {
        self.check_expiring(token, true)
    }

    fn check_expiring<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        validate_exp: bool,
    ) -> Result<T, TokenError> {
        if !self.has_key() {
            return Err(TokenError::NoKeyConfigured);
        }
        let header = decode_header(token).map_err(|_| TokenError::Malformed("not a JWT".into()))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hmac.as_ref(),
            Algorithm::RS256 => self.rsa.as_ref(),
            Algorithm::ES256 => self.ecdsa.as_ref(),
            _ => None,
        };
        let key = key.ok_or_else(|| TokenError::UnsupportedAlgorithm(format!("{:?}", header.alg)))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        validation.validate_exp = validate_exp;
        validation.set_required_spec_claims::<&str>(&[]);
        validation.validate_aud = self.audience.is_some();
        if let Some(aud) = &self.audience {
            validation.set_audience(&[aud]);
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        decode::<T>(token, key, &validation).map(|data| data.claims).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAudience => TokenError::Malformed("wrong audience (`aud`)".into()),
            ErrorKind::InvalidIssuer => TokenError::Malformed("wrong issuer (`iss`)".into()),
            ErrorKind::Json(e) => TokenError::Malformed(format!("claims: {e}")),
            _ => TokenError::Malformed("undecodable".into()),
        })
    }

    /// Checks a connection token.
    ///
    /// ```
    /// use peregrine_server::config::{Secret, TokenConfig};
    /// use peregrine_server::auth::{TokenError, TokenVerifier};
    /// let config = TokenConfig { hmac_secret: Some(Secret::new("s3cret")), ..Default::default() };
    /// let verifier = TokenVerifier::from_config(&config).unwrap();
    /// let token = jsonwebtoken::encode(
    ///     &jsonwebtoken::Header::default(),
    ///     &serde_json::json!({"sub": "42"}),
    ///     &jsonwebtoken::EncodingKey::from_secret(b"s3cret"),
    /// ).unwrap();
    /// assert_eq!(verifier.verify_connection(&token).unwrap().user, "42");
    /// assert_eq!(verifier.verify_connection("nope").unwrap_err(), TokenError::Malformed("not a JWT".into()));
    /// ```
    pub fn verify_connection(&self, token: &str) -> Result<ConnectionClaims, TokenError> {
        self.check(token)
    }

    /// The user a connection token was made for, its signature checked but not its expiry:
    /// it tells whose a request is (an HTTP transport's command for a session whose token
    /// may have expired meanwhile, the `refresh` with the new one being that command).
    pub fn user_of(&self, token: &str) -> Result<String, TokenError> {
        self.check_expiring::<ConnectionClaims>(token, false).map(|claims| claims.user)
    }

    /// Checks a subscription token for `channel`, made for `user`.
    pub fn verify_subscription(
        &self,
        token: &str,
        user: &str,
        channel: &str,
    ) -> Result<SubscriptionClaims, TokenError> {
        let claims: SubscriptionClaims = self.check(token)?;
        if claims.channel != channel {
            return Err(TokenError::WrongChannel);
        }
        if claims.user != user {
            return Err(TokenError::WrongUser);
        }
        Ok(claims)
    }
}
