// Subscriptions across connections: positions, recovery, gaps, resets, unsubscribe pushes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { harness, offsets, pub, record } from './harness.mjs';

function subscribed(h, channel, result) {
  const sub = h.s.subscribe(channel, {});
  const events = record(sub);
  const [cmd] = h.take();
  assert.deepEqual(cmd.subscribe, { channel });
  h.server({ id: cmd.id, subscribe: { positioned: true, recovered: false, publications: [], ...result } });
  return { sub, events };
}

test('publications arrive in order; a reconnect resubscribes in connect with since and recovers', () => {
  const h = harness();
  h.connect();
  const { sub, events } = subscribed(h, 'ch', { epoch: 'e1', offset: 5 });
  h.server(pub('ch', 6), pub('ch', 7));
  assert.deepEqual(sub.position, { epoch: 'e1', offset: 7 });
  h.drop();
  const connect = h.reconnect({
    subs: { ch: { epoch: 'e1', offset: 9, recovered: true, positioned: true, publications: [{ offset: 8, data: 8 }, { offset: 9, data: 9 }] } },
  });
  assert.deepEqual(connect.connect.subs, { ch: { since: { epoch: 'e1', offset: 7 }, recover: true } });
  h.server(pub('ch', 9), pub('ch', 10)); // 9 again: both replayed and pushed
  assert.deepEqual(offsets(events), [6, 7, 8, 9, 10], 'each once, in order');
  assert.deepEqual(events.filter(([t]) => t === 'subscribed').map(([, e]) => e.recovered), [false, true]);
});

test('a streamed recovery (more) goes on in pushes without a gap', () => {
  const h = harness();
  h.connect();
  const { events } = subscribed(h, 'ch', { epoch: 'e', offset: 3 });
  h.drop();
  h.reconnect({ subs: { ch: { epoch: 'e', offset: 9, recovered: true, positioned: true, more: true, publications: [{ offset: 4, data: 4 }] } } });
  for (let o = 5; o <= 10; o++) h.server(pub('ch', o));
  assert.deepEqual(offsets(events), [4, 5, 6, 7, 8, 9, 10]);
  assert.deepEqual(events.filter(([t]) => t === 'gap'), []);
});

test('what history no longer holds is an explicit gap with its exact range', () => {
  const h = harness();
  h.connect();
  const { events } = subscribed(h, 'ch', { epoch: 'e', offset: 3 });
  h.drop();
  h.reconnect({
    subs: { ch: { epoch: 'e', offset: 20, recovered: false, positioned: true, gap: { from: 4, to: 10 }, publications: [11, 12, 20].map((offset) => ({ offset, data: offset })) } },
  });
  const gaps = events.filter(([t]) => t === 'gap').map(([, g]) => g);
  // 13..19 were neither replayed nor in the gap: reported too, never silent.
  assert.deepEqual(gaps, [{ type: 'gap', from: 4, to: 10 }, { type: 'gap', from: 13, to: 19 }]);
  assert.deepEqual(offsets(events), [11, 12, 20]);
});

test('a new epoch is a reset', () => {
  const h = harness();
  h.connect();
  const { events, sub } = subscribed(h, 'ch', { epoch: 'old', offset: 40 });
  h.drop();
  h.reconnect({ subs: { ch: { epoch: 'new', offset: 2, recovered: false, positioned: true, publications: [] } } });
  const [reset] = events.filter(([t]) => t === 'reset').map(([, r]) => r);
  assert.deepEqual(reset, { type: 'reset', previousEpoch: 'old', epoch: 'new', offset: 2 });
  h.server(pub('ch', 3));
  assert.deepEqual(offsets(events), [3]);
  assert.deepEqual(sub.position, { epoch: 'new', offset: 3 });
});

test('a skipped offset on a live connection reconnects to recover it (3010)', () => {
  const h = harness();
  h.connect();
  const { events } = subscribed(h, 'ch', { epoch: 'e', offset: 5 });
  h.server(pub('ch', 7));
  assert.deepEqual(offsets(events), []);
  assert.equal(h.s.state.type, 'disconnected');
  assert.equal(h.s.state.code, 3010);
  const connect = h.reconnect({ subs: { ch: { epoch: 'e', offset: 7, recovered: true, positioned: true, publications: [6, 7].map((offset) => ({ offset, data: offset })) } } });
  assert.deepEqual(connect.connect.subs.ch.since, { epoch: 'e', offset: 5 });
  assert.deepEqual(offsets(events), [6, 7]);
});

test('error 112 (a position not of this stream) subscribes afresh and reports a reset', () => {
  const h = harness();
  h.connect();
  const sub = h.s.subscribe('ch', { since: { epoch: 'e', offset: 999 } });
  const events = record(sub);
  const [cmd] = h.take();
  assert.deepEqual(cmd.subscribe, { channel: 'ch', since: { epoch: 'e', offset: 999 }, recover: true });
  h.server({ id: cmd.id, error: { code: 112, message: 'beyond the top' } });
  const [again] = h.take();
  assert.deepEqual(again.subscribe, { channel: 'ch' });
  h.server({ id: again.id, subscribe: { epoch: 'e', offset: 43, positioned: true, publications: [] } });
  assert.deepEqual(events.map(([t]) => t), ['subscribed', 'reset']);
});

test('unsubscribe push 2500 resubscribes from the position; 2000 ends the subscription', async () => {
  const h = harness();
  h.connect();
  const { events, sub } = subscribed(h, 'ch', { epoch: 'e', offset: 5 });
  h.server(pub('ch', 6), { push: { unsubscribe: { channel: 'ch', code: 2500, reason: 'insufficient state' } } });
  const [again] = h.take();
  assert.deepEqual(again.subscribe, { channel: 'ch', since: { epoch: 'e', offset: 6 }, recover: true });
  h.server({ id: again.id, subscribe: { epoch: 'e', offset: 6, recovered: true, positioned: true, publications: [] } });
  h.server({ push: { unsubscribe: { channel: 'ch', code: 2000, reason: 'unsubscribed by server' } } });
  assert.deepEqual(events.at(-1), ['unsubscribed', { code: 2000, reason: 'unsubscribed by server' }]);
  assert.equal(h.s.subs.size, 0);
  await sub.ready; // had subscribed: stays resolved
});

test('a refused subscribe rejects ready and says unsubscribed', async () => {
  const h = harness();
  h.connect();
  const sub = h.s.subscribe('ch', {});
  const events = record(sub);
  const [cmd] = h.take();
  h.server({ id: cmd.id, error: { code: 103, message: 'permission denied' } });
  await assert.rejects(sub.ready, { kind: 'server', code: 103 });
  assert.deepEqual(events, [['unsubscribed', { code: 103, reason: 'permission denied' }]]);
});

test('subscribing twice to a channel is refused at once', () => {
  const h = harness();
  h.s.subscribe('ch', {});
  assert.throws(() => h.s.subscribe('ch', {}), { kind: 'already_subscribed' });
});

test('subscriptions made while offline are sent in connect; unsubscribing sends unsubscribe', () => {
  const h = harness();
  const sub = h.s.subscribe('ch', { joinLeave: true });
  const connect = h.connect({ subs: { ch: { epoch: 'e', offset: 1, positioned: true } } });
  assert.deepEqual(connect.connect.subs, { ch: { join_leave: true } });
  sub.unsubscribe();
  assert.deepEqual(h.take().map((c) => c.unsubscribe), [{ channel: 'ch' }]);
});

test('join and leave pushes reach the subscription', () => {
  const h = harness();
  h.connect();
  const { events } = subscribed(h, 'ch', { epoch: 'e', offset: 0 });
  const info = { user: '7', client: 'c-1' };
  h.server({ push: { join: { channel: 'ch', info } } }, { push: { leave: { channel: 'ch', info } } });
  assert.deepEqual(events.slice(1), [['join', info], ['leave', info]]);
});

test('channels without history deliver every publication', () => {
  const h = harness();
  h.connect();
  const { events, sub } = subscribed(h, 'ch', { epoch: '', offset: 0, positioned: false });
  h.server(pub('ch', 0, 'a'), pub('ch', 0, 'b'));
  assert.equal(events.filter(([t]) => t === 'publication').length, 2);
  assert.equal(sub.position, undefined);
});

test('a channel refused in connect (2500 push in the same frame) is subscribed again once', () => {
  const h = harness();
  h.s.subscribe('ch', { since: { epoch: 'e', offset: 999 } });
  h.s.start();
  h.s.opened();
  const [connect] = h.take();
  h.server(
    { id: connect.id, connect: { client_id: 'c', ping_interval_ms: 25000 } },
    { push: { unsubscribe: { channel: 'ch', code: 2500, reason: 'beyond the top' } } },
  );
  assert.equal(h.take().filter((c) => c.subscribe).length, 1);
});
