// A session of a user over the HTTP transports: once `connect` names the user, the server
// answers the session's later requests (sends, polls) only when they carry that user's
// token. The SDK sends the token its `connect` (or latest `refresh`) carried with each one.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Client } from '../../dist/index.js';
import { startServer } from '../lib/server.mjs';

const SECRET = 'user-session-secret';
const b64 = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
function token(sub) {
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub })}`;
  return `${unsigned}.${createHmac('sha256', SECRET).update(unsigned).digest('base64url')}`;
}

let server;
before(async () => {
  server = await startServer({ args: ['--set', `token.hmac_secret="${SECRET}"`, '--set', 'token.allow_anonymous=false'] });
});
after(async () => {
  await server?.stop();
});

for (const transport of ['http_stream', 'long_poll']) {
  test(`a user's session over ${transport} subscribes, publishes and receives with its token`, async () => {
    const channel = `user-session-${transport}-${Date.now()}`;
    const states = [];
    const client = new Client(`ws://127.0.0.1:${server.port}/connection/websocket`, {
      transports: [transport],
      token: token('alice'),
      backoff: { min: 20, max: 200 },
    });
    client.on('state', (s) => states.push(s));
    const received = [];
    try {
      const sub = client.subscribe(channel);
      sub.on('publication', (p) => received.push(p.data.n));
      await sub.ready;
      for (const n of [1, 2, 3]) await client.publish(channel, { n });
      for (let i = 0; i < 400 && received.length < 3; i++) await new Promise((r) => setTimeout(r, 25));
      assert.deepEqual(received, [1, 2, 3]);
      assert.equal(client.transport, transport);
      // One connection all along: no request was refused for want of the user's token.
      assert.equal(states.filter((s) => s.type === 'connected').length, 1, JSON.stringify(states));
    } finally {
      client.close();
    }
  });
}
