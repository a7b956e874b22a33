// Acceptance 2 and 6: a loopback proxy between the pages and the server resets connections
// (RST, no close frame) and drops a server reply; every publication still arrives once, in
// order, and every publish lands once (fallback.test.mjs runs the flow over each HTTP
// transport).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { flowServerArgs, flowThroughCuts } from '../lib/acceptance.mjs';
import { until } from '../lib/browser.mjs';
import { startProxy } from '../lib/proxy.mjs';
import { api } from '../lib/server.mjs';
import { serverAndBrowser } from '../lib/setup.mjs';

const TOTAL = 5000;
const CUTS = 20;
const fixture = serverAndBrowser({ args: flowServerArgs(20000) }, async ({ server }) => {
  proxy = await startProxy(server.port);
  return () => proxy.close();
});
let proxy;

/** Fast reconnects: the test cuts twenty times. */
const options = { backoff: { min: 20, max: 300 }, queueLimit: TOTAL };

test(`${CUTS} connection resets while ${TOTAL} publications flow: each once, in order, no gap; every publish acknowledged`, async () => {
  const { browser, server } = fixture;
  const r = await flowThroughCuts({ browser, server, proxy, url: proxy.url, options, total: TOTAL, cuts: CUTS });
  assert.equal(r.transport, 'websocket');
  console.log(`# reader: ${r.connections} connections; writer: ${r.duplicates} duplicate acks (resent after a cut)`);
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
