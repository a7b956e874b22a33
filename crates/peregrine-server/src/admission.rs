//! Who may open a connection now: the limits checked at the WebSocket handshake, before a
//! session exists, so a flood or a reconnect storm costs the node little.
//!
//! * **Handshakes in progress** (`client.max_pending_handshakes`): from the upgrade until the
//!   session's `connect` is answered (token checked, subscriptions recovered). Past the limit
//!   a client gets `503` with `Retry-After`, at once, instead of every client waiting longer
//!   in a queue that only grows: the node admits clients at the rate it can serve them.
//! * **Per client address** (`client.max_connections_per_address`,
//!   `client.handshake_rate_per_address` / `_burst_`): `429` with the reason, and
//!   `Retry-After` for the rate. The address is the TCP peer's, or the one a trusted proxy
//!   (`trusted_proxies`) names in `X-Forwarded-For` / `X-Real-IP`.
//!
//! Memory stays bounded: an address is forgotten once it has no connection and its bucket
//! is full again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipnet::IpNet;
use tokio::time::Instant;

use crate::config::ClientConfig;
use crate::rate_limit::TokenBucket;

/// Forget addresses idle this long (their bucket is full again well before).
const IDLE: Duration = Duration::from_secs(60);

/// Sweep idle addresses when the map has grown by this many since the last sweep.
const SWEEP_EVERY: usize = 4096;

/// Why a handshake is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status: 503 (the node is busy) or 429 (this address is over its limit).
    pub status: u16,
    /// For the body and the log.
    pub reason: String,
    /// When to try again, if it is a matter of time.
    pub retry_after: Option<Duration>,
    /// The `handshake_rejections` label.
    pub metric: &'static str,
}

#[derive(Debug)]
struct Address {
    connections: usize,
    bucket: Option<TokenBucket>,
    last_seen: Instant,
}

/// The node's admission state. Share it as `Arc<Admission>`.
#[derive(Debug, Default)]
pub struct Admission {
    addresses: Mutex<HashMap<IpAddr, Address>>,
    swept_at_len: AtomicUsize,
    pending: AtomicUsize,
}

/// An admitted connection: holds its address's connection slot for its life, and a
/// handshake slot until [`connected`](Ticket::connected).
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    address: Option<IpAddr>,
    pending: bool,
}

impl Admission {
    /// No connection yet.
    pub fn new() -> Arc<Admission> {
        Arc::new(Admission::default())
    }

    fn addresses(&self) -> MutexGuard<'_, HashMap<IpAddr, Address>> {
        self.addresses.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handshakes admitted whose `connect` is not answered yet.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Admits a handshake from `address` under `limits`, or says why not.
    pub fn admit(
        self: &Arc<Self>,
        address: Option<IpAddr>,
        limits: &ClientConfig,
    ) -> Result<Ticket, Refusal> {
        let max_pending = limits.max_pending_handshakes;
        if max_pending > 0 && self.pending.fetch_add(1, Ordering::AcqRel) >= max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal {
                status: 503,
                reason: format!("{max_pending} handshakes in progress on this node: retry in a moment"),
                retry_after: Some(Duration::from_secs(1)),
                metric: "busy",
            });
        }
        if max_pending == 0 {
            self.pending.fetch_add(1, Ordering::AcqRel);
        }
        // Until the address is admitted too, the ticket only holds the handshake slot
        // (dropping it on a refusal below gives the slot back).
        let mut ticket = Ticket { admission: Arc::clone(self), address: None, pending: true };
        let Some(ip) = address else { return Ok(ticket) };
        let per_address = limits.max_connections_per_address;
        let rate = limits.handshake_rate_per_address;
        if per_address == 0 && rate <= 0.0 {
            return Ok(ticket);
        }
        let now = Instant::now();
        let mut addresses = self.addresses();
        self.sweep(&mut addresses, now);
        let entry = addresses.entry(ip).or_insert_with(|| Address {
            connections: 0,
            bucket: (rate > 0.0).then(|| TokenBucket::new(rate, limits.handshake_burst_per_address.max(1))),
            last_seen: now,
        });
        entry.last_seen = now;
        if per_address > 0 && entry.connections >= per_address {
            return Err(Refusal {
                status: 429,
                reason: format!(
                    "{per_address} connections from {ip} already (client.max_connections_per_address)"
                ),
                retry_after: None,
                metric: "address_connections",
            });
        }
        if let Some(bucket) = &mut entry.bucket
            && !bucket.try_take(now)
        {
            return Err(Refusal {
                status: 429,
                reason: format!(
                    "too many handshakes from {ip}: at most {rate}/s (client.handshake_rate_per_address)"
                ),
                retry_after: Some(bucket.wait().max(Duration::from_secs(1))),
                metric: "address_rate",
            });
        }
        entry.connections += 1;
        drop(addresses);
        ticket.address = Some(ip);
        Ok(ticket)
    }

    /// Forgets addresses with no connection, unseen for [`IDLE`], every [`SWEEP_EVERY`]
    /// new addresses: the map is bounded by the addresses seen in a minute.
    fn sweep(&self, addresses: &mut HashMap<IpAddr, Address>, now: Instant) {
        let last = self.swept_at_len.load(Ordering::Relaxed);
        if addresses.len() < last + SWEEP_EVERY {
            return;
        }
        addresses.retain(|_, a| a.connections > 0 || now.saturating_duration_since(a.last_seen) < IDLE);
        self.swept_at_len.store(addresses.len(), Ordering::Relaxed);
    }

    /// Addresses remembered (for tests and metrics).
    pub fn addresses_tracked(&self) -> usize {
        self.addresses().len()
    }
}

impl Ticket {
    /// The session answered `connect`: the handshake slot is free for the next client.
    pub fn connected(&mut self) {
        if std::mem::take(&mut self.pending) {
            self.admission.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.connected();
        if let Some(ip) = self.address {
            let mut addresses = self.admission.addresses();
            if let Some(a) = addresses.get_mut(&ip) {
                a.connections = a.connections.saturating_sub(1);
            }
        }
    }
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the last
/// address in `X-Forwarded-For` (the one the proxy appended) or `X-Real-IP`.
pub fn client_address(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    real_ip: Option<&str>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.iter().any(|net| net.contains(&peer) || mapped_v4(peer).is_some_and(|v4| net.contains(&v4))) {
        return Some(peer);
    }
    let forwarded = forwarded_for.and_then(|v| v.rsplit(',').next()).map(str::trim);
    forwarded.or(real_ip.map(str::trim)).and_then(|a| a.parse().ok()).or(Some(peer))
}

/// An IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`) as IPv4.
fn mapped_v4(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_network;

    fn limits(per_address: usize, rate: f64, pending: usize) -> ClientConfig {
        ClientConfig {
            max_connections_per_address: per_address,
            handshake_rate_per_address: rate,
            handshake_burst_per_address: 2,
            max_pending_handshakes: pending,
            ..ClientConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn per_address_connections_rate_and_pending_handshakes() {
        let admission = Admission::new();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let l = limits(2, 1.0, 3);
        let mut a = admission.admit(Some(ip), &l).unwrap();
        let b = admission.admit(Some(ip), &l).unwrap();
        let refused = admission.admit(Some(ip), &l).unwrap_err();
        assert_eq!((refused.status, refused.metric), (429, "address_connections"), "{refused:?}");
        drop(b);
        tokio::time::advance(Duration::from_millis(10)).await;
        let refused = admission.admit(Some(ip), &l).unwrap_err();
        assert_eq!((refused.status, refused.metric), (429, "address_rate"), "burst of 2 spent: {refused:?}");
        assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        let _c = admission.admit(Some(ip), &l).unwrap();
        // Another address has its own limits; pending handshakes are the node's.
        assert_eq!(admission.pending(), 2);
        let _d = admission.admit(Some("10.9.9.9".parse().unwrap()), &l).unwrap();
        let busy = admission.admit(None, &l).unwrap_err();
        assert_eq!((busy.status, busy.metric), (503, "busy"));
        a.connected();
        assert_eq!(admission.pending(), 2);
        let _e = admission.admit(None, &l).unwrap();
    }

    #[tokio::test]
    async fn no_limits_in_development() {
        let admission = Admission::new();
        let l = limits(0, 0.0, 0);
        let tickets: Vec<_> =
            (0..100).map(|_| admission.admit(Some([127, 0, 0, 1].into()), &l).unwrap()).collect();
        assert_eq!(admission.addresses_tracked(), 0);
        drop(tickets);
        assert_eq!(admission.pending(), 0);
    }

    #[test]
    fn trusted_proxies_name_the_client() {
        let trusted = [parse_network("127.0.0.0/8").unwrap(), parse_network("::1").unwrap()];
        let proxy = Some("127.0.0.1".parse().unwrap());
        assert_eq!(
            client_address(proxy, Some("1.2.3.4, 5.6.7.8"), None, &trusted),
            Some("5.6.7.8".parse().unwrap()),
            "the address the proxy appended, not what the client claimed"
        );
        assert_eq!(client_address(proxy, None, Some("9.9.9.9"), &trusted), Some("9.9.9.9".parse().unwrap()));
        let stranger = Some("8.8.8.8".parse().unwrap());
        assert_eq!(client_address(stranger, Some("1.2.3.4"), None, &trusted), stranger, "untrusted peers");
        assert!(parse_network("10.0.0.0/33").is_err() && parse_network("nope").is_err());
        let mapped = Some("::ffff:127.0.0.1".parse().unwrap());
        assert_eq!(client_address(mapped, Some("5.6.7.8"), None, &trusted), Some("5.6.7.8".parse().unwrap()));
    }
}
