// The connection lifecycle of the core: connect, reconnect with backoff and full jitter,
// the server's disconnect advice, heartbeats.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffCeiling, backoffDelay, shouldReconnect } from '../../dist/index.js';
import { SETTINGS, harness } from './harness.mjs';

test('connect sends name, version and token, then reports connected', () => {
  const h = harness({ token: 'jwt-1' });
  const connect = h.connect();
  assert.deepEqual(connect.connect, { token: 'jwt-1', name: 'test', version: 1 });
  assert.deepEqual(h.states.map((s) => s.type), ['connecting', 'connected']);
  assert.equal(h.s.state.clientId, 'c1');
});

test('a dropped connection reconnects after a jittered backoff, in 0..ceiling', () => {
  const h = harness({ random: () => 0.999 });
  h.connect();
  h.drop();
  const lost = h.s.state;
  assert.equal(lost.type, 'disconnected');
  assert.ok(lost.retryIn <= backoffCeiling(SETTINGS.backoff, 0) && lost.retryIn > 90, `retryIn ${lost.retryIn}`);
  assert.equal(h.opens, 1);
  h.advance(lost.retryIn - 1);
  assert.equal(h.opens, 1, 'not before the delay');
  h.advance(1);
  assert.equal(h.opens, 2);
  // The failed attempt doubles the ceiling; a successful connect resets the counter.
  h.drop();
  assert.ok(h.s.state.retryIn > 100 && h.s.state.retryIn <= 200);
});

test('full jitter spreads delays over the whole window', () => {
  const b = { min: 100, max: 1000 };
  assert.equal(backoffCeiling(b, 0), 100);
  assert.equal(backoffCeiling(b, 3), 800);
  assert.equal(backoffCeiling(b, 40), 1000);
  const delays = Array.from({ length: 4000 }, () => backoffDelay(b, 2, Math.random));
  assert.ok(delays.every((d) => d >= 0 && d <= 400));
  for (let q = 0; q < 4; q++) {
    const n = delays.filter((d) => d >= q * 100 && d < (q + 1) * 100).length;
    assert.ok(n > 800 && n < 1200, `quarter ${q}: ${n} of 4000`);
  }
});

test('disconnect codes: 3000-3499 and below 3000 reconnect, 3500-3999 and 4500-4999 do not', () => {
  for (const code of [1001, 1006, 3000, 3001, 3008, 3012, 4000, 4499, 5000]) assert.ok(shouldReconnect(code), `${code}`);
  for (const code of [3500, 3503, 3999, 4500, 4999]) assert.ok(!shouldReconnect(code), `${code}`);
});

test('a terminal disconnect push closes for good and fails what waits', async () => {
  const h = harness();
  h.connect();
  const failures = [];
  h.s.publish('ch', { j: '1' }, (e) => failures.push(e));
  const history = h.s.call('history', { channel: 'ch' });
  h.take();
  h.server({ push: { disconnect: { code: 3503, reason: 'force no reconnect', reconnect: false } } });
  h.s.closed(3503, 'force no reconnect');
  assert.deepEqual(h.s.state, { type: 'closed', code: 3503, reason: 'force no reconnect' });
  assert.equal(failures[0].kind, 'closed');
  await assert.rejects(history, { kind: 'closed' });
  h.advance(60000);
  assert.equal(h.opens, 1, 'no reconnect');
  assert.throws(() => h.s.publish('ch', { j: '1' }), { kind: 'closed' });
});

test('a shutdown push (3001) with a 1001 close frame reconnects', () => {
  const h = harness();
  h.connect();
  h.server({ push: { disconnect: { code: 3001, reason: 'shutdown', reconnect: true } } });
  h.s.closed(1001, 'going away');
  assert.equal(h.s.state.type, 'disconnected');
  assert.equal(h.s.state.code, 3001);
});

test('silence brings a ping; no answer within pongTimeout replaces the connection', () => {
  const h = harness({ settings: { pingInterval: 5000 } });
  h.connect();
  h.advance(4999);
  assert.deepEqual(h.take(), []);
  h.advance(1);
  const [ping] = h.take();
  assert.deepEqual(ping.ping, {});
  h.advance(SETTINGS.pongTimeout - 1);
  assert.equal(h.s.state.type, 'connected');
  h.advance(1);
  assert.equal(h.s.state.type, 'disconnected');
  assert.match(h.s.state.reason, /no answer/);
  assert.equal(h.closes.length, 1, 'the dead transport is closed');
});

test('any frame counts as an answer: an answered ping keeps the connection', () => {
  const h = harness({ settings: { pingInterval: 5000 } });
  h.connect();
  h.advance(5000);
  const [ping] = h.take();
  h.advance(500);
  h.server({ id: ping.id, ping: {} });
  h.advance(4000);
  assert.equal(h.s.state.type, 'connected');
});

test('no connect reply within connectTimeout is a failed attempt', () => {
  const h = harness();
  h.s.start();
  h.s.opened();
  h.advance(SETTINGS.connectTimeout);
  assert.equal(h.s.state.type, 'disconnected');
  assert.match(h.s.state.reason, /no connect reply/);
});

test('checkAlive pings at once (a tab waking from a long sleep)', () => {
  const h = harness();
  h.connect();
  h.s.checkAlive();
  assert.ok(h.take().some((c) => c.ping));
});

test('goOffline ends the connection; reconnectNow skips the backoff wait', () => {
  const h = harness();
  h.connect();
  h.s.goOffline('the browser went offline');
  assert.equal(h.s.state.type, 'disconnected');
  assert.equal(h.opens, 1);
  h.s.reconnectNow();
  assert.equal(h.opens, 2);
});

test('an undecodable frame drops the connection and reconnects', () => {
  const h = harness();
  h.connect();
  h.s.frame('{not json');
  assert.equal(h.s.state.type, 'disconnected');
  assert.match(h.s.state.reason, /undecodable/);
});
