// Issue 22, client side: where a WebSocket cannot get through (no `WebSocket` in the page,
// or an nginx that drops Upgrade), the SDK falls back to HTTP streaming, SSE and
// long-polling, in that order, remembers what worked, and does not fall back from a server
// that is down. Then the chat, the flow through connection resets and the offline queue,
// over each HTTP transport forced with the `transports` option, both in pages without
// WebSocket and behind an nginx that drops Upgrade.
//
// Real parts: `peregrine serve`, nginx (test/lib/nginx.mjs: it also serves the pages, so
// they share the server's origin), a loopback proxy that resets connections, Chromium.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { chatOnTwoPages, flowServerArgs, flowThroughCuts, offlineQueue } from '../lib/acceptance.mjs';
import { until } from '../lib/browser.mjs';
import { startNginx } from '../lib/nginx.mjs';
import { startProxy } from '../lib/proxy.mjs';
import { api } from '../lib/server.mjs';
import { serverAndBrowser } from '../lib/setup.mjs';

const FLOW = { total: 1000, cuts: 5 };
let nginx;
let proxy;
const fixture = serverAndBrowser({ args: flowServerArgs(5000) }, async ({ server }) => {
  nginx = await startNginx(server.port);
  // Resets between the pages and nginx (the pages load through it too: one origin).
  proxy = await startProxy(nginx.port);
  return async () => {
    await proxy.close();
    await nginx.stop();
  };
});

const TEST_PAGE = 'test/lib/page.html';
const fast = { backoff: { min: 20, max: 300 } };

/** Requests nginx saw for the WebSocket and HTTP transport endpoints under `prefix`, in order. */
const tried = (prefix) =>
  nginx.requests().filter((r) => r.includes(`/${prefix}/connection/`) && !r.includes('/connection/send') && !r.includes('/connection/poll '));

/** Connects a client on `page` to `prefix`; resolves with its transport and connected event. */
async function connectVia(page, prefix, options = {}) {
  await page.evaluate(([url, o]) => {
    T.connect('c', url, o);
    return new Promise((resolve) => T.clients.c.on('connected', (e) => resolve((T.connectedEvent = e))));
  }, [nginx.url(prefix), { ...fast, ...options }]);
  return page.evaluate(() => ({ transport: T.clients.c.transport, event: T.connectedEvent }));
}

/**
 * Closes the page's client and page, and waits for nginx to log `n` transport requests under
 * `prefix` (a streaming response is logged when it ends); resolves with them.
 */
async function closedAndLogged(page, prefix, n) {
  await page.evaluate(() => T.clients.c.close());
  await page.close();
  return until(() => tried(prefix).length >= n && tried(prefix), `${n} requests logged under /${prefix}/`);
}

/** A publication through the server's API reaches the page's client: the transport works both ways. */
async function roundTrip(page) {
  const channel = 'round-trip-' + Date.now() + Math.random().toString(36).slice(2, 6);
  await page.evaluate((c) => T.subscribe('c', c), channel);
  await api(fixture.server, 'publish', { channel, data: { n: 1 } });
  await page.evaluate((c) => T.publishMany('c', c, 2, 2), channel);
  await until(async () => (await page.evaluate((c) => T.summary('c', c), channel)).received === 2, 'both publications');
}

describe('automatic fallback', () => {
  for (const [prefix, want, what] of [
    ['open', 'websocket', 'WebSocket gets through: it is used'],
    ['no-upgrade', 'http_stream', 'nginx drops Upgrade: HTTP streaming'],
    ['no-stream', 'sse', 'no Upgrade, /connection/stream blocked: SSE'],
    ['poll-only', 'long_poll', 'no Upgrade, streaming and SSE blocked: long-polling'],
  ]) {
    test(`${what}`, async () => {
      const page = await fixture.browser.page(nginx.page(TEST_PAGE));
      const got = await connectVia(page, prefix);
      assert.equal(got.transport, want);
      assert.equal(got.event.transport, want, 'the connected event names it');
      await roundTrip(page);
      assert.deepEqual(await page.evaluate(() => sessionStorage.getItem('peregrine.transport:' + T.clients.c.url)), want === 'websocket' ? null : want);
      const order = ['websocket', 'stream', 'sse', 'poll/open'];
      const expected = order.slice(0, order.indexOf({ websocket: 'websocket', http_stream: 'stream', sse: 'sse', long_poll: 'poll/open' }[want]) + 1);
      const requests = await closedAndLogged(page, prefix, expected.length);
      assert.deepEqual(requests.map((r) => r.split(' ')[1].split('/connection/')[1]), expected, 'tried in order, each once');
    });
  }

  test('a page without WebSocket uses HTTP streaming where WebSocket would work', async () => {
    const page = await fixture.browser.page(nginx.page(TEST_PAGE), { withoutWebSocket: true });
    assert.equal(await page.evaluate(() => typeof WebSocket), 'undefined');
    const before = tried('open').length;
    const got = await connectVia(page, 'open');
    assert.equal(got.transport, 'http_stream');
    assert.equal(got.event.transport, 'http_stream');
    await roundTrip(page);
    const requests = (await closedAndLogged(page, 'open', before + 1)).slice(before);
    assert.deepEqual(requests.map((r) => r.split(' ').slice(0, 2).join(' ')), ['POST /open/connection/stream'], 'no WebSocket attempted');
  });

  test('what worked is remembered across reconnects and reloads of the page; a fresh page starts with WebSocket again', async () => {
    const page = await fixture.browser.page(proxyPage());
    const url = `ws://127.0.0.1:${proxy.port}/no-stream/connection/websocket`;
    await page.evaluate(([url, o]) => T.connect('c', url, o), [url, fast]);
    await until(() => page.evaluate(() => T.clients.c.state.type === 'connected'), 'connected');
    assert.equal(await page.evaluate(() => T.clients.c.transport), 'sse');
    const attempts = () => tried('no-stream').filter((r) => r.includes('/connection/websocket')).length;
    const wsBefore = attempts();
    // A reconnect (connections reset) goes straight to SSE.
    proxy.cut();
    await until(async () => (await page.evaluate(() => T.summary('c').states.filter((s) => s === 'connected').length)) === 2, 'reconnected');
    assert.equal(await page.evaluate(() => T.clients.c.transport), 'sse');
    // So does a new client after a reload (sessionStorage).
    await page.reload();
    await page.evaluate(([url, o]) => T.connect('c', url, o), [url, fast]);
    await until(() => page.evaluate(() => T.clients.c.state.type === 'connected'), 'connected after the reload');
    assert.equal(await page.evaluate(() => T.clients.c.transport), 'sse');
    assert.equal(attempts(), wsBefore, 'no WebSocket attempt after the first fallback');
    // A fresh page (a new tab: a new sessionStorage) tries WebSocket first again.
    const fresh = await fixture.browser.page(proxyPage());
    await fresh.evaluate(([url, o]) => T.connect('c', url, o), [url, fast]);
    await until(() => fresh.evaluate(() => T.clients.c.state.type === 'connected'), 'the fresh page connected');
    assert.equal(attempts(), wsBefore + 1);
    assert.equal(await fresh.evaluate(() => T.clients.c.transport), 'sse');
    await Promise.all([page.close(), fresh.close()]);
  });

  test('behind a proxy that buffers responses, streaming and SSE hang: each costs one connect timeout, then long-polling', async () => {
    const page = await fixture.browser.page(nginx.page(TEST_PAGE));
    const got = await connectVia(page, 'buffered', { connectTimeout: 2000 });
    assert.equal(got.transport, 'long_poll');
    const s = await page.evaluate(() => T.summary('c'));
    assert.deepEqual(s.states, ['connecting', 'disconnected', 'connecting', 'disconnected', 'connecting', 'connected']);
    await roundTrip(page);
    const requests = await closedAndLogged(page, 'buffered', 4);
    assert.deepEqual(requests.map((r) => r.split(' ')[1].split('/connection/')[1]), ['websocket', 'stream', 'sse', 'poll/open']);
  });

  test('a server that is down is not fallen back from: WebSocket then HTTP streaming fail, and the backoff applies', async () => {
    const page = await fixture.browser.page(nginx.page(TEST_PAGE));
    await page.evaluate((url) => T.connect('d', url, { backoff: { min: 200, max: 400 } }), nginx.url('down'));
    await until(async () => (await page.evaluate(() => T.summary('d').states.filter((s) => s === 'disconnected').length)) >= 3, 'three failed attempts');
    await page.evaluate(() => T.clients.d.close());
    const s = await page.evaluate(() => T.summary('d'));
    const attempts = s.states.filter((x) => x === 'disconnected').length;
    const requests = tried('down').map((r) => r.split(' ').slice(1).join(' '));
    // Each attempt: the WebSocket handshake (502 through nginx), then the stream (502): down.
    assert.ok(requests.length >= 2 * attempts, `requests: ${requests}`);
    assert.deepEqual(requests.slice(0, 2 * attempts), Array.from({ length: attempts }, () => ['/down/connection/websocket 502', '/down/connection/stream 502']).flat());
    assert.match(s.state.reason, /closed by the application/);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('peregrine.transport:' + T.clients.d.url)), null, 'nothing remembered');
    await page.close();
  });
});

/** The test page through the resetting proxy (same origin as the clients' URLs). */
const proxyPage = () => `http://127.0.0.1:${proxy.port}/sdk/${TEST_PAGE}`;

/** Where the forced transports run: pages without WebSocket, and an nginx that drops Upgrade. */
const SETUPS = [
  { where: 'in pages without WebSocket', prefix: 'open', withoutWebSocket: true },
  { where: 'behind nginx without Upgrade', prefix: 'no-upgrade', withoutWebSocket: false },
];

for (const transport of ['http_stream', 'sse', 'long_poll']) {
  for (const { where, prefix, withoutWebSocket } of SETUPS) {
    describe(`over ${transport} (forced with the transports option), ${where}`, () => {
      const options = { ...fast, transports: [transport], queueLimit: FLOW.total };
      // The fixture's browser, its pages with or without WebSocket.
      const browser = () => ({ ...fixture.browser, page: (url) => fixture.browser.page(url, { withoutWebSocket }) });

      test('two pages chat through the example page: each message once, in order, on both', async () => {
        const status = await chatOnTwoPages(browser(), {
          chatPage: nginx.page('examples/chat/index.html'),
          url: nginx.url(prefix),
          query: `&transports=${transport}`,
        });
        assert.match(status, new RegExp(` over ${transport},`));
      });

      test(`${FLOW.cuts} connection resets while ${FLOW.total} publications flow: each once, in order, no gap; every publish acknowledged`, async () => {
        const r = await flowThroughCuts({
          browser: browser(),
          server: fixture.server,
          proxy,
          pageUrl: proxyPage(),
          url: `ws://127.0.0.1:${proxy.port}/${prefix}/connection/websocket`,
          options,
          ...FLOW,
          // Refused for a moment after each reset, so that every transport has to reconnect
          // (Chromium retries a held poll cut on a kept-alive connection by itself).
          outageMs: 300,
        });
        assert.equal(r.transport, transport);
        console.log(`# ${transport}, ${where}: reader ${r.connections} connections; writer ${r.duplicates} duplicate acks`);
      });

      test('publishes made offline are queued and land once, in order, when the page is back online', async () => {
        const used = await offlineQueue({ browser: browser(), server: fixture.server, pageUrl: nginx.page(TEST_PAGE), url: nginx.url(prefix), options });
        assert.equal(used, transport);
      });
    });
  }
}

test('no page error in any of these pages', () => {
  assert.deepEqual(fixture.browser.errors, []);
});
