// Acceptance 1: two pages chat through the example page; messages appear once, in order,
// on both.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CHAT_PAGE, until } from '../lib/browser.mjs';
import { serverAndBrowser } from '../lib/setup.mjs';

const fixture = serverAndBrowser();

const lines = (page) => page.$$eval('#messages li:not(.notice)', (items) => items.map((li) => li.textContent));

test('two pages chat through the example page: each message once, in order, on both', async () => {
  const room = 'chat:a1-' + Date.now();
  const open = (name) =>
    fixture.browser.page(`${CHAT_PAGE}?server=${encodeURIComponent(fixture.server.url)}&room=${room}&name=${name}`);
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
  assert.deepEqual(fixture.browser.errors, []);
});
