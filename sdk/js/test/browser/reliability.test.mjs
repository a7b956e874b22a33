// Acceptance 2 and 6: a loopback proxy between the pages and the server resets connections
// (RST, no close frame) and drops a server reply; every publication still arrives once, in
// order, and every publish lands once.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { until } from '../lib/browser.mjs';
import { startProxy } from '../lib/proxy.mjs';
import { api } from '../lib/server.mjs';
import { serverAndBrowser } from '../lib/setup.mjs';

const TOTAL = 5000;
const CUTS = 20;
const fixture = serverAndBrowser({
  args: [
    '--set', 'channels.default.history_size=20000',
    '--set', 'client.publish_rate=1000000',
    '--set', 'client.publish_burst=1000000',
  ],
}, async ({ server }) => {
  proxy = await startProxy(server.port);
  return () => proxy.close();
});
let proxy;

/** Fast reconnects: the test cuts twenty times. */
const options = { backoff: { min: 20, max: 300 }, queueLimit: TOTAL };

async function historyOf(channel) {
  const h = await api(fixture.server, 'history', { channel });
  return h.publications.map((p) => p.data.n);
}

test(`${CUTS} connection resets while ${TOTAL} publications flow: each once, in order, no gap; every publish acknowledged`, async () => {
  const channel = 'flow-' + Date.now();
  const [reader, writer] = [await fixture.browser.page(), await fixture.browser.page()];
  await reader.evaluate(([url, o]) => T.connect('reader', url, o), [proxy.url, options]);
  await reader.evaluate((c) => T.subscribe('reader', c), channel);
  await writer.evaluate(([url, o]) => T.connect('writer', url, o), [proxy.url, options]);
  await writer.evaluate((c) => T.publishMany('writer', c, 1, 5000), channel);

  // Cut at random points of the flow, measured by what the reader got, each on a live
  // connection (not one still reconnecting from the previous cut).
  const points = Array.from({ length: CUTS }, () => 100 + Math.floor(Math.random() * (TOTAL - 200))).sort((a, b) => a - b);
  for (const [cut, point] of points.entries()) {
    await until(async () => {
      const r = await reader.evaluate((c) => T.summary('reader', c), channel);
      const connections = r.states.filter((s) => s === 'connected').length;
      return r.received >= point && r.state.type === 'connected' && connections === cut + 1;
    }, `the reader to reach ${point} on its connection number ${cut + 1}`, 60000);
    proxy.cut();
  }
  assert.equal(proxy.stats.cuts, CUTS);

  const done = await until(async () => {
    const [r, w] = await Promise.all([
      reader.evaluate((c) => T.summary('reader', c), channel),
      writer.evaluate(() => T.summary('writer')),
    ]);
    return r.received >= TOTAL && w.acks + w.failures.length >= TOTAL && r.states.filter((s) => s === 'connected').length === CUTS + 1 && { r, w };
  }, 'every publication delivered and acknowledged', 90000);

  const received = await reader.evaluate((c) => T.log.reader.subs[c].publications.map((d) => d.n), channel);
  assert.deepEqual(received, Array.from({ length: TOTAL }, (_, i) => i + 1), 'each once, in order');
  assert.deepEqual(done.r.gaps, []);
  assert.deepEqual(done.r.resets, []);
  assert.deepEqual(done.w.failures, []);
  assert.equal(done.w.acks, TOTAL);
  // The cuts really reconnected both pages (states: connected once per connection).
  assert.ok(done.r.states.filter((s) => s === 'connected').length > CUTS, `reader reconnected: ${done.r.states}`);
  assert.ok(done.w.states.filter((s) => s === 'connected').length > 1, `writer reconnected`);
  assert.deepEqual(await historyOf(channel), Array.from({ length: TOTAL }, (_, i) => i + 1), 'history holds each once');
  console.log(`# reader: ${done.r.states.filter((s) => s === 'connected').length} connections; writer: ${done.w.duplicates} duplicate acks (resent after a cut)`);
});

test('a publish whose reply the proxy drops lands once (resent with the same key after the ack timeout)', async () => {
  const channel = 'lost-reply-' + Date.now();
  const page = await fixture.browser.page();
  await page.evaluate((url) => T.connect('p', url, { ackTimeout: 500 }), proxy.url);
  await until(() => page.evaluate(() => T.summary('p').state.type === 'connected'), 'connected');
  const dropped = proxy.dropReply(/"publish":\{[^}]*"offset"/);
  const ack = await page.evaluate((c) => T.clients.p.publish(c, { text: 'once' }), channel);
  const frame = await dropped;
  assert.match(frame, /"publish":\{/, 'the first reply was dropped');
  assert.equal(ack.duplicate, true, 'the resend was answered as a duplicate: the first attempt had landed');
  assert.deepEqual((await api(fixture.server, 'history', { channel })).publications.map((p) => p.data), [{ text: 'once' }]);
});

test('a publish whose reply is lost to a reset lands once (resent after the reconnect)', async () => {
  const channel = 'lost-reply-cut-' + Date.now();
  const page = await fixture.browser.page();
  await page.evaluate((url) => T.connect('q', url, { backoff: { min: 20, max: 100 } }), proxy.url);
  await until(() => page.evaluate(() => T.summary('q').state.type === 'connected'), 'connected');
  const dropped = proxy.dropReply(/"publish":\{[^}]*"offset"/);
  const acked = page.evaluate((c) => T.clients.q.publish(c, { text: 'once' }), channel);
  await dropped;
  proxy.cut();
  const ack = await acked;
  assert.equal(ack.duplicate, true);
  assert.deepEqual((await api(fixture.server, 'history', { channel })).publications.map((p) => p.data), [{ text: 'once' }]);
});
