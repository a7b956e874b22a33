//! The Lua scripts: each runs atomically in Redis, which is what makes offsets, history and
//! delivery agree across nodes.

use std::sync::LazyLock;

use redis::Script;

/// Drops expired entries from the front of a history stream (each at most once, so the
/// cost is spread over the publishes that made them).
const TRIM_EXPIRED: &str = r"
local function trim_expired(history, now)
  while true do
    local first = redis.call('xrange', history, '-', '+', 'count', 1)
    if #first == 0 then return end
    local expiry = tonumber(first[1][2][4])
    if expiry == 0 or expiry > now then return end
    redis.call('xdel', history, first[1][1])
  end
end
local function now_ms()
  local t = redis.call('time')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The stream's epoch, creating the stream (epoch `fresh`, top 0, no history) if it has none:
-- a stream whose meta expired, or a Redis restarted without its data, starts a new epoch.
local function epoch_of(meta, history, fresh, ttl)
  local epoch = redis.call('hget', meta, 'e')
  if epoch then return epoch end
  redis.call('hset', meta, 'e', fresh, 't', 0)
  redis.call('pexpire', meta, ttl)
  redis.call('del', history)
  return fresh
end
";

/// One publish: epoch, next offset, idempotency key, history append, Pub/Sub message.
///
/// KEYS: meta, history, idempotency key. ARGV: publication (Protobuf, without offset and
/// epoch), history size, history TTL ms (0: none), idempotency window ms (0: no key), epoch
/// for a new stream, stream TTL ms, Pub/Sub channel, `publish` or `spublish`.
/// Returns `{epoch, offset, duplicate (0|1)}`.
///
/// The Pub/Sub message is `p<epoch>:<offset>:<publication>`: nodes learn the position without
/// decoding the publication first.
const PUBLISH: &str = r"
local meta, history, key = KEYS[1], KEYS[2], KEYS[3]
local size, history_ttl, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local epoch = epoch_of(meta, history, ARGV[5], ARGV[6])
if window > 0 then
  local seen = redis.call('get', key)
  if seen then return {epoch, tonumber(seen), 1} end
end
local offset = redis.call('hincrby', meta, 't', 1)
redis.call('pexpire', meta, ARGV[6])
if window > 0 then redis.call('set', key, offset, 'px', window) end
if size > 0 then
  local now = now_ms()
  trim_expired(history, now)
  local expiry = 0
  if history_ttl > 0 then expiry = now + history_ttl end
  redis.call('xadd', history, 'maxlen', size, offset .. '-1', 'd', ARGV[1], 'x', expiry)
  redis.call('pexpire', history, ARGV[6])
end
redis.call(ARGV[8], ARGV[7], 'p' .. epoch .. ':' .. offset .. ':' .. ARGV[1])
return {epoch, offset, 0}
";

/// One history read, with the stream's position, in one step.
///
/// KEYS: meta, history. ARGV: epoch for a new stream, stream TTL ms, the epoch of `since`
/// (empty: none), its offset, limit (-1: all), reverse (`1`|`0`).
/// Returns `{epoch, top, id, publication, id, publication, ...}`.
const HISTORY: &str = r"
local meta, history = KEYS[1], KEYS[2]
local epoch = epoch_of(meta, history, ARGV[1], ARGV[2])
local top = tonumber(redis.call('hget', meta, 't'))
local limit = tonumber(ARGV[5])
local out = {epoch, top}
if limit == 0 then return out end
trim_expired(history, now_ms())
local since = nil
if ARGV[3] == epoch then since = ARGV[4] end
local entries
if ARGV[6] == '1' then
  local upper = '+'
  if since then upper = '(' .. since .. '-1' end
  if limit > 0 then
    entries = redis.call('xrevrange', history, upper, '-', 'count', limit)
  else
    entries = redis.call('xrevrange', history, upper, '-')
  end
else
  local lower = '-'
  if since then lower = '(' .. since .. '-1' end
  if limit > 0 then
    entries = redis.call('xrange', history, lower, '+', 'count', limit)
  else
    entries = redis.call('xrange', history, lower, '+')
  end
end
for _, entry in ipairs(entries) do
  out[#out + 1] = entry[1]
  out[#out + 1] = entry[2][2]
end
return out
";

/// Presence add or refresh. KEYS: presence hash, expiry set. ARGV: client id, info, expiry
/// ms, key TTL ms.
const PRESENCE_ADD: &str = r"
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('zadd', KEYS[2], ARGV[3], ARGV[1])
redis.call('pexpire', KEYS[1], ARGV[4])
redis.call('pexpire', KEYS[2], ARGV[4])
return 1
";

/// Presence remove. KEYS: presence hash, expiry set. ARGV: client id.
const PRESENCE_REMOVE: &str = r"
redis.call('hdel', KEYS[1], ARGV[1])
redis.call('zrem', KEYS[2], ARGV[1])
return 1
";

/// Presence read, dropping expired entries (of a node that died). KEYS: presence hash,
/// expiry set. Returns `{client, info, ...}`.
const PRESENCE_GET: &str = r"
local now = now_ms()
local expired = redis.call('zrangebyscore', KEYS[2], '-inf', now)
for _, client in ipairs(expired) do
  redis.call('hdel', KEYS[1], client)
  redis.call('zrem', KEYS[2], client)
end
return redis.call('hgetall', KEYS[1])
";

/// Node announce. KEYS: info hash, expiry set. ARGV: node id, info JSON, expiry ms.
const NODE_ANNOUNCE: &str = r"
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('zadd', KEYS[2], ARGV[3], ARGV[1])
return 1
";

/// Live nodes, dropping expired ones. KEYS: info hash, expiry set. Returns the info JSONs.
const NODES: &str = r"
local now = now_ms()
for _, id in ipairs(redis.call('zrangebyscore', KEYS[2], '-inf', now)) do
  redis.call('hdel', KEYS[1], id)
  redis.call('zrem', KEYS[2], id)
end
return redis.call('hvals', KEYS[1])
";

fn with_helpers(body: &str) -> Script {
    Script::new(&format!("{TRIM_EXPIRED}\n{body}"))
}

pub(crate) static PUBLISH_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_helpers(PUBLISH));
pub(crate) static HISTORY_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_helpers(HISTORY));
pub(crate) static PRESENCE_ADD_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PRESENCE_ADD));
pub(crate) static PRESENCE_REMOVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PRESENCE_REMOVE));
pub(crate) static PRESENCE_GET_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_helpers(PRESENCE_GET));
pub(crate) static NODE_ANNOUNCE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(NODE_ANNOUNCE));
pub(crate) static NODES_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_helpers(NODES));
