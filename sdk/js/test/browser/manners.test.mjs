// Browser manners: positions kept across a page reload (sessionStorage) so the reloaded page
// recovers instead of starting afresh; reconnecting at once when the network comes back.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { until } from '../lib/browser.mjs';
import { serverAndBrowser } from '../lib/setup.mjs';
import { api } from '../lib/server.mjs';

const fixture = serverAndBrowser();

test('with keepPositions a reloaded page recovers what it missed, each once', async () => {
  const channel = 'positions-' + Date.now();
  const page = await fixture.browser.page();
  const start = ([url, c]) => T.connect('p', url, { keepPositions: true }) && T.subscribe('p', c);
  await page.evaluate(start, [fixture.server.url, channel]);
  for (const n of [1, 2, 3]) await api(fixture.server, 'publish', { channel, data: { n } });
  await until(async () => (await page.evaluate((c) => T.summary('p', c), channel)).received === 3, '3 publications');
  await page.reload();
  for (const n of [4, 5]) await api(fixture.server, 'publish', { channel, data: { n } });
  await page.evaluate(start, [fixture.server.url, channel]);
  const s = await until(async () => {
    const s = await page.evaluate((c) => T.summary('p', c), channel);
    return s.received >= 2 && s;
  }, 'the missed publications');
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(await page.evaluate((c) => T.log.p.subs[c].publications.map((d) => d.n), channel), [4, 5]);
  assert.equal(s.subscribed[0].recovered, true);
});

test('the online event reconnects at once instead of waiting out the backoff', async () => {
  const page = await fixture.browser.page();
  await page.evaluate((url) => T.connect('o', url, { backoff: { min: 20000, max: 20000 } }), fixture.server.url);
  await until(() => page.evaluate(() => T.clients.o.state.type === 'connected'), 'connected');
  await fixture.browser.context.setOffline(true);
  // Attempts fail while offline, each followed by a random wait of up to 20 s: wait for a long one.
  await until(() => page.evaluate(() => T.clients.o.state.type === 'disconnected' && T.clients.o.state.retryIn > 5000), 'a long backoff', 60000);
  const offlineAt = Date.now();
  await fixture.browser.context.setOffline(false);
  await until(() => page.evaluate(() => T.clients.o.state.type === 'connected'), 'reconnected', 3000);
  assert.ok(Date.now() - offlineAt < 3000);
});
