// Acceptance 5: token refresh keeps one connection past the first token's expiry; an
// expired token with no provider stops with the reason instead of a reconnect loop.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import { until } from '../lib/browser.mjs';
import { serverAndBrowser } from '../lib/setup.mjs';

const SECRET = 'js-sdk-test-secret-' + process.pid;
const fixture = serverAndBrowser({ args: ['--token-hmac-secret', SECRET] });

const b64url = (s) => Buffer.from(s).toString('base64url');
function sign(claims) {
  const body = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' })) + '.' + b64url(JSON.stringify(claims));
  return body + '.' + createHmac('sha256', SECRET).update(body).digest('base64url');
}
const expiringIn = (seconds) => sign({ sub: 'u1', exp: Math.floor(Date.now() / 1000) + seconds });

test('a token provider keeps one connection past the first token\'s expiry', async () => {
  const page = await fixture.browser.page();
  let minted = 0;
  await page.exposeFunction('mintToken', (ttl) => {
    minted++;
    return expiringIn(ttl);
  });
  const channel = 'tokens-' + Date.now();
  await page.evaluate(([url, c]) => T.connect('t', url, { getToken: 'mint:3' }) && T.subscribe('t', c), [fixture.server.url, channel]);
  const first = await page.evaluate(() => T.clients.t.state);
  assert.equal(first.type, 'connected');
  // The first token expires after at most 3 s; the server would close with 3005 then.
  await new Promise((r) => setTimeout(r, 7000));
  const s = await page.evaluate((c) => T.summary('t', c), channel);
  assert.deepEqual(s.states, ['connecting', 'connected'], 'one connection, never dropped');
  assert.equal(s.state.clientId, first.clientId);
  assert.ok(minted >= 3, `tokens minted: ${minted} (the first, then refreshes)`);
  // And it still works.
  await page.evaluate((c) => T.publishMany('t', c, 1, 1), channel);
  await until(async () => (await page.evaluate((c) => T.summary('t', c), channel)).received === 1, 'a publication');
});

test('an expired token without a provider closes with the reason, no reconnect loop', async () => {
  const page = await fixture.browser.page();
  await page.evaluate(([url, token]) => T.connect('x', url, { token, backoff: { min: 10, max: 50 } }), [fixture.server.url, expiringIn(-60)]);
  const closed = await until(() => page.evaluate(() => T.clients.x.state.type === 'closed' && T.clients.x.state), 'closed');
  assert.match(closed.reason, /expired/i);
  assert.match(closed.reason, /getToken/);
  await new Promise((r) => setTimeout(r, 1000));
  const s = await page.evaluate(() => T.summary('x'));
  assert.deepEqual(s.states, ['connecting', 'closed'], 'one attempt, then closed for good');
});
