// Acceptance 7: the shared scenarios in Chromium, the same as under Node (test/node).
import { after, before, describe, test } from 'node:test';
import { launch } from '../lib/browser.mjs';
import { startServer } from '../lib/server.mjs';
import { SCENARIOS, runScenario } from '../shared/scenarios.mjs';

let server;
let browser;
let page;
before(async () => {
  server = await startServer({ args: ['--set', 'channels.default.history_size=1000'] });
  browser = await launch();
  page = await browser.page();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

for (const codec of ['json', 'msgpack']) {
  describe(`chromium, ${codec}`, () => {
    for (const [key, title] of Object.entries(SCENARIOS)) {
      test(title, () => page.evaluate(runScenario, { name: key, url: server.url, codec }));
    }
  });
}
