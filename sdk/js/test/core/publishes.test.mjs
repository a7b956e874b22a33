// Acknowledged publishes: idempotency keys, resends after a reconnect or an ack timeout,
// the in-flight window, the bounded queue, rate limits.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SETTINGS, harness } from './harness.mjs';

const publishes = (commands) => commands.filter((c) => c.publish);

function publishing(h, n) {
  const results = [];
  for (let i = 1; i <= n; i++) h.s.publish('ch', { j: `{"n":${i}}` }, (e, r) => results.push(e ? { n: i, error: e.kind } : { n: i, ...r }));
  return results;
}

test('publishes made offline are sent in call order after connecting, each with its own key', () => {
  const h = harness();
  publishing(h, 3);
  h.connect();
  const sent = publishes(h.take());
  assert.deepEqual(sent.map((c) => c.publish.data), [{ n: 1 }, { n: 2 }, { n: 3 }]);
  assert.equal(new Set(sent.map((c) => c.publish.idempotency_key)).size, 3);
  assert.equal(h.frames.filter((f) => f.includes('"publish"')).length, 1, 'batched into one frame');
});

test('a publish in flight when the connection drops is resent with the same key and acked once', () => {
  const h = harness();
  h.connect();
  const results = publishing(h, 2);
  const first = publishes(h.take());
  h.server({ id: first[0].id, publish: { offset: 1, epoch: 'e' } });
  h.drop();
  h.reconnect();
  const again = publishes(h.take());
  assert.deepEqual(again.map((c) => c.publish.idempotency_key), [first[1].publish.idempotency_key]);
  h.server({ id: again[0].id, publish: { offset: 2, epoch: 'e', duplicate: true } });
  assert.deepEqual(results, [{ n: 1, offset: 1, epoch: 'e' }, { n: 2, offset: 2, epoch: 'e', duplicate: true }]);
});

test('an unanswered publish is resent after ackTimeout with the same key, then fails with timeout', () => {
  const h = harness();
  h.connect();
  const results = publishing(h, 1);
  const [first] = publishes(h.take());
  h.advance(SETTINGS.ackTimeout);
  const [second] = publishes(h.take());
  assert.equal(second.publish.idempotency_key, first.publish.idempotency_key);
  assert.notEqual(second.id, first.id);
  // A late answer to the first attempt no longer counts; the latest attempt's does.
  h.server({ id: first.id, publish: { offset: 1 } });
  assert.deepEqual(results, []);
  h.advance(SETTINGS.ackTimeout);
  publishes(h.take());
  h.advance(SETTINGS.ackTimeout);
  assert.deepEqual(results, [{ n: 1, error: 'timeout' }]);
});

test('at most maxInFlight publishes are unacknowledged; acks let the next ones go', () => {
  const h = harness();
  h.connect();
  publishing(h, 6);
  const sent = publishes(h.take());
  assert.equal(sent.length, SETTINGS.maxInFlight);
  h.server({ id: sent[0].id, publish: {} });
  assert.deepEqual(publishes(h.take()).map((c) => c.publish.data.n), [5]);
});

test('a full queue refuses a publish at once; nothing is dropped later', () => {
  const h = harness();
  publishing(h, SETTINGS.queueLimit);
  assert.throws(() => h.s.publish('ch', { j: '1' }), { kind: 'queue_full' });
});

test('a publish too big for a frame is refused at once', () => {
  const h = harness({ settings: { frameLimit: 1000 } });
  assert.throws(() => h.s.publish('ch', { j: JSON.stringify('x'.repeat(1000)) }), { kind: 'too_large' });
  assert.throws(() => h.s.publish('ch', { b: new Uint8Array(800) }), { kind: 'too_large' });
});

test('a rate-limited publish (111) is sent again later, and the ones behind it wait', () => {
  const h = harness();
  h.connect();
  const results = publishing(h, 2);
  const sent = publishes(h.take());
  h.server({ id: sent[0].id, error: { code: 111, message: 'too many requests', temporary: true } });
  assert.deepEqual(publishes(h.take()), []);
  h.advance(SETTINGS.backoff.min);
  const again = publishes(h.take());
  assert.deepEqual(again.map((c) => c.publish.data.n), [1]);
  assert.equal(again[0].publish.idempotency_key, sent[0].publish.idempotency_key);
  h.server({ id: again[0].id, publish: { offset: 1 } }, { id: sent[1].id, publish: { offset: 2 } });
  assert.deepEqual(results.map((r) => r.n), [1, 2]);
});

test('a refused publish fails with the server error', () => {
  const h = harness();
  h.connect();
  const results = publishing(h, 1);
  const [cmd] = publishes(h.take());
  h.server({ id: cmd.id, error: { code: 103, message: 'permission denied' } });
  assert.deepEqual(results, [{ n: 1, error: 'server' }]);
});

test('a queue store sees each publish added, and removed once acknowledged', () => {
  const log = [];
  const store = { load: () => [], add: (p) => log.push(['add', p]), remove: (k) => log.push(['remove', k]) };
  const h = harness({ store });
  h.s.publish('ch', { j: '{"a":1}' }, () => {});
  h.s.publish('ch', { b: new Uint8Array([0, 255]) }, () => {});
  const [a, b] = log.map(([, p]) => p);
  assert.deepEqual([a.channel, a.data, a.binary], ['ch', '{"a":1}', undefined]);
  assert.deepEqual([b.data, b.binary], ['AP8=', true]);
  h.connect();
  const sent = publishes(h.take());
  h.server({ id: sent[0].id, publish: {} });
  assert.deepEqual(log.at(-1), ['remove', a.key]);
  // Closing keeps the rest in the store for the next page.
  h.s.close();
  assert.equal(log.length, 3);
});

test('close fails queued publishes and waiting calls', async () => {
  const h = harness();
  const results = publishing(h, 1);
  const call = h.s.call('presence', { channel: 'ch' });
  h.s.close();
  assert.deepEqual(results, [{ n: 1, error: 'closed' }]);
  await assert.rejects(call, { kind: 'closed' });
  assert.equal(h.s.state.type, 'closed');
});

test('presence and history wait for a connection, survive a reconnect, and time out', async () => {
  const h = harness();
  const presence = h.s.call('presence', { channel: 'ch' });
  h.connect();
  const [cmd] = h.take();
  assert.deepEqual(cmd.presence, { channel: 'ch' });
  h.drop();
  h.reconnect();
  const [again] = h.take();
  assert.deepEqual(again.presence, { channel: 'ch' });
  h.server({ id: again.id, presence: { clients: { c1: { user: '', client: 'c1' } } } });
  assert.deepEqual((await presence).clients.c1.client, 'c1');
  const late = h.s.call('history', { channel: 'ch' });
  h.advance(SETTINGS.requestTimeout);
  await assert.rejects(late, { kind: 'timeout' });
});
