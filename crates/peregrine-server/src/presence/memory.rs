//! In-memory [`PresenceStore`] for a single node.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use peregrine_wire::ClientInfo;

use super::PresenceStore;
use crate::broker::BrokerFuture;

/// Presence kept in this process. A std mutex is right: it is never held across an `.await`.
#[derive(Debug, Default)]
pub struct MemoryPresence {
    channels: Mutex<HashMap<String, BTreeMap<String, ClientInfo>>>,
}

impl MemoryPresence {
    /// Empty presence.
    pub fn new() -> MemoryPresence {
        MemoryPresence::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, BTreeMap<String, ClientInfo>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PresenceStore for MemoryPresence {
    fn add<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            self.lock().entry(channel.to_owned()).or_default().insert(info.client.clone(), info);
            Ok(())
        })
    }

    fn remove<'a>(&'a self, channel: &'a str, client: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let mut channels = self.lock();
            if let Some(clients) = channels.get_mut(channel) {
                clients.remove(client);
                if clients.is_empty() {
                    channels.remove(channel);
                }
            }
            Ok(())
        })
    }

    fn get<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, BTreeMap<String, ClientInfo>> {
        Box::pin(async move { Ok(self.lock().get(channel).cloned().unwrap_or_default()) })
    }
}
