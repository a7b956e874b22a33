// Acceptance 7: the shared scenarios under Node (the `ws` package as WebSocket, since Node
// 20 has no global one), against the real server; then with JSON over the HTTP transports
// Node has (fetch streams and long-polling; no EventSource in Node 20).
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { Client, json } from '../../dist/index.js';
import { msgpack } from '../../dist/msgpack.js';
import { startServer } from '../lib/server.mjs';
import { SCENARIOS, SCENARIO_SERVER_ARGS, runScenario } from '../shared/scenarios.mjs';

let server;
before(async () => {
  server = await startServer({ args: SCENARIO_SERVER_ARGS });
});
after(() => server?.stop());

for (const codec of ['json', 'msgpack']) {
  describe(`node, ${codec}`, () => {
    for (const [key, title] of Object.entries(SCENARIOS)) {
      test(title, () => runScenario({ name: key, url: server.url, codec }, { Client, codecs: { json, msgpack }, WebSocket }));
    }
  });
}

for (const transport of ['http_stream', 'long_poll']) {
  describe(`node, json over ${transport}`, () => {
    for (const [key, title] of Object.entries(SCENARIOS)) {
      test(title, () => runScenario({ name: key, url: server.url, codec: 'json', transports: [transport] }, { Client, codecs: { json } }));
    }
  });
}
