//! Extensions (RFC 6455 §9): permessage-deflate (RFC 7692), its
//! configuration and its negotiation in the opening handshake.
//!
//! Negotiation is pure: the server picks the first offer it can honour
//! ([`DeflateConfig::negotiate`]) and the client checks the answer against
//! what it offered ([`DeflateConfig::check_response`]). Both produce
//! [`DeflateParams`], from which a [`Connection`](crate::Connection) is built
//! with [`Connection::with_deflate`](crate::Connection::with_deflate).

mod deflate;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) use deflate::Deflate;

use crate::connection::Role;
use crate::handshake::{ExtensionOffer, HandshakeError};

/// The extension token.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// What we want from permessage-deflate, and how we compress.
///
/// The defaults keep context takeover (the best ratio for streams of small,
/// similar JSON messages) and 15-bit windows. Each connection with context
/// takeover holds its own compressor (about 371 KiB with zlib-rs, 247 KiB with
/// a 10-bit window) and decompressor (about 47 KiB), allocated on first use. Servers bound the total
/// with [`DeflateConfig::max_takeover_connections`]: past it, new connections
/// negotiate no context takeover, whose contexts are reset after every message
/// and shared by all connections of a thread. docs/benchmarks.md has figures.
///
/// ```
/// use peregrine_proto::extension::DeflateConfig;
/// let server = DeflateConfig::default().level(3).threshold(256).max_takeover_connections(1000);
/// assert_eq!(server.offer().to_string(), "permessage-deflate; client_max_window_bits");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct DeflateConfig {
    pub(crate) level: u32,
    pub(crate) threshold: usize,
    pub(crate) server_no_context_takeover: bool,
    pub(crate) client_no_context_takeover: bool,
    pub(crate) server_max_window_bits: u8,
    pub(crate) client_max_window_bits: u8,
    takeover_budget: Option<Arc<TakeoverBudget>>,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            level: 6,
            threshold: 64,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            takeover_budget: None,
        }
    }
}

impl DeflateConfig {
    /// Compression level, 0 (store) to 9 (smallest); default 6.
    pub fn level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }

    /// Messages shorter than this are sent uncompressed (default 64 bytes):
    /// compressing them costs CPU and saves nothing.
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// The server resets its compressor after every message. A server
    /// always answers with it when this is set; a client requests it.
    pub fn server_no_context_takeover(mut self, on: bool) -> Self {
        self.server_no_context_takeover = on;
        self
    }

    /// The client resets its compressor after every message. A server
    /// always asks for it when this is set; a client declares it.
    pub fn client_no_context_takeover(mut self, on: bool) -> Self {
        self.client_no_context_takeover = on;
        self
    }

    /// Largest LZ77 window (8-15 bits) for what the server compresses.
    pub fn server_max_window_bits(mut self, bits: u8) -> Self {
        self.server_max_window_bits = bits.clamp(8, 15);
        self
    }

    /// Largest LZ77 window (8-15 bits) for what the client compresses.
    pub fn client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = bits.clamp(8, 15);
        self
    }

    /// Server policy: at most `n` live connections (across every clone of
    /// this config) keep compression contexts between messages; later ones
    /// negotiate no context takeover on both sides, so their memory is shared.
    pub fn max_takeover_connections(mut self, n: usize) -> Self {
        self.takeover_budget = Some(Arc::new(TakeoverBudget { limit: n, live: AtomicUsize::new(0) }));
        self
    }

    /// The client's offer, for `Sec-WebSocket-Extensions`.
    ///
    /// `client_max_window_bits` is always offered (without a value unless a
    /// smaller window is configured) so the server may shrink our window.
    pub fn offer(&self) -> ExtensionOffer {
        let mut offer = ExtensionOffer::new(PERMESSAGE_DEFLATE);
        if self.server_no_context_takeover {
            offer = offer.with_flag("server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            offer = offer.with_flag("client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            offer = offer.with_param("server_max_window_bits", self.server_max_window_bits.to_string());
        }
        offer = if self.client_max_window_bits < 15 {
            offer.with_param("client_max_window_bits", self.client_max_window_bits.to_string())
        } else {
            offer.with_flag("client_max_window_bits")
        };
        offer
    }

    /// Server side: answers the first permessage-deflate offer that is valid
    /// (offers with unknown, repeated or malformed parameters are declined, as
    /// RFC 7692 §5 requires). Returns the response to send and the parameters
    /// in force, or `None` to go without compression.
    #[must_use]
    pub fn negotiate(&self, offers: &[ExtensionOffer]) -> Option<(ExtensionOffer, DeflateParams)> {
        let offer = offers
            .iter()
            .filter(|o| o.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
            .find_map(|o| OfferParams::parse(o).ok())?;
        let slot = match &self.takeover_budget {
            Some(budget) => budget.acquire(),
            None => None,
        };
        let over_budget = self.takeover_budget.is_some() && slot.is_none();
        let server_no_takeover =
            offer.server_no_context_takeover || self.server_no_context_takeover || over_budget;
        let client_no_takeover =
            offer.client_no_context_takeover || self.client_no_context_takeover || over_budget;
        let server_bits = offer.server_max_window_bits.unwrap_or(15).min(self.server_max_window_bits);
        // We may only name client_max_window_bits if the client offered it.
        let client_bits = match offer.client_max_window_bits {
            Some(offered) => offered.unwrap_or(15).min(self.client_max_window_bits),
            None => 15,
        };
        let mut response = ExtensionOffer::new(PERMESSAGE_DEFLATE);
        if server_no_takeover {
            response = response.with_flag("server_no_context_takeover");
        }
        if client_no_takeover {
            response = response.with_flag("client_no_context_takeover");
        }
        if offer.server_max_window_bits.is_some() || server_bits < 15 {
            response = response.with_param("server_max_window_bits", server_bits.to_string());
        }
        if offer.client_max_window_bits.is_some() && client_bits < 15 {
            response = response.with_param("client_max_window_bits", client_bits.to_string());
        }
        let slot = if server_no_takeover && client_no_takeover { None } else { slot };
        let params = DeflateParams {
            server_no_context_takeover: server_no_takeover,
            client_no_context_takeover: client_no_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
            level: self.level,
            threshold: self.threshold,
            _slot: slot.map(Arc::new),
        };
        Some((response, params))
    }

    /// Client side: checks the server's answer. `Ok(None)` when the server
    /// did not accept permessage-deflate; an error when it answered with
    /// something we did not offer or RFC 7692 forbids (the connection must
    /// then fail).
    pub fn check_response(
        &self,
        accepted: &[ExtensionOffer],
    ) -> Result<Option<DeflateParams>, HandshakeError> {
        let invalid = |problem: String| HandshakeError::InvalidExtensionResponse(problem);
        let mut found = None;
        for extension in accepted {
            if !extension.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
                return Err(HandshakeError::UnofferedExtension(extension.name.clone()));
            }
            if found.is_some() {
                return Err(invalid("permessage-deflate accepted twice".into()));
            }
            found = Some(OfferParams::parse(extension).map_err(invalid)?);
        }
        let Some(answer) = found else { return Ok(None) };
        let server_bits = answer.server_max_window_bits.unwrap_or(15);
        if server_bits > self.server_max_window_bits {
            return Err(invalid(format!(
                "server_max_window_bits={server_bits} is larger than the {} offered",
                self.server_max_window_bits
            )));
        }
        if self.server_no_context_takeover && !answer.server_no_context_takeover {
            return Err(invalid("server_no_context_takeover was requested but not confirmed".into()));
        }
        let client_bits = match answer.client_max_window_bits {
            None => self.client_max_window_bits,
            Some(None) => return Err(invalid("client_max_window_bits needs a value in a response".into())),
            Some(Some(bits)) if bits > self.client_max_window_bits => {
                return Err(invalid(format!(
                    "client_max_window_bits={bits} is larger than the {} offered",
                    self.client_max_window_bits
                )));
            }
            Some(Some(bits)) => bits,
        };
        Ok(Some(DeflateParams {
            server_no_context_takeover: answer.server_no_context_takeover,
            client_no_context_takeover: answer.client_no_context_takeover || self.client_no_context_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
            level: self.level,
            threshold: self.threshold,
            _slot: None,
        }))
    }
}

/// The parameters in force on one connection once permessage-deflate is
/// negotiated.
#[derive(Debug, Clone)]
pub struct DeflateParams {
    /// The server resets its compression context after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compression context after each message.
    pub client_no_context_takeover: bool,
    /// The server compresses with at most this window (bits).
    pub server_max_window_bits: u8,
    /// The client compresses with at most this window (bits).
    pub client_max_window_bits: u8,
    pub(crate) level: u32,
    pub(crate) threshold: usize,
    /// Holds a place in the server's takeover budget while the connection lives.
    _slot: Option<Arc<BudgetSlot>>,
}

impl DeflateParams {
    /// `(no_context_takeover, max_window_bits)` for what `role` compresses.
    pub(crate) fn outgoing(&self, role: Role) -> (bool, u8) {
        match role {
            Role::Server => (self.server_no_context_takeover, self.server_max_window_bits),
            Role::Client => (self.client_no_context_takeover, self.client_max_window_bits),
        }
    }

    /// `(no_context_takeover, max_window_bits)` for what `role` receives.
    pub(crate) fn incoming(&self, role: Role) -> (bool, u8) {
        match role {
            Role::Server => (self.client_no_context_takeover, self.client_max_window_bits),
            Role::Client => (self.server_no_context_takeover, self.server_max_window_bits),
        }
    }
}

/// The parameters of one offer or answer, validated (RFC 7692 §7.1).
#[derive(Debug, Default)]
struct OfferParams {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value.
    client_max_window_bits: Option<Option<u8>>,
}

impl OfferParams {
    fn parse(offer: &ExtensionOffer) -> Result<Self, String> {
        let mut params = Self::default();
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in &offer.params {
            let lower = name.to_ascii_lowercase();
            if seen.contains(&lower) {
                return Err(format!("parameter {name} is repeated"));
            }
            seen.push(lower.clone());
            match (lower.as_str(), value.as_deref()) {
                ("server_no_context_takeover", None) => params.server_no_context_takeover = true,
                ("client_no_context_takeover", None) => params.client_no_context_takeover = true,
                ("server_max_window_bits", Some(v)) => params.server_max_window_bits = Some(window_bits(v)?),
                ("client_max_window_bits", None) => params.client_max_window_bits = Some(None),
                ("client_max_window_bits", Some(v)) => {
                    params.client_max_window_bits = Some(Some(window_bits(v)?))
                }
                (_, _) => return Err(format!("parameter {name} is unknown or has a wrong value")),
            }
        }
        Ok(params)
    }
}

/// A window size: a decimal 8 to 15 without leading zeros.
fn window_bits(value: &str) -> Result<u8, String> {
    match value {
        "8" | "9" | "10" | "11" | "12" | "13" | "14" | "15" => {
            value.parse().map_err(|_| format!("window bits {value:?} is not 8-15"))
        }
        _ => Err(format!("window bits {value:?} is not 8-15")),
    }
}

#[derive(Debug)]
struct TakeoverBudget {
    limit: usize,
    live: AtomicUsize,
}

impl TakeoverBudget {
    fn acquire(self: &Arc<Self>) -> Option<BudgetSlot> {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.limit).then_some(n + 1))
            .ok()
            .map(|_| BudgetSlot(self.clone()))
    }
}

#[derive(Debug)]
struct BudgetSlot(Arc<TakeoverBudget>);

impl Drop for BudgetSlot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
