// Issue 22, acceptance 2 in Chromium: three nodes on one Redis behind round-robin nginx (the
// shipped deploy/nginx/peregrine.conf, no sticky sessions). Over each HTTP transport, forced
// with the `transports` option, a reader page and a writer page flow 1,000 publications
// through 10 random connection resets: each arrives once, in order, with no gap, and every
// publish is acknowledged once. A page's sends and polls land on any node, and the nodes
// that do not hold its session relay them to the one that does.
//
// Real parts: three `peregrine serve` on a real redis-server, nginx (which also serves the
// pages, so they share the nodes' origin), a loopback proxy that resets connections, Chromium.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { flowServerArgs, flowThroughCuts } from '../lib/acceptance.mjs';
import { launch } from '../lib/browser.mjs';
import { startBalancer } from '../lib/nginx.mjs';
import { startProxy } from '../lib/proxy.mjs';
import { startRedis } from '../lib/redis.mjs';
import { startServer } from '../lib/server.mjs';

const FLOW = { total: 1000, cuts: 10 };
let redis;
let nodes = [];
let balancer;
let proxy;
let browser;

before(async () => {
  redis = await startRedis();
  const args = [...flowServerArgs(5000), '--set', 'broker.type=redis', '--set', `broker.redis.addresses=["${redis.address}"]`];
  nodes = await Promise.all([0, 1, 2].map(() => startServer({ args })));
  balancer = await startBalancer(
    nodes.map((n) => `127.0.0.1:${n.port} max_fails=1 fail_timeout=5s`),
    { pages: true },
  );
  // Resets between the pages and nginx (the pages load through it too: one origin).
  proxy = await startProxy(balancer.port);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  await balancer?.stop();
  await Promise.all(nodes.map((n) => n.stop()));
  await redis?.stop();
});

/** `name`'s value (summed over its labels) in the node's Prometheus metrics. */
async function metric(node, name) {
  const text = await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
  return text
    .split('\n')
    .filter((line) => line.split(/[{ ]/)[0].endsWith(name))
    .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

for (const transport of ['http_stream', 'sse', 'long_poll']) {
  describe(`three nodes behind round-robin nginx, over ${transport}`, () => {
    test(`${FLOW.cuts} connection resets while ${FLOW.total} publications flow: each once, in order, no gap; every publish acknowledged`, async () => {
      const relayedBefore = await Promise.all(nodes.map((n) => metric(n, 'http_relayed_requests_total')));
      const r = await flowThroughCuts({
        browser,
        server: nodes[0],
        proxy,
        pageUrl: `http://127.0.0.1:${proxy.port}/sdk/test/lib/page.html`,
        url: `ws://127.0.0.1:${proxy.port}/connection/websocket`,
        options: { backoff: { min: 20, max: 300 }, transports: [transport], queueLimit: FLOW.total },
        ...FLOW,
        // Refused for a moment after each reset, so that every transport has to reconnect.
        outageMs: 300,
      });
      assert.equal(r.transport, transport);
      const relayed = (await Promise.all(nodes.map((n) => metric(n, 'http_relayed_requests_total')))).map((n, i) => n - relayedBefore[i]);
      // Round robin sends two requests in three to a node that does not hold the session.
      assert.ok(relayed.filter((n) => n > 0).length >= 2, `requests relayed between the nodes: ${relayed}`);
      console.log(`# ${transport}: reader ${r.connections} connections; writer ${r.duplicates} duplicate acks; relayed per node ${relayed}`);
    });
  });
}

test('no page error in any of these pages', () => {
  assert.deepEqual(browser.errors, []);
});
