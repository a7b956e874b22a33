// Acceptance 3: the server is restarted (memory broker, history lost): every page gets a
// `reset` event and keeps working without a reload.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { until } from '../lib/browser.mjs';
import { startServer } from '../lib/server.mjs';
import { serverAndBrowser } from '../lib/setup.mjs';

const fixture = serverAndBrowser();

test('after a server restart every page gets reset and goes on without a reload', async () => {
  const channel = 'restart-' + Date.now();
  const names = ['a', 'b', 'c'];
  const pages = await Promise.all(names.map(() => fixture.browser.page()));
  for (const [i, page] of pages.entries()) {
    await page.evaluate(([n, url]) => T.connect(n, url, { backoff: { min: 50, max: 500 } }), [names[i], fixture.server.url]);
    await page.evaluate(([n, c]) => T.subscribe(n, c), [names[i], channel]);
  }
  const received = (i) => pages[i].evaluate(([n, c]) => T.summary(n, c), [names[i], channel]);
  await pages[0].evaluate((c) => T.publishMany('a', c, 1, 3), channel);
  for (const i of pages.keys()) await until(async () => (await received(i)).received === 3, `page ${i} got 3`);

  const port = fixture.server.port;
  await fixture.server.stop();
  fixture.server = await startServer({ port });

  for (const i of pages.keys()) {
    await until(async () => (await received(i)).resets.length === 1, `page ${names[i]} reset`);
  }
  // Still working: a publish after the restart reaches every page once.
  await pages[1].evaluate((c) => T.publishMany('b', c, 4, 4), channel);
  for (const i of pages.keys()) {
    const r = await until(async () => {
      const s = await received(i);
      return s.received === 4 && s;
    }, `page ${names[i]} got the publication after the restart`);
    assert.equal(r.resets.length, 1);
    assert.equal(r.resets[0].offset, 0, 'the new stream starts empty');
    assert.notEqual(r.resets[0].previousEpoch, r.resets[0].epoch);
    assert.deepEqual(r.gaps, []);
    assert.equal(r.state.type, 'connected');
  }
  const data = await pages[2].evaluate((c) => T.log.c.subs[c].publications.map((d) => d.n), channel);
  assert.deepEqual(data, [1, 2, 3, 4]);
  assert.deepEqual(fixture.browser.errors, []);
});
