// Acceptance 7: the shared scenarios in Chromium, the same as under Node (test/node).
import { describe, test } from 'node:test';
import { serverAndBrowser } from '../lib/setup.mjs';
import { SCENARIOS, SCENARIO_SERVER_ARGS, runScenario } from '../shared/scenarios.mjs';

const fixture = serverAndBrowser({ args: SCENARIO_SERVER_ARGS });
// One page for all (made by the first test: Node runs a file's `before` hooks concurrently
// with each other, so a second hook cannot wait for the fixture's).
let page;
const thePage = async () => (page ??= await fixture.browser.page());

for (const codec of ['json', 'msgpack']) {
  describe(`chromium, ${codec}`, () => {
    for (const [key, title] of Object.entries(SCENARIOS)) {
      test(title, async () => (await thePage()).evaluate(runScenario, { name: key, url: fixture.server.url, codec }));
    }
  });
}
