// The SDK's behaviour against the real server, run the same in Node (test/node) and in
// Chromium (test/browser/scenarios.test.mjs). `runScenario` is self-contained: Playwright
// sends its source to the page, where the SDK comes from the bundle's globals.

/**
 * The server for the scenarios: history for 300 publications, and the publish rate limit
 * lifted (a rate-limited publish is sent again later, and ones already in flight behind it
 * may land first: docs/js-client.md, "Choices worth knowing").
 */
export const SCENARIO_SERVER_ARGS = [
  '--set', 'channels.default.history_size=1000',
  '--set', 'client.publish_rate=100000',
  '--set', 'client.publish_burst=100000',
];

/** Scenario key -> title. */
export const SCENARIOS = {
  payloads: 'publish and subscribe: JSON and binary payloads arrive as published, in order',
  recovery: 'recovery: a client resuming from a saved position gets exactly what it missed',
  history: 'history reads every page, in order, each once',
  presence: 'presence and join/leave',
  beyondTop: 'a position beyond the top of the stream is a reset, not silence',
  acks: 'publishes are acknowledged in call order with increasing offsets',
};

/**
 * Runs scenario `name` (a key of SCENARIOS) against `url` with `codec` ("json" or "msgpack")
 * over `transports` (the Client's option; default: all, WebSocket first). `sdk` gives
 * { Client, codecs, WebSocket } in Node; in a page it is read from the bundle's globals.
 * Throws on a failed check.
 */
export async function runScenario({ name, url, codec, transports }, sdk) {
  sdk ??= {
    Client: globalThis.Peregrine.Client,
    codecs: { json: globalThis.Peregrine.json, msgpack: globalThis.PeregrineMsgpack.msgpack },
  };
  const clients = [];
  const used = [];
  const client = (options = {}) => {
    const c = new sdk.Client(url, { codec: sdk.codecs[codec], WebSocket: sdk.WebSocket, transports, ...options });
    clients.push(c);
    c.on('connected', (e) => used.push(e.transport));
    return c;
  };
  const check = (ok, what) => {
    if (!ok) throw new Error('check failed: ' + what);
  };
  const same = (a, b, what) => check(JSON.stringify(a) === JSON.stringify(b), `${what}: got ${JSON.stringify(a)}, want ${JSON.stringify(b)}`);
  const until = async (fn, what) => {
    for (let i = 0; i < 400; i++) {
      if (fn()) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error('timed out waiting for ' + what);
  };
  const channel = `${codec}-${name}-${Date.now()}-${Math.random().toString(36).slice(2, 6)}`;
  const collect = (sub) => {
    const events = [];
    sub.on('publication', (p) => events.push(['publication', p]));
    for (const type of ['gap', 'reset']) sub.on(type, (e) => events.push([type, e]));
    return events;
  };
  try {
    if (name === 'payloads') {
      const [reader, writer] = [client(), client()];
      const sub = reader.subscribe(channel);
      const events = collect(sub);
      await sub.ready;
      const sent = [{ text: 'héllo', n: 1 }, [1, 'two', null], 'plain', 12.5, new Uint8Array([0, 1, 127, 128, 255])];
      for (const data of sent) await writer.publish(channel, data);
      await until(() => events.length === sent.length, 'every publication');
      events.forEach(([type, p], i) => {
        check(type === 'publication', 'only publications');
        check(p.offset === i + 1, `offset ${p.offset} at ${i}`);
        if (sent[i] instanceof Uint8Array) {
          check(p.data instanceof Uint8Array && p.binary, 'bytes come back as bytes');
          same([...p.data], [...sent[i]], 'bytes');
        } else same(p.data, sent[i], 'JSON value');
      });
    } else if (name === 'recovery') {
      const writer = client();
      await writer.publish(channel, { n: 1 });
      const first = client();
      const sub = first.subscribe(channel);
      await sub.ready;
      const saved = sub.position;
      first.close();
      for (let n = 2; n <= 6; n++) await writer.publish(channel, { n });
      const again = client();
      const resumed = again.subscribe(channel, { since: saved });
      const events = collect(resumed);
      let recovered;
      resumed.on('subscribed', (e) => (recovered = e.recovered));
      await resumed.ready;
      await until(() => events.length >= 5, 'the missed publications');
      await writer.publish(channel, { n: 7 });
      await until(() => events.length >= 6, 'the next live one');
      check(recovered === true, 'recovered');
      same(events.map(([t, p]) => t === 'publication' && p.data.n), [2, 3, 4, 5, 6, 7], 'missed then live, each once');
    } else if (name === 'history') {
      const writer = client();
      const acks = [];
      for (let n = 1; n <= 300; n++) acks.push(writer.publish(channel, { n }));
      await Promise.all(acks);
      const all = await writer.history(channel);
      same(all.publications.map((p) => p.data.n), Array.from({ length: 300 }, (_, i) => i + 1), 'all 300 over two pages');
      check(all.more === false && all.offset === 300, 'the top, nothing more');
      const last = await writer.history(channel, { limit: 3, reverse: true });
      same(last.publications.map((p) => p.data.n), [300, 299, 298], 'newest first');
      check(last.more === true, 'more before them');
      const after = await writer.history(channel, { since: { epoch: all.epoch, offset: 295 } });
      same(after.publications.map((p) => p.offset), [296, 297, 298, 299, 300], 'after a position');
    } else if (name === 'presence') {
      const [a, b] = [client({ name: 'a' }), client({ name: 'b' })];
      const subA = a.subscribe(channel, { joinLeave: true });
      const joins = [];
      const leaves = [];
      subA.on('join', (i) => joins.push(i.client));
      subA.on('leave', (i) => leaves.push(i.client));
      await subA.ready;
      const subB = b.subscribe(channel);
      await subB.ready;
      const present = await a.presence(channel);
      check(Object.keys(present).length === 2, `two present: ${JSON.stringify(present)}`);
      const bId = b.state.clientId;
      check(present[bId] && present[bId].client === bId, 'b is present');
      await until(() => joins.includes(bId), 'b joined');
      subB.unsubscribe();
      await until(() => leaves.includes(bId), 'b left');
    } else if (name === 'beyondTop') {
      const writer = client();
      const ack = await writer.publish(channel, { n: 1 });
      const reader = client();
      const sub = reader.subscribe(channel, { since: { epoch: ack.epoch, offset: 999 } });
      const events = collect(sub);
      await sub.ready;
      await until(() => events.length >= 1, 'a reset');
      check(events[0][0] === 'reset' && events[0][1].epoch === ack.epoch && events[0][1].offset === 1, `reset: ${JSON.stringify(events)}`);
      await writer.publish(channel, { n: 2 });
      await until(() => events.length >= 2, 'the next publication');
      check(events[1][1].data.n === 2, 'goes on after the reset');
    } else if (name === 'acks') {
      const writer = client();
      const acks = await Promise.all(Array.from({ length: 50 }, (_, i) => writer.publish(channel, { n: i + 1 })));
      same(acks.map((a) => a.offset), Array.from({ length: 50 }, (_, i) => i + 1), 'offsets in call order');
      check(acks.every((a) => !a.duplicate), 'no duplicates');
    } else {
      throw new Error('no scenario ' + name);
    }
    check(used.length && used.every((t) => t === (transports ? transports[0] : 'websocket')), `the transports used: ${used}`);
  } finally {
    for (const c of clients) c.close();
  }
}
