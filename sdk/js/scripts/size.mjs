// Bundle sizes: our JSON core (every feature: index.ts), our core with MessagePack, and the
// clients people use today, each bundled and minified by the same esbuild settings for the
// browser and gzipped at level 9 (zlib, as `gzip -9`). Writes the table to
// docs/benchmarks.md ("TypeScript SDK size") and fails if the JSON core is over 10 KB (7.6 KB
// before the HTTP fallback transports, 9.2 KB with them), or not under three quarters of
// socket.io-client's.
//
//   node scripts/size.mjs [--no-docs]
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';
import { bundle } from './bundle-options.mjs';
import { writeSection } from './docs-section.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const docs = join(root, '../../docs/benchmarks.md');
const LIMIT = 10 * 1024;
const version = (name) => JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')).version;

const subjects = [
  { name: 'peregrine JSON core (this SDK, every feature)', code: `export * from './src/index.ts';` },
  { name: 'peregrine + MessagePack (`@peregrine/client/msgpack`)', code: `export * from './src/index.ts'; export * from './src/msgpack.ts';` },
  { name: `socket.io-client ${version('socket.io-client')}`, code: `export { io } from 'socket.io-client';` },
  { name: `centrifuge-js ${version('centrifuge')} (JSON)`, code: `export { Centrifuge } from 'centrifuge';` },
  { name: `centrifuge-js ${version('centrifuge')} (Protobuf)`, code: `export { Centrifuge } from 'centrifuge/build/protobuf';` },
];

const rows = [];
for (const s of subjects) {
  const result = await esbuild.build({
    ...bundle,
    stdin: { contents: s.code, resolveDir: root, loader: 'ts' },
    format: 'esm',
    platform: 'browser',
    write: false,
  });
  const code = result.outputFiles[0].contents;
  rows.push({ name: s.name, minified: code.length, gzipped: gzipSync(code, { level: 9 }).length });
}

const kb = (n) => (n / 1024).toFixed(1) + ' KB';
const table = [
  '| bundle | minified | gzip -9 |',
  '|---|---:|---:|',
  ...rows.map((r) => `| ${r.name} | ${kb(r.minified)} | ${kb(r.gzipped)} |`),
].join('\n');
console.log(table);

const section = `## TypeScript SDK size

Each client bundled for the browser and minified by the same esbuild settings (ES2020, ESM,
\`sdk/js/scripts/bundle-options.mjs\`), gzipped at level 9; KB = 1024 bytes. Ours is the whole
JSON core: reconnects, recovery, gap/reset, acknowledged publishes, the offline queue with its
localStorage and IndexedDB stores, tokens, presence, history, browser manners, and WebSocket
with its fallbacks (HTTP streaming, SSE, long-polling). Command:
\`cd sdk/js && npm ci && node scripts/size.mjs\` (it rewrites this section).

${table}
`;
if (!process.argv.includes('--no-docs')) {
  writeSection(docs, section);
}
const core = rows[0].gzipped;
const socketIo = rows[2].gzipped;
if (core > LIMIT || core > socketIo * 0.75) {
  console.error(`size: the JSON core is ${core} bytes gzipped: over the ${LIMIT} budget, or not under 3/4 of socket.io-client's ${socketIo}`);
  process.exit(1);
}
console.log(`size: JSON core ${core} bytes gzipped (budget ${LIMIT})`);
