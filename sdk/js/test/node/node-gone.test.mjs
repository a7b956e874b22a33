// A long-polling session whose node is gone: behind the shipped nginx configuration, two
// nodes share a Redis broker and node B is the backup. Node A is killed while the client's
// poll is held there; nginx passes the poll on to B, which does not know the session and
// answers 404. The SDK takes that as a lost connection: it reconnects (to B) and recovers
// from its position, each publication once, in order.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Client } from '../../dist/index.js';
import { startBalancer } from '../lib/nginx.mjs';
import { startRedis } from '../lib/redis.mjs';
import { api, startServer } from '../lib/server.mjs';

let redis;
let nodeA;
let nodeB;
let nginx;
before(async () => {
  redis = await startRedis();
  const args = ['--set', 'broker.type=redis', '--set', `broker.redis.addresses=["${redis.address}"]`];
  [nodeA, nodeB] = await Promise.all([startServer({ args }), startServer({ args })]);
  nginx = await startBalancer([`127.0.0.1:${nodeA.port} max_fails=1 fail_timeout=5s`, `127.0.0.1:${nodeB.port} backup`]);
});
after(async () => {
  await nginx?.stop();
  await Promise.all([nodeA?.stop('SIGKILL'), nodeB?.stop()]);
  await redis?.stop();
});

const until = async (fn, what) => {
  for (let i = 0; i < 800; i++) {
    if (fn()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('timed out waiting for ' + what);
};

test('a 404 for a poll (the node holding the session is gone) reconnects and recovers, each publication once, in order', async () => {
  const channel = 'node-gone-' + Date.now();
  const client = new Client(`ws://127.0.0.1:${nginx.port}/connection/websocket`, { transports: ['long_poll'], backoff: { min: 20, max: 200 } });
  const states = [];
  const received = [];
  const lost = [];
  client.on('state', (s) => states.push(s));
  try {
    const sub = client.subscribe(channel);
    sub.on('publication', (p) => received.push(p.data.n));
    sub.on('gap', (g) => lost.push(g));
    sub.on('reset', (r) => lost.push(r));
    await sub.ready;
    for (const n of [1, 2, 3]) await api(nodeA, 'publish', { channel, data: { n } });
    await until(() => received.length === 3, 'the first three');
    // The client now holds a poll on node A, and sends nothing.
    await nodeA.stop('SIGKILL');
    for (const n of [4, 5, 6]) await api(nodeB, 'publish', { channel, data: { n } });
    await until(() => received.length >= 6, 'the three published while it reconnected');
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(received, [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(lost, []);
    const ended = states.find((s) => s.type === 'disconnected');
    assert.match(ended.reason, /HTTP 404/, `the connection ended on the 404: ${JSON.stringify(states)}`);
    assert.equal(states.filter((s) => s.type === 'connected').length, 2);
    assert.equal(client.transport, 'long_poll');
  } finally {
    client.close();
  }
});
