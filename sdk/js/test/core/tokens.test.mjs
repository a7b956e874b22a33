// Connection and subscription tokens: providers, refresh ahead of expiry, refusals.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { harness, record } from './harness.mjs';

test('with a provider, the token is fetched first, and again ahead of expiry (sent with refresh)', () => {
  const h = harness({ provider: true });
  h.s.start();
  assert.equal(h.tokenFetches, 1);
  assert.equal(h.opens, 0, 'not before the token');
  h.s.token('t1');
  h.s.opened();
  const [connect] = h.take();
  assert.equal(connect.connect.token, 't1');
  const expires = Math.floor(h.now / 1000) + 100;
  h.server({ id: connect.id, connect: { client_id: 'c', ping_interval_ms: 1e9, expires } });
  h.advance(79000);
  assert.equal(h.tokenFetches, 1);
  h.advance(1100); // ahead of expiry by a fifth of the lifetime
  assert.equal(h.tokenFetches, 2);
  h.s.token('t2');
  const [refresh] = h.take();
  assert.deepEqual(refresh.refresh, { token: 't2' });
  assert.equal(h.opens, 1, 'same connection');
});

test('an expired token without a provider closes with the reason instead of reconnecting', () => {
  const h = harness({ token: 'old' });
  h.s.start();
  h.s.opened();
  const [connect] = h.take();
  h.server({ id: connect.id, error: { code: 109, message: 'token expired' } });
  assert.equal(h.s.state.type, 'closed');
  assert.match(h.s.state.reason, /token expired.*getToken/);
  h.advance(60000);
  assert.equal(h.opens, 1);
});

test('3005 (token expired) with a provider: a fresh token, then reconnect', () => {
  const h = harness({ provider: true });
  h.s.start();
  h.s.token('t1');
  h.s.opened();
  const [connect] = h.take();
  h.server({ id: connect.id, connect: { client_id: 'c', ping_interval_ms: 1e9 } });
  h.server({ push: { disconnect: { code: 3005, reason: 'expired', reconnect: true } } });
  h.s.closed(3005, 'expired');
  h.advance(2000);
  assert.equal(h.tokenFetches, 2);
  h.s.token('t2');
  assert.equal(h.opens, 2);
});

test('a token refused twice in a row (3500 invalid) stops', () => {
  const h = harness({ provider: true });
  for (const token of ['bad1', 'bad2']) {
    h.advance(2000);
    h.s.start();
    h.s.token(token);
    h.s.opened();
    h.take();
    h.s.closed(3500, 'invalid token');
  }
  assert.equal(h.s.state.type, 'closed');
  assert.equal(h.s.state.code, 3500);
});

test('a failing provider is asked again after a backoff', () => {
  const h = harness({ provider: true });
  h.s.start();
  h.s.token(new Error('backend down'));
  assert.equal(h.s.state.type, 'disconnected');
  assert.match(h.s.state.reason, /backend down/);
  h.advance(2000);
  assert.equal(h.tokenFetches, 2);
});

test('a private channel: token from its provider, sub_refresh ahead of expiry, 2501 resubscribes from the position', () => {
  const h = harness();
  h.connect({ ping_interval_ms: 1e9 });
  const sub = h.s.subscribe('private:team', { getToken: async () => 'unused' });
  const events = record(sub);
  assert.deepEqual(h.subscriptionTokenFetches, [sub]);
  h.s.subscriptionToken(sub, 's1');
  const [cmd] = h.take();
  assert.deepEqual(cmd.subscribe, { channel: 'private:team', token: 's1' });
  const expires = Math.floor(h.now / 1000) + 60;
  h.server({ id: cmd.id, subscribe: { epoch: 'e', offset: 4, positioned: true, expires } });
  h.advance(60000 - 12000);
  assert.equal(h.subscriptionTokenFetches.length, 2);
  h.s.subscriptionToken(sub, 's2');
  const [refresh] = h.take();
  assert.deepEqual(refresh.sub_refresh, { channel: 'private:team', token: 's2' });
  h.server({ id: refresh.id, sub_refresh: {} });
  h.server({ push: { unsubscribe: { channel: 'private:team', code: 2501, reason: 'subscription token expired' } } });
  assert.equal(h.subscriptionTokenFetches.length, 3, 'a fresh token first');
  h.s.subscriptionToken(sub, 's3');
  const [again] = h.take();
  assert.deepEqual(again.subscribe, { channel: 'private:team', token: 's3', since: { epoch: 'e', offset: 4 }, recover: true });
  assert.deepEqual(events.map(([t]) => t), ['subscribed']);
});
