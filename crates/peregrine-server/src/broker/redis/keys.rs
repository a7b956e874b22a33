//! Key and Pub/Sub channel names, and which Redis server holds a channel.
//!
//! Every key of a channel carries the channel name as a hash tag (`{chat:lobby}`), so in a
//! Redis Cluster the channel's meta, history, idempotency keys, presence and sharded Pub/Sub
//! channel all live in one slot, as one script touching them requires. Should a channel
//! name itself contain `}`, the tag Redis sees is cut there, but it is cut the same way in
//! every key of that channel, which is all that matters.

/// Names of the keys of one deployment (one prefix).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.to_owned() }
    }

    /// Hash with the stream's epoch (`e`) and top offset (`t`).
    pub(crate) fn meta(&self, channel: &str) -> String {
        format!("{}:{{{channel}}}:meta", self.prefix)
    }

    /// Redis Stream of the history: entry id `<offset>-1`, fields `d` (the publication) and
    /// `x` (expiry in ms since the epoch, 0: none).
    pub(crate) fn history(&self, channel: &str) -> String {
        format!("{}:{{{channel}}}:history", self.prefix)
    }

    /// One idempotency key of a channel (`key` is already scoped by user).
    pub(crate) fn idempotency(&self, channel: &str, key: &str) -> String {
        format!("{}:{{{channel}}}:idem:{key}", self.prefix)
    }

    /// Hash client id → client info of who is present.
    pub(crate) fn presence(&self, channel: &str) -> String {
        format!("{}:{{{channel}}}:presence", self.prefix)
    }

    /// Sorted set client id → expiry (ms) of the presence entries.
    pub(crate) fn presence_expiry(&self, channel: &str) -> String {
        format!("{}:{{{channel}}}:presence:exp", self.prefix)
    }

    /// The Pub/Sub channel carrying the channel's publications and join/leave events.
    pub(crate) fn pubsub(&self, channel: &str) -> String {
        format!("{}:{{{channel}}}:pub", self.prefix)
    }

    /// The channel a Pub/Sub channel name carries, if it is one of ours.
    pub(crate) fn channel_of<'a>(&self, pubsub: &'a str) -> Option<&'a str> {
        pubsub.strip_prefix(self.prefix.as_str())?.strip_prefix(":{")?.strip_suffix("}:pub")
    }

    /// The Pub/Sub channel of the messages relayed to one node (by its id). Hash-tagged by
    /// node, so in a cluster it has a slot of its own.
    pub(crate) fn relay(&self, node: &str) -> String {
        format!("{}:{{relay:{node}}}", self.prefix)
    }

    /// Hash node id → node info (JSON), and the sorted set node id → expiry (ms).
    pub(crate) fn nodes(&self) -> (String, String) {
        (format!("{}:{{nodes}}:info", self.prefix), format!("{}:{{nodes}}:expiry", self.prefix))
    }
}

/// The index of the server (of `servers`, by address) that holds `channel`: rendezvous
/// hashing, so adding a server moves only the channels it wins, and every node computes the
/// same answer from the same address list whatever its order.
pub(crate) fn server_for(channel: &str, servers: &[String]) -> usize {
    let score = |server: &String| mix(fnv1a(server.as_bytes(), fnv1a(channel.as_bytes(), FNV_OFFSET)));
    (0..servers.len()).max_by_key(|&i| (score(&servers[i]), std::cmp::Reverse(i))).unwrap_or(0)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a: stable across builds and platforms, unlike `std`'s hasher, which nodes of
/// different versions must agree on.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// SplitMix64's finalizer: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubsub_names_round_trip() {
        let keys = Keys::new("peregrine");
        for channel in ["chat", "chat:lobby", "a}b", ""] {
            assert_eq!(keys.channel_of(&keys.pubsub(channel)), Some(channel));
        }
        assert_eq!(keys.channel_of("other:{chat}:pub"), None);
    }

    #[test]
    fn channels_spread_over_servers_and_stay_put_when_one_is_added() {
        let two: Vec<String> = vec!["10.0.0.1:6379".into(), "10.0.0.2:6379".into()];
        let three: Vec<String> = [two.clone(), vec!["10.0.0.3:6379".into()]].concat();
        let mut counts = [0usize; 2];
        let mut moved = 0;
        for i in 0..3000 {
            let channel = format!("chan:{i}");
            let before = server_for(&channel, &two);
            counts[before] += 1;
            let after = server_for(&channel, &three);
            if after != before {
                assert_eq!(after, 2, "a channel only moves to the new server");
                moved += 1;
            }
        }
        assert!(counts.iter().all(|&c| c > 1200), "spread: {counts:?}");
        assert!((700..1300).contains(&moved), "about a third moves: {moved}");
        let reversed: Vec<String> = two.iter().rev().cloned().collect();
        assert_eq!(two[server_for("x", &two)], reversed[server_for("x", &reversed)]);
    }
}
