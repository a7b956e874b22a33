//! Presence in Redis, across nodes: a hash per channel (client id → info) and a sorted set
//! of expiries, so the entries of a node that died without cleaning up go away by
//! themselves. Each node refreshes the entries of its own clients well before they expire.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use peregrine_wire::ClientInfo;
use peregrine_wire::protobuf::{client_info_from_bytes, client_info_to_bytes};
use redis::Value;

use super::PresenceStore;
use crate::broker::redis::{Backend, scripts, unix_millis};
use crate::broker::{BrokerError, BrokerFuture};

/// How long an entry lives without a refresh.
pub const PRESENCE_TTL: Duration = Duration::from_secs(60);

/// How often a node refreshes its clients' entries.
const REFRESH: Duration = Duration::from_secs(20);

/// The Redis presence store. Built by [`crate::broker::redis::connect`] beside the broker.
pub struct RedisPresence {
    backend: Arc<Backend>,
    /// This node's entries (channel → client → info), refreshed every [`REFRESH`].
    local: Mutex<HashMap<String, HashMap<String, ClientInfo>>>,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence").finish_non_exhaustive()
    }
}

impl RedisPresence {
    pub(crate) fn new(backend: Arc<Backend>) -> Arc<RedisPresence> {
        let presence = Arc::new(RedisPresence { backend, local: Mutex::default() });
        tokio::spawn(refresh(Arc::downgrade(&presence)));
        presence
    }

    fn local(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, ClientInfo>>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn write(&self, channel: &str, info: &ClientInfo) -> Result<(), BrokerError> {
        let keys = self.backend.keys();
        let expires = unix_millis() + PRESENCE_TTL.as_millis() as u64;
        let mut invocation = scripts::PRESENCE_ADD_SCRIPT.prepare_invoke();
        invocation
            .key(keys.presence(channel))
            .key(keys.presence_expiry(channel))
            .arg(&info.client)
            .arg(client_info_to_bytes(info))
            .arg(expires)
            .arg(PRESENCE_TTL.as_millis() as u64 * 2);
        let _: Value = self.backend.run(self.backend.server(channel), &invocation).await?;
        Ok(())
    }
}

/// Rewrites this node's entries every [`REFRESH`] until the store is dropped.
async fn refresh(presence: Weak<RedisPresence>) {
    loop {
        tokio::time::sleep(REFRESH).await;
        let Some(presence) = presence.upgrade() else { return };
        let entries: Vec<(String, ClientInfo)> = presence
            .local()
            .iter()
            .flat_map(|(channel, clients)| clients.values().map(move |i| (channel.clone(), i.clone())))
            .collect();
        // Concurrent writes share the multiplexed connection: pipelined, not one round trip each.
        let writes = entries.iter().map(|(channel, info)| presence.write(channel, info));
        for result in futures_util::future::join_all(writes).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "presence refresh failed");
                break;
            }
        }
    }
}

impl PresenceStore for RedisPresence {
    fn add<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            self.write(channel, &info).await?;
            self.local().entry(channel.to_owned()).or_default().insert(info.client.clone(), info);
            Ok(())
        })
    }

    fn remove<'a>(&'a self, channel: &'a str, client: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            {
                let mut local = self.local();
                if let Some(clients) = local.get_mut(channel) {
                    clients.remove(client);
                    if clients.is_empty() {
                        local.remove(channel);
                    }
                }
            }
            let keys = self.backend.keys();
            let mut invocation = scripts::PRESENCE_REMOVE_SCRIPT.prepare_invoke();
            invocation.key(keys.presence(channel)).key(keys.presence_expiry(channel)).arg(client);
            let _: Value = self.backend.run(self.backend.server(channel), &invocation).await?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, channel: &'a str) -> BrokerFuture<'a, BTreeMap<String, ClientInfo>> {
        Box::pin(async move {
            let keys = self.backend.keys();
            let mut invocation = scripts::PRESENCE_GET_SCRIPT.prepare_invoke();
            invocation.key(keys.presence(channel)).key(keys.presence_expiry(channel));
            let reply: Value = self.backend.run(self.backend.server(channel), &invocation).await?;
            let pairs: Vec<(Value, Value)> = match reply {
                Value::Map(pairs) => pairs,
                Value::Array(items) => {
                    let mut items = items.into_iter();
                    std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
                }
                _ => Vec::new(),
            };
            let mut present = BTreeMap::new();
            for (client, info) in pairs {
                let (Value::BulkString(client), Value::BulkString(info)) = (client, info) else { continue };
                let Ok(info) = client_info_from_bytes(&info) else { continue };
                present.insert(String::from_utf8_lossy(&client).into_owned(), info);
            }
            Ok(present)
        })
    }
}
