// The highest rate one Chromium page keeps up with on a busy channel: a Node publisher sends
// 200-byte publications as fast as the server takes them (a window of 256 unacknowledged)
// for DURATION seconds; the page counts the publications delivered to its handler and the
// main thread's busy time (CDP Performance.getMetrics TaskDuration). Targets: this SDK on
// `peregrine serve`, socket.io-client on the Socket.IO server of bench/peers/node.
//
//   node bench/page-rate.mjs [--reps 3] [--duration 10] [--no-docs]
//
// Needs the release `peregrine` binary (SDK_TEST_SERVER_BIN, or CARGO_TARGET_DIR/target)
// and `npm ci` in bench/peers/node. Writes docs/benchmarks.md "TypeScript SDK in a page".
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { Client } from '../dist/index.js';
import { launch, TEST_PAGE } from '../test/lib/browser.mjs';
import { freePort, startServer } from '../test/lib/server.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const repo = join(root, '../..');
const arg = (name, fallback) => {
  const at = process.argv.indexOf(name);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
};
const REPS = arg('--reps', 3);
const DURATION = arg('--duration', 10);
const WARMUP = 2;
const WINDOW = 256;
const PAD = 'x'.repeat(200 - JSON.stringify({ seq: 1000000, pad: '' }).length);

async function peregrineTarget() {
  const server = await startServer({
    args: ['--set', 'client.publish_rate=100000000', '--set', 'client.publish_burst=100000000'],
  });
  return {
    url: server.url,
    stop: () => server.stop(),
    subscribe: (page) =>
      page.evaluate(async (url) => {
        window.B = { count: 0, disconnects: 0, gaps: 0 };
        const c = new Peregrine.Client(url);
        c.on('disconnected', () => B.disconnects++);
        const sub = c.subscribe('bench');
        sub.on('publication', () => B.count++);
        sub.on('gap', () => B.gaps++);
        await sub.ready;
      }, server.url),
    publisher() {
      const client = new Client(server.url, { WebSocket, queueLimit: WINDOW * 2 });
      return { send: (data) => client.publish('bench', data), close: () => client.close() };
    },
  };
}

async function socketioTarget() {
  const port = await freePort();
  const child = spawn(process.execPath, [join(repo, 'bench/peers/node/socketio-server.mjs'), String(port)], { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise((resolve, reject) => {
    child.stderr.on('data', (d) => String(d).includes('listening') && resolve());
    child.on('exit', (code) => reject(new Error('socket.io server exited with ' + code)));
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    stop: () => new Promise((resolve) => { child.removeAllListeners('exit'); child.once('exit', resolve); child.kill(); }),
    async subscribe(page) {
      await page.addScriptTag({ path: join(root, 'node_modules/socket.io-client/dist/socket.io.min.js') });
      await page.evaluate(async (url) => {
        window.B = { count: 0 };
        const socket = io(url, { transports: ['websocket'] });
        socket.on('publication', () => B.count++);
        await new Promise((resolve) => socket.on('connect', resolve));
        socket.emit('subscribe', 'bench');
        await new Promise((r) => setTimeout(r, 200));
      }, url);
    },
    publisher() {
      const socket = io(url, { transports: ['websocket'] });
      return {
        send: (data) => new Promise((resolve) => socket.emit('publish', 'bench', data, resolve)),
        close: () => socket.close(),
      };
    },
  };
}

async function run(browser, makeTarget) {
  const target = await makeTarget();
  const page = await browser.page(TEST_PAGE);
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  const busy = async () => (await cdp.send('Performance.getMetrics')).metrics.find((m) => m.name === 'TaskDuration').value;
  await target.subscribe(page);
  const publisher = target.publisher();
  let running = true;
  let acked = 0;
  let seq = 0;
  const lanes = Array.from({ length: WINDOW }, async () => {
    while (running) {
      await publisher.send({ seq: ++seq, pad: PAD });
      acked++;
    }
  });
  await new Promise((r) => setTimeout(r, WARMUP * 1000));
  const [count0, busy0, acked0, t0] = [await page.evaluate(() => B.count), await busy(), acked, performance.now()];
  await new Promise((r) => setTimeout(r, DURATION * 1000));
  const [count1, busy1, acked1, t1] = [await page.evaluate(() => B.count), await busy(), acked, performance.now()];
  console.error(JSON.stringify(await page.evaluate(() => B)));
  running = false;
  await Promise.race([Promise.all(lanes), new Promise((r) => setTimeout(r, 3000))]);
  publisher.close();
  await page.close();
  await target.stop();
  const seconds = (t1 - t0) / 1000;
  const delivered = count1 - count0;
  return {
    rate: delivered / seconds,
    published: (acked1 - acked0) / seconds,
    cpuUs: ((busy1 - busy0) * 1e6) / delivered,
    busy: (busy1 - busy0) / seconds,
  };
}

const targets = { 'peregrine (this SDK)': peregrineTarget, 'socket.io-client 4.8': socketioTarget };
const results = Object.fromEntries(Object.keys(targets).map((k) => [k, []]));
const browser = await launch();
try {
  for (let rep = 0; rep < REPS; rep++) {
    for (const [name, make] of Object.entries(targets)) {
      const r = await run(browser, make);
      results[name].push(r);
      console.error(`rep ${rep + 1} ${name}: ${r.rate.toFixed(0)}/s delivered, ${r.published.toFixed(0)}/s published, ${r.cpuUs.toFixed(1)} µs main thread per message, main thread ${(r.busy * 100).toFixed(0)}% busy`);
    }
  }
} finally {
  await browser.close();
}

const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = Object.entries(results).map(([name, rs]) => ({
  name,
  rate: median(rs.map((r) => r.rate)),
  published: median(rs.map((r) => r.published)),
  cpuUs: median(rs.map((r) => r.cpuUs)),
  busy: median(rs.map((r) => r.busy)),
}));
const [ours, theirs] = rows;
const table = [
  '| client (server) | delivered to the handler /s | published /s | main-thread CPU per message | main thread busy |',
  '|---|---:|---:|---:|---:|',
  ...rows.map((r) => `| ${r.name} | ${Math.round(r.rate).toLocaleString('en')} | ${Math.round(r.published).toLocaleString('en')} | ${r.cpuUs.toFixed(1)} µs | ${(r.busy * 100).toFixed(0)}% |`),
].join('\n');
const ratio = ours.rate / theirs.rate;
console.log(table + `\n\nratio: ${ratio.toFixed(2)}x`);

if (!process.argv.includes('--no-docs')) {
  const docs = join(repo, 'docs/benchmarks.md');
  const section = `## TypeScript SDK in a page

The highest rate one headless Chromium page keeps up with on a busy channel: a Node
publisher sends 200-byte JSON publications as fast as the server takes them (256
unacknowledged at a time) for ${DURATION} s after ${WARMUP} s of warm-up; the page counts the
publications decoded and delivered to its handler, and Chromium's main-thread busy time
(CDP \`Performance.getMetrics\` TaskDuration) gives the CPU per message. This SDK against
\`peregrine serve\` (development mode, rate limits lifted), socket.io-client 4.8 against the
Socket.IO server of \`bench/peers/node\` (WebSocket transport; its publisher emits
\`publish\` with an ack). Medians of ${REPS} runs, on the 2-core machine everything shares
(server, publisher and browser). Command: \`cd sdk/js && node bench/page-rate.mjs\`
(after \`scripts/js-sdk.sh install\` and \`npm ci\` in \`bench/peers/node\`).

${table}

This SDK delivers **${ratio.toFixed(1)}x** socket.io-client's rate. "published /s" is what the
server accepted meanwhile: where it is above "delivered", the page (or its connection) was
the bottleneck.
`;
  const text = readFileSync(docs, 'utf8');
  const start = text.indexOf('## TypeScript SDK in a page');
  let updated;
  if (start < 0) updated = text.trimEnd() + '\n\n' + section;
  else {
    const next = text.indexOf('\n## ', start + 1);
    updated = text.slice(0, start) + section + (next < 0 ? '' : text.slice(next));
  }
  writeFileSync(docs, updated);
}
