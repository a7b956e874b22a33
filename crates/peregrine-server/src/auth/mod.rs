//! Who may connect and subscribe: JWT connection and subscription tokens ([`jwt`]) and the
//! browser Origin allowlist ([`origin`]).

pub mod jwt;
pub mod origin;

pub use jwt::{ConnectionClaims, SubscriptionClaims, TokenError, TokenVerifier};
pub use origin::OriginPolicy;
