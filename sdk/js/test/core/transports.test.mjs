// The transport layer without I/O: the order of fallback within a connection attempt, what
// is remembered, and the HTTP transports' framing (lines in, bodies out).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Fallback, TRANSPORTS, fallbackTransport } from '../../dist/fallback.js';
import { endpoint, frameToken, lineSplitter, nextBody } from '../../dist/http.js';
import { Client, json } from '../../dist/index.js';

let urls = 0;
/** A URL of its own per test: what worked is remembered per URL for the whole process. */
const freshUrl = () => `ws://127.0.0.1:1/connection/websocket?t=${++urls}`;
const tick = () => new Promise((r) => setTimeout(r, 0));

/**
 * Fake transports: `plan[name]` says how each attempt of it ends: 'open', 'fail' (before
 * opening, maybe blocked), 'down' (server unreachable), 'hang' (never) or 'throw' (not in
 * this runtime). Records what was tried.
 */
function fakes(plan) {
  const tried = [];
  const make = (name) => (url, protocol, events) => {
    tried.push(name);
    const outcome = plan[name];
    if (outcome === 'throw') throw new TypeError(`no ${name} here`);
    if (outcome !== 'hang') setTimeout(() => (outcome === 'open' ? events.open() : events.close(undefined, `${name} failed`, outcome === 'down')));
    return { send() {}, close() {} };
  };
  return { tried, make };
}

function attempt(fallback, make) {
  const seen = [];
  const events = {
    open: () => seen.push(['open']),
    frame: (f) => seen.push(['frame', f]),
    close: (code, reason, down) => seen.push(['close', reason, !!down]),
  };
  fallbackTransport(fallback, make)('ws://x/connection/websocket', 'peregrine.json', events);
  return seen;
}

test('a transport that fails before opening is followed at once by the next; the one that opens is remembered', async () => {
  const f = new Fallback(TRANSPORTS, freshUrl());
  const { tried, make } = fakes({ websocket: 'fail', http_stream: 'fail', sse: 'open', long_poll: 'open' });
  const seen = attempt(f, make);
  for (let i = 0; i < 5; i++) await tick();
  assert.deepEqual(tried, ['websocket', 'http_stream', 'sse']);
  assert.deepEqual(seen, [['open']], 'the core sees one transport that opened');
  assert.equal(f.current, 'sse');
  assert.equal(f.remembered(), 'sse');
  // The next attempt (a reconnect) starts with it: WebSocket is not tried again.
  const again = fakes({ websocket: 'fail', sse: 'open' });
  attempt(f, again.make);
  await tick();
  assert.deepEqual(again.tried, ['sse']);
});

test('a down server ends the attempt (the backoff applies) instead of falling back, and nothing is remembered', async () => {
  const f = new Fallback(TRANSPORTS, freshUrl());
  const { tried, make } = fakes({ websocket: 'fail', http_stream: 'down', sse: 'open' });
  const seen = attempt(f, make);
  for (let i = 0; i < 5; i++) await tick();
  assert.deepEqual(tried, ['websocket', 'http_stream'], 'sse and long_poll are not tried');
  assert.deepEqual(seen, [['close', 'http_stream: http_stream failed', true]]);
  assert.equal(f.remembered(), undefined);
  // The next attempt starts from the top again.
  const again = fakes({ websocket: 'open' });
  attempt(f, again.make);
  await tick();
  assert.deepEqual(again.tried, ['websocket']);
  assert.equal(f.remembered(), undefined, 'the first of the list is never stored');
});

test('when every transport fails the attempt fails with the last reason', async () => {
  const f = new Fallback(['websocket', 'long_poll'], freshUrl());
  const { tried, make } = fakes({ websocket: 'throw', long_poll: 'fail' });
  const seen = attempt(f, make);
  for (let i = 0; i < 5; i++) await tick();
  assert.deepEqual(tried, ['websocket', 'long_poll']);
  assert.deepEqual(seen, [['close', 'long_poll: long_poll failed', false]]);
});

test('a remembered transport that then fails moves on down the list, never back to WebSocket within the attempt', async () => {
  const url = freshUrl();
  const f = new Fallback(TRANSPORTS, url);
  attempt(f, fakes({ websocket: 'fail', http_stream: 'open' }).make);
  for (let i = 0; i < 3; i++) await tick();
  assert.equal(f.remembered(), 'http_stream');
  const { tried, make } = fakes({ websocket: 'open', http_stream: 'fail', sse: 'fail', long_poll: 'open' });
  attempt(f, make);
  for (let i = 0; i < 5; i++) await tick();
  assert.deepEqual(tried, ['http_stream', 'sse', 'long_poll']);
  assert.equal(new Fallback(TRANSPORTS, url).remembered(), 'long_poll', 'remembered for every client of the page');
  assert.equal(new Fallback(['websocket', 'sse'], url).remembered(), undefined, 'only if it is in the list');
});

test('a transport that closes after opening is reported to the core as it is (no fallback)', async () => {
  const f = new Fallback(TRANSPORTS, freshUrl());
  let events;
  const make = () => (url, protocol, e) => {
    events = e;
    return { send() {}, close() {} };
  };
  const seen = attempt(f, make);
  events.open();
  events.frame('{"id":1}');
  events.close(1006, 'gone', true);
  assert.deepEqual(seen, [['open'], ['frame', '{"id":1}'], ['close', 'gone', true]]);
});

test('the client names its transport; a codec other than JSON or a runtime without one leaves HTTP transports out', () => {
  const c = new Client(freshUrl(), { autoConnect: false, transports: ['sse', 'long_poll'] });
  // Node 20 has fetch but no EventSource.
  assert.equal(c.transport, 'long_poll');
  // By default WebSocket comes first where there is one (Node 22), else HTTP streaming (Node 20).
  assert.equal(new Client(freshUrl(), { autoConnect: false }).transport, typeof WebSocket === 'function' ? 'websocket' : 'http_stream');
  assert.equal(new Client(freshUrl(), { autoConnect: false, WebSocket: class {} }).transport, 'websocket');
  const binary = { ...json, name: 'peregrine.msgpack' };
  assert.throws(() => new Client(freshUrl(), { autoConnect: false, codec: binary, transports: ['http_stream'] }), /none of the transports http_stream/);
  assert.throws(() => new Client(freshUrl(), { autoConnect: false, transports: ['websockets'] }), /unknown transport "websockets"/);
  assert.equal(new Client(freshUrl(), { autoConnect: false, transport: () => ({}) }).transport, 'custom');
});

test('HTTP endpoints are siblings of the WebSocket path, with the scheme mapped', () => {
  assert.equal(endpoint('ws://h:1/connection/websocket', 'sse'), 'http://h:1/connection/sse');
  assert.equal(endpoint('wss://h/a/connection/websocket?x=1', 'poll', { session: 'k', ack: 3 }), 'https://h/a/connection/poll?x=1&session=k&ack=3');
});

test('the NDJSON stream splits into lines across chunks, keepalive lines dropped, UTF-8 split anywhere', () => {
  const split = lineSplitter();
  const bytes = new TextEncoder().encode('{"session":"k"}\n\n{"a":"é"}\n{"b"');
  const cut = bytes.indexOf(0xc3) + 1; // inside the two bytes of é
  assert.deepEqual(split(bytes.subarray(0, cut)), ['{"session":"k"}']);
  assert.deepEqual(split(bytes.subarray(cut)), ['{"a":"é"}']);
  assert.deepEqual(split(new TextEncoder().encode(':1}\n')), ['{"b":1}']);
});

test('commands go up in bodies of at most 100 lines and 64 KiB, in order, each line whole', () => {
  const lines = Array.from({ length: 250 }, (_, i) => `{"id":${i}}`);
  const bodies = [];
  while (lines.length) bodies.push(nextBody(lines));
  assert.deepEqual(bodies.map((b) => b.split('\n').length), [100, 100, 50]);
  assert.equal(bodies.join('\n').split('\n').map((l) => JSON.parse(l).id).join(), Array.from({ length: 250 }, (_, i) => i).join());
  const big = ['x'.repeat(40000), 'y'.repeat(40000), 'z'];
  assert.equal(nextBody(big), 'x'.repeat(40000), 'a second line would pass 64 KiB');
  assert.equal(nextBody(big), 'y'.repeat(40000) + '\nz');
  assert.deepEqual(big, []);
  assert.equal(nextBody(['w'.repeat(70000)]).length, 70000, 'one line over the limit still goes (the server says 413)');
});

test('a transport that hangs until the attempt is given up is skipped by the next attempt, once', async () => {
  const f = new Fallback(TRANSPORTS, freshUrl());
  const { tried, make } = fakes({ websocket: 'fail', http_stream: 'hang', sse: 'open' });
  const t = fallbackTransport(f, make)('ws://x/connection/websocket', 'peregrine.json', { open() {}, frame() {}, close() {} });
  for (let i = 0; i < 3; i++) await tick();
  assert.deepEqual(tried, ['websocket', 'http_stream']);
  t.close(1000, 'no connect reply within 10000 ms'); // the core's connect timeout
  attempt(f, make);
  for (let i = 0; i < 3; i++) await tick();
  assert.deepEqual(tried, ['websocket', 'http_stream', 'sse'], 'the next attempt starts after the one that hung');
  assert.equal(f.remembered(), 'sse');
  // Closing an attempt that already opened is no hang.
  const opened = fallbackTransport(f, make)('ws://x/connection/websocket', 'peregrine.json', { open() {}, frame() {}, close() {} });
  for (let i = 0; i < 3; i++) await tick();
  opened.close(1000, 'client closed');
  assert.equal(f.first(), 'sse');
});

test("the session's credentials are the token its connect or latest refresh carried", () => {
  assert.equal(frameToken('{"id":1,"connect":{"token":"t1","name":"js"}}'), 't1');
  assert.equal(frameToken('{"id":7,"refresh":{"token":"t2"}}'), 't2');
  assert.equal(frameToken('{"id":2,"subscribe":{"channel":"c"}}'), undefined);
  // A subscription token is not the connection's.
  assert.equal(frameToken('{"id":3,"subscribe":{"channel":"private:x","token":"s1"}}'), undefined);
  assert.equal(frameToken('{"id":4,"publish":{"channel":"c","data":{"token":"not one"}}}'), undefined);
});
