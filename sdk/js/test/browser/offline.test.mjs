// Acceptance 4: the page goes offline (the browser context set offline) while the app
// publishes 50 messages: they are queued and land once, in order, when it comes back; with
// a persistent queue, the same after a page reload while offline. (fallback.test.mjs runs the
// first over each HTTP transport.)
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { offlineQueue } from '../lib/acceptance.mjs';
import { until } from '../lib/browser.mjs';
import { serverAndBrowser } from '../lib/setup.mjs';
import { api } from '../lib/server.mjs';

const fixture = serverAndBrowser();

const fifty = Array.from({ length: 50 }, (_, i) => i + 1);
const options = { backoff: { min: 50, max: 400 } };
const historyOf = async (channel) => (await api(fixture.server, 'history', { channel })).publications.map((p) => p.data.n);
const connected = (page, name) => until(() => page.evaluate((n) => T.summary(n).state.type === 'connected', name), `${name} connected`);

test('publishes made offline are queued and land once, in order, when the page is back online', async () => {
  const { browser, server } = fixture;
  assert.equal(await offlineQueue({ browser, server, url: server.url, options }), 'websocket');
});

for (const store of ['localStorage', 'indexedDB']) {
  test(`with a ${store} queue, publishes made offline survive a reload while offline and land once, in order`, async () => {
    const channel = `offline-reload-${store}-` + Date.now();
    const o = { ...options, queue: `${store}:q-${channel}` };
    const page = await fixture.browser.page();
    await page.evaluate(([url, o]) => T.connect('p', url, o), [fixture.server.url, o]);
    await connected(page, 'p');
    await fixture.browser.context.setOffline(true);
    await until(() => page.evaluate(() => T.summary('p').state.type !== 'connected'), 'offline');
    await page.evaluate((c) => T.publishMany('p', c, 1, 50), channel);
    await new Promise((r) => setTimeout(r, 300)); // IndexedDB writes commit asynchronously
    await page.reload();
    assert.deepEqual(await historyOf(channel), []);
    await page.evaluate(([url, o]) => T.connect('p', url, o), [fixture.server.url, o]);
    await new Promise((r) => setTimeout(r, 500));
    await fixture.browser.context.setOffline(false);
    await until(async () => (await historyOf(channel)).length >= 50, 'the reloaded page to send the stored publishes');
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(await historyOf(channel), fifty);
    // The store is empty once they are acknowledged: a second reload sends nothing again.
    await until(() => page.evaluate(() => T.clients.p.state.type === 'connected'), 'connected');
    await page.reload();
    await page.evaluate(([url, o]) => T.connect('p', url, o), [fixture.server.url, o]);
    await until(() => page.evaluate(() => T.clients.p.state.type === 'connected'), 'connected after the second reload');
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await historyOf(channel), fifty);
  });
}
