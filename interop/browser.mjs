// Headless Chromium against our echo server, for scripts/interop.sh:
//
//   node interop/browser.mjs --deflate-url ws://127.0.0.1:PORT [--plain-url ws://127.0.0.1:PORT2]
//                            [--chromium /usr/bin/chromium] [--timeout SECONDS]
//
// Launches Debian's chromium through playwright-core (never a downloaded
// browser), opens a tiny page served from 127.0.0.1, and in the page:
//
//  1. direct: `new WebSocket(deflate-url)`; ws.extensions must name
//     permessage-deflate; text (JSON-like, compressible) and binary
//     (random-ish) messages of 0 B to 8 MiB are sent one at a time and each
//     echo is compared byte for byte in the page; then close with 1000 and
//     expect 1000 back, cleanly.
//  2. tap: the same through a TCP relay in this process that reads the frame
//     headers going by, to prove both sides really compress: every data
//     message of 126 B and more carries RSV1 in both directions, and the
//     compressible text shrinks on the wire.
//  3. plain (with --plain-url, a server started with --no-deflate): nothing is
//     negotiated (ws.extensions is "") and messages still echo.
//
// Prints one summary line per pass and `browser: N passed, M failed`; exits
// non-zero on any failure.

import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20, 8 << 20];
const TAP_SIZES = [0, 126, 65536, 1 << 20];
const PLAIN_SIZES = [0, 125, 65536, 1 << 20];
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : fallback;
}

const deflateUrl = option('--deflate-url');
const plainUrl = option('--plain-url');
const executablePath = option('--chromium', '/usr/bin/chromium');
const timeoutMs = Number(option('--timeout', '240')) * 1000;
if (!deflateUrl) {
  console.error('usage: node interop/browser.mjs --deflate-url ws://127.0.0.1:PORT [--plain-url URL]');
  process.exit(2);
}

let passed = 0;
let failed = 0;
function check(ok, what) {
  if (ok) passed += 1;
  else {
    failed += 1;
    console.error(`browser: FAILED: ${what}`);
  }
  return ok;
}

// Runs inside the page: everything it needs is defined in here.
async function inPage({ url, sizes, expectDeflate }) {
  let state = 0x2545f491;
  const rng = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
  };
  const users = ['ada', 'grace', 'linus', 'barbara'];
  const symbols = ['BTC-USD', 'ETH-USD', 'EUR-USD', 'AAPL'];
  const words = ['hello', 'deflate', 'window', 'ticker', 'price', 'room', 'ok', 'ship it'];
  // JSON-like ASCII (chat messages and ticker updates), exactly `size` bytes.
  const jsonLike = (size) => {
    const parts = ['['];
    let length = 1;
    let id = 0;
    while (length < size) {
      id += 1;
      const r = rng();
      const record =
        r % 2 === 0
          ? `{"type":"chat","id":${id},"user":"${users[(r >>> 1) % 4]}","room":"lobby-${r % 7}",` +
            `"text":"${words[(r >>> 3) % 8]} ${words[(r >>> 6) % 8]} ${r % 1000}"},`
          : `{"type":"tick","id":${id},"symbol":"${symbols[(r >>> 1) % 4]}","bid":${40000 + (r % 500)}.` +
            `${String(r % 100).padStart(2, '0')},"ask":${40001 + (r % 500)}.${String((r >>> 8) % 100).padStart(2, '0')},` +
            `"ts":${1700000000000 + id * 17}},`;
      parts.push(record);
      length += record.length;
    }
    return parts.join('').slice(0, size);
  };
  // Mostly random bytes, with every fourth 256-byte block a near copy of the one before.
  const randomIsh = (size) => {
    const out = new Uint8Array(size);
    for (let at = 0; at < size; at += 256) {
      const block = at / 256;
      for (let i = 0; i < 256 && at + i < size; i += 1) {
        out[at + i] = block % 4 === 3 ? out[at + i - 256] ^ (i & 1) : rng() & 0xff;
      }
    }
    return out;
  };

  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  const inbox = [];
  let waiting = null;
  let closeEvent = null;
  const deliver = (item) => {
    if (waiting) {
      const resolve = waiting;
      waiting = null;
      resolve(item);
    } else inbox.push(item);
  };
  ws.onmessage = (event) => deliver({ data: event.data });
  ws.onclose = (event) => {
    closeEvent = { code: event.code, reason: event.reason, wasClean: event.wasClean };
    deliver(null);
  };
  const next = () => (inbox.length ? Promise.resolve(inbox.shift()) : new Promise((r) => (waiting = r)));
  const opened = await new Promise((resolve) => {
    ws.onopen = () => resolve(true);
    ws.onerror = () => resolve(false);
  });
  if (!opened) return { error: `could not open ${url}`, results: [] };

  const results = [];
  for (const size of sizes) {
    for (const kind of ['text', 'binary']) {
      const sent = kind === 'text' ? jsonLike(size) : randomIsh(size);
      const started = performance.now();
      ws.send(sent);
      const item = await next();
      const ms = performance.now() - started;
      if (item === null) {
        results.push({ kind, size, ok: false, detail: `connection closed: ${JSON.stringify(closeEvent)}` });
        return { extensions: ws.extensions, results, close: closeEvent };
      }
      let ok;
      let detail = '';
      if (kind === 'text') {
        ok = typeof item.data === 'string' && item.data === sent;
        if (!ok) detail = `got ${typeof item.data} of length ${item.data.length ?? item.data.byteLength}`;
      } else if (!(item.data instanceof ArrayBuffer)) {
        ok = false;
        detail = `got ${typeof item.data}`;
      } else {
        const got = new Uint8Array(item.data);
        ok = got.length === sent.length;
        let first = -1;
        for (let i = 0; ok && i < got.length; i += 1) {
          if (got[i] !== sent[i]) {
            ok = false;
            first = i;
          }
        }
        if (!ok) detail = `got ${got.length} bytes, first difference at ${first}`;
      }
      results.push({ kind, size, ok, detail, ms: Math.round(ms) });
    }
  }
  ws.close(1000, 'interop done');
  while ((await next()) !== null) {
    // Discard anything still arriving before the close.
  }
  return { extensions: ws.extensions, expectDeflate, results, close: closeEvent };
}

// A TCP relay that counts data messages and their compressed flag per direction.
function startTap(target) {
  const { hostname, port } = new URL(target);
  const stats = { up: [], down: [] }; // up: browser -> server, down: server -> browser
  const parser = (messages) => {
    let head = Buffer.alloc(0); // HTTP head, then frame headers
    let inHttp = true;
    let skip = 0; // payload bytes of the current frame still to pass
    let current = null;
    return (chunk) => {
      let data = chunk;
      while (data.length > 0) {
        if (skip > 0) {
          const n = Math.min(skip, data.length);
          skip -= n;
          data = data.subarray(n);
          continue;
        }
        head = Buffer.concat([head, data]);
        data = Buffer.alloc(0);
        if (inHttp) {
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) return;
          inHttp = false;
          data = head.subarray(end + 4);
          head = Buffer.alloc(0);
          continue;
        }
        if (head.length < 2) return;
        const b0 = head[0];
        const b1 = head[1];
        let at = 2;
        let length = b1 & 0x7f;
        if (length === 126) {
          if (head.length < 4) return;
          length = head.readUInt16BE(2);
          at = 4;
        } else if (length === 127) {
          if (head.length < 10) return;
          length = Number(head.readBigUInt64BE(2));
          at = 10;
        }
        if (b1 & 0x80) at += 4;
        if (head.length < at) return;
        const opcode = b0 & 0x0f;
        if (opcode === 1 || opcode === 2) {
          current = { opcode, rsv1: (b0 & 0x40) !== 0, wire: 0, frames: 0 };
          messages.push(current);
        }
        if (opcode <= 2 && current) {
          current.wire += length;
          current.frames += 1;
        }
        data = head.subarray(at);
        head = Buffer.alloc(0);
        skip = length;
      }
    };
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    const up = parser(stats.up);
    const down = parser(stats.down);
    client.on('data', (chunk) => {
      up(chunk);
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      down(chunk);
      client.write(chunk);
    });
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, stats, url: `ws://127.0.0.1:${server.address().port}` }));
  });
}

function withTimeout(promise, what) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${timeoutMs / 1000} s`)), timeoutMs);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

function mib(bytes) {
  return (bytes / (1 << 20)).toFixed(2);
}

// Checks one pass's results; returns the line to print.
function judge(name, outcome, { expectDeflate, sizes, seconds }) {
  const before = { passed, failed };
  if (!check(!outcome.error, `${name}: ${outcome.error}`)) return `${name}: ${outcome.error}`;
  const extensions = outcome.extensions ?? '';
  if (expectDeflate) {
    check(extensions.includes('permessage-deflate'), `${name}: ws.extensions is ${JSON.stringify(extensions)}`);
  } else {
    check(extensions === '', `${name}: ws.extensions is ${JSON.stringify(extensions)}, expected ""`);
  }
  check(outcome.results.length === sizes.length * 2, `${name}: ${outcome.results.length} results`);
  for (const r of outcome.results) {
    check(r.ok, `${name}: ${r.kind} of ${r.size} B: ${r.detail}`);
  }
  const close = outcome.close;
  check(close && close.code === 1000 && close.wasClean, `${name}: close ${JSON.stringify(close)}`);
  const slow = outcome.results
    .filter((r) => r.size >= 1 << 20)
    .map((r) => `${r.kind} ${mib(r.size)} MiB ${r.ms} ms`)
    .join(', ');
  return (
    `${name}: ${JSON.stringify(extensions)}, ${outcome.results.length} messages ` +
    `(${sizes[0]} B..${mib(sizes[sizes.length - 1])} MiB; ${slow}), close ${close?.code}, ` +
    `${seconds.toFixed(2)} s: ${passed - before.passed} passed, ${failed - before.failed} failed`
  );
}

async function main() {
  const page = http.createServer((_, response) => {
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end('<!doctype html><meta charset="utf-8"><title>peregrine interop</title><p>interop</p>');
  });
  await new Promise((resolve) => page.listen(0, '127.0.0.1', resolve));
  const pageUrl = `http://127.0.0.1:${page.address().port}/`;
  const tap = await startTap(deflateUrl);
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'peregrine-chromium-'));
  let context;
  try {
    const launched = Date.now();
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      args: FLAGS,
      timeout: 60_000,
    });
    const tab = context.pages()[0] ?? (await context.newPage());
    await tab.goto(pageUrl);
    const version = context.browser()?.version() ?? (await tab.evaluate(() => navigator.userAgent));
    console.log(`browser: chromium ${version} (${executablePath}) up in ${Date.now() - launched} ms`);

    const pass = async (name, url, sizes, expectDeflate) => {
      const started = Date.now();
      const outcome = await withTimeout(tab.evaluate(inPage, { url, sizes, expectDeflate }), name);
      const seconds = (Date.now() - started) / 1000;
      console.log(judge(name, outcome, { expectDeflate, sizes, seconds }));
      return outcome;
    };

    await pass('chromium -> echo_server (direct)', deflateUrl, SIZES, true);

    const tapped = await pass('chromium -> tap -> echo_server', tap.url, TAP_SIZES, true);
    const describe = (messages, direction) => {
      const compressed = messages.filter((m) => m.rsv1).length;
      return `${direction} ${compressed}/${messages.length} compressed`;
    };
    const { up, down } = tap.stats;
    if (check(up.length === TAP_SIZES.length * 2 && down.length === TAP_SIZES.length * 2,
      `tap saw ${up.length} messages up and ${down.length} down, expected ${TAP_SIZES.length * 2} each`)) {
      TAP_SIZES.forEach((size, i) => {
        for (const [j, kind] of [[0, 'text'], [1, 'binary']]) {
          const [u, d] = [up[2 * i + j], down[2 * i + j]];
          if (size >= 126) {
            check(u.rsv1, `chromium sent ${kind} ${size} B without RSV1`);
            check(d.rsv1, `echo_server sent ${kind} ${size} B without RSV1`);
          }
          if (kind === 'text' && size >= 65536) {
            check(u.wire < size / 2, `chromium's ${size} B text took ${u.wire} B on the wire`);
            check(d.wire < size / 2, `echo_server's ${size} B text took ${d.wire} B on the wire`);
          }
        }
      });
      const text = (list) => list.filter((_, k) => k % 2 === 0 && TAP_SIZES[k / 2] >= 65536);
      const ratio = (list) => {
        const raw = TAP_SIZES.filter((s) => s >= 65536).reduce((a, b) => a + b, 0);
        return (raw / text(list).reduce((a, m) => a + m.wire, 0)).toFixed(1);
      };
      console.log(
        `browser: tap: ${describe(up, 'chromium->server')}, ${describe(down, 'server->chromium')}; ` +
          `JSON-like text ratio ${ratio(up)}x up, ${ratio(down)}x down (${tapped.extensions})`,
      );
    }

    if (plainUrl) await pass('chromium -> echo_server --no-deflate', plainUrl, PLAIN_SIZES, false);
  } catch (error) {
    check(false, `${error.stack ?? error}`);
  } finally {
    await context?.close().catch(() => {});
    tap.server.close();
    page.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  console.log(`browser: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

main();
