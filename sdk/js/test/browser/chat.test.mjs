// Acceptance 1: two pages chat through the example page; messages appear once, in order,
// on both (fallback.test.mjs runs the same over each HTTP transport).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chatOnTwoPages } from '../lib/acceptance.mjs';
import { CHAT_PAGE } from '../lib/browser.mjs';
import { serverAndBrowser } from '../lib/setup.mjs';

const fixture = serverAndBrowser();

test('two pages chat through the example page: each message once, in order, on both', async () => {
  const status = await chatOnTwoPages(fixture.browser, { chatPage: CHAT_PAGE, url: fixture.server.url });
  assert.match(status, / over websocket,/);
  assert.deepEqual(fixture.browser.errors, []);
});
