// The acceptance checks that run over every transport: chat through the example page,
// publications flowing through connection resets, and the offline queue. The WebSocket
// tests (chat, reliability, offline) and the fallback tests (fallback.test.mjs) call them
// with their own pages, URLs and client options.
import assert from 'node:assert/strict';
import { until } from './browser.mjs';
import { api } from './server.mjs';

const lines = (page) => page.$$eval('#messages li:not(.notice)', (items) => items.map((li) => li.textContent));

/**
 * Two pages chat through the example page at `chatPage` (its URL, before the query) with the
 * server at `url`: each message once, in order, on both, and once after a reload. `query`:
 * more of the page's parameters (e.g. transports).
 */
export async function chatOnTwoPages(browser, { chatPage, url, query = '' }) {
  const room = 'chat:a1-' + Date.now() + Math.random().toString(36).slice(2, 6);
  const open = (name) => browser.page(`${chatPage}?server=${encodeURIComponent(url)}&room=${room}&name=${name}${query}`);
  const [ann, bob] = await Promise.all([open('ann'), open('bob')]);
  for (const page of [ann, bob]) {
    await until(() => page.$eval('#status', (s) => s.className === 'connected'), 'the chat page to connect');
  }
  const sent = [];
  for (let i = 1; i <= 10; i++) {
    const [page, name] = i % 2 ? [ann, 'ann'] : [bob, 'bob'];
    await page.fill('#text', `message ${i}`);
    await page.click('#send');
    sent.push(`${name}message ${i}`);
    // Wait for it on both pages before the next, so that the order is the order typed.
    for (const p of [ann, bob]) await until(async () => (await lines(p)).length === i, `message ${i} on both pages`);
  }
  assert.deepEqual(await lines(ann), sent);
  assert.deepEqual(await lines(bob), sent);
  // A reloaded page shows the same conversation from history, once.
  await ann.reload();
  await until(async () => (await lines(ann)).length >= 10, 'history after a reload');
  assert.deepEqual(await lines(ann), sent);
  const status = await ann.$eval('#status', (s) => s.textContent);
  await Promise.all([ann.close(), bob.close()]);
  return status;
}

/** The server of a flow: history for `history` publications, the publish rate limit lifted. */
export const flowServerArgs = (history) => [
  '--set', `channels.default.history_size=${history}`,
  '--set', 'client.publish_rate=1000000',
  '--set', 'client.publish_burst=1000000',
];

/**
 * `cuts` connection resets by `proxy` (each with `outageMs` of refused connections after it)
 * at random points while `total` publications flow from
 * a writer page to a reader page (pages at `pageUrl`, clients to `url` with `options`): each
 * arrives once, in order, with no gap, and every publish is acknowledged once.
 */
export async function flowThroughCuts({ browser, server, proxy, pageUrl, url, options, total, cuts, outageMs = 0 }) {
  const channel = 'flow-' + Date.now() + Math.random().toString(36).slice(2, 6);
  const [reader, writer] = [await browser.page(pageUrl), await browser.page(pageUrl)];
  const cutsBefore = proxy.stats.cuts;
  await reader.evaluate(([url, o]) => T.connect('reader', url, o), [url, options]);
  await reader.evaluate((c) => T.subscribe('reader', c), channel);
  await writer.evaluate(([url, o]) => T.connect('writer', url, o), [url, options]);
  await writer.evaluate(([c, total]) => T.publishMany('writer', c, 1, total), [channel, total]);

  // Cut at random points of the flow, measured by what the reader got, each on a live
  // connection (not one still reconnecting from the previous cut).
  const points = Array.from({ length: cuts }, () => 100 + Math.floor(Math.random() * (total - 200))).sort((a, b) => a - b);
  for (const [cut, point] of points.entries()) {
    await until(async () => {
      const r = await reader.evaluate((c) => T.summary('reader', c), channel);
      const connections = r.states.filter((s) => s === 'connected').length;
      return r.received >= point && r.state.type === 'connected' && connections === cut + 1;
    }, `the reader to reach ${point} on its connection number ${cut + 1}`, 60000);
    proxy.cut(outageMs);
  }
  assert.equal(proxy.stats.cuts - cutsBefore, cuts);

  const done = await until(async () => {
    const [r, w] = await Promise.all([
      reader.evaluate((c) => T.summary('reader', c), channel),
      writer.evaluate(() => T.summary('writer')),
    ]);
    return r.received >= total && w.acks + w.failures.length >= total && r.states.filter((s) => s === 'connected').length === cuts + 1 && { r, w };
  }, 'every publication delivered and acknowledged', 90000);

  const all = Array.from({ length: total }, (_, i) => i + 1);
  const received = await reader.evaluate((c) => T.log.reader.subs[c].publications.map((d) => d.n), channel);
  assert.deepEqual(received, all, 'each once, in order');
  assert.deepEqual(done.r.gaps, []);
  assert.deepEqual(done.r.resets, []);
  assert.deepEqual(done.w.failures, []);
  assert.equal(done.w.acks, total);
  // The cuts really reconnected both pages (states: connected once per connection).
  assert.ok(done.r.states.filter((s) => s === 'connected').length > cuts, `reader reconnected: ${done.r.states}`);
  assert.ok(done.w.states.filter((s) => s === 'connected').length > 1, `writer reconnected`);
  assert.deepEqual((await api(server, 'history', { channel })).publications.map((p) => p.data.n), all, 'history holds each once');
  const transports = await reader.evaluate(() => T.clients.reader.transport);
  await Promise.all([reader.close(), writer.close()]);
  return { connections: done.r.states.filter((s) => s === 'connected').length, duplicates: done.w.duplicates, transport: transports };
}

/**
 * The page (at `pageUrl`) goes offline while the app publishes 50 messages: nothing lands
 * while offline; once back they are acknowledged and land once, in order.
 */
export async function offlineQueue({ browser, server, pageUrl, url, options }) {
  const channel = 'offline-' + Date.now() + Math.random().toString(36).slice(2, 6);
  const historyOf = async () => (await api(server, 'history', { channel })).publications.map((p) => p.data.n);
  const page = await browser.page(pageUrl);
  await page.evaluate(([url, o]) => T.connect('p', url, o), [url, options]);
  await until(() => page.evaluate(() => T.summary('p').state.type === 'connected'), 'connected');
  const transport = await page.evaluate(() => T.clients.p.transport);
  await browser.context.setOffline(true);
  try {
    await until(() => page.evaluate(() => T.summary('p').state.type !== 'connected'), 'the client to notice it is offline');
    await page.evaluate((c) => T.publishMany('p', c, 1, 50), channel);
    await new Promise((r) => setTimeout(r, 1000));
    const offline = await page.evaluate(() => T.summary('p'));
    assert.equal(offline.acks, 0, 'nothing acknowledged while offline');
    assert.notEqual(offline.state.type, 'connected');
    assert.deepEqual(await historyOf(), [], 'nothing published while offline');
  } finally {
    await browser.context.setOffline(false);
  }
  const back = await until(async () => {
    const s = await page.evaluate(() => T.summary('p'));
    return s.acks === 50 && s;
  }, 'the queued publishes to be acknowledged');
  assert.deepEqual(back.failures, []);
  assert.equal(back.duplicates, 0);
  assert.deepEqual(await historyOf(), Array.from({ length: 50 }, (_, i) => i + 1));
  await page.close();
  return transport;
}
