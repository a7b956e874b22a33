// A real nginx for the fallback tests, on a free loopback port, with its pid file, logs and
// temporary files under its own temporary prefix, stopped by PID. It serves this SDK's
// directory (pages, bundles, the chat example) under /sdk/, so pages and the server's
// HTTP endpoints share one origin, and proxies to the real `peregrine serve` under
// prefixes that each break something the way networks do:
//
//   /open/             passes Upgrade: WebSocket works (as deploy/nginx/peregrine.conf)
//   /no-upgrade/       passes neither Upgrade nor Connection: every WebSocket handshake fails
//   /no-stream/        as /no-upgrade/, and /connection/stream is 404 (HTTP streaming blocked)
//   /poll-only/        as /no-stream/, and /connection/sse is 404 too
//   /buffered/         no Upgrade, and streams buffered whatever the server asks (buffering
//                      on, X-Accel-Buffering ignored, gzip): a stream's first lines wait in
//                      the compressor until kilobytes follow
//   /down/             an upstream nothing listens on: every request gets 502
//
// A client's URL is ws://127.0.0.1:PORT/<prefix>/connection/websocket; its HTTP endpoints
// are siblings of that path.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, stopAndRemove } from './server.mjs';

const SDK_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** nginx on PATH or in the sbin directories (Debian's is /usr/sbin/nginx). */
function findNginx() {
  const dirs = (process.env.PATH || '').split(':').concat(['/usr/sbin', '/sbin', '/usr/local/sbin']);
  for (const dir of dirs) {
    const candidate = path.join(dir, 'nginx');
    if (dir && fs.existsSync(candidate)) return candidate;
  }
  throw new Error('nginx is not installed: apt-get install -y nginx (scripts/test-all installs it)');
}

/**
 * A proxied location: `upgrade` passes the WebSocket handshake headers on; `buffered` holds
 * streamed responses back (see /buffered/ above).
 */
function proxied(prefix, upstreamPort, upgrade, buffered = false) {
  return `
    location /${prefix}/ {
        proxy_pass http://127.0.0.1:${upstreamPort}/;
        proxy_http_version 1.1;
        ${upgrade ? 'proxy_set_header Upgrade $http_upgrade;\n        proxy_set_header Connection $connection_upgrade;' : '# No Upgrade, no Connection: nginx drops both (hop-by-hop).'}
        proxy_set_header Host $http_host;
        proxy_read_timeout 75s;
        ${buffered ? 'proxy_buffering on;\n        proxy_ignore_headers X-Accel-Buffering;\n        gzip on;\n        gzip_min_length 0;\n        gzip_types application/x-ndjson text/event-stream;' : 'proxy_buffering off;'}
    }`;
}

/** The main file around `http`, the contents of the http block: everything in `dir`. */
function mainConfig(dir, http) {
  return `master_process off;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 1024; }
http {
    access_log ${dir}/access.log;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
${http}
}
`;
}

function testConfig(port, serverPort, downPort) {
  const blocked = (prefix, endpoint) => `
    location = /${prefix}/connection/${endpoint} { return 404 "blocked by the test proxy\\n"; }`;
  return `    types { text/html html; text/javascript js mjs; text/css css; }
    map $http_upgrade $connection_upgrade { default upgrade; '' ''; }
    server {
        listen 127.0.0.1:${port};
        location /sdk/ { alias ${SDK_DIR}/; }
        ${proxied('open', serverPort, true)}
        ${proxied('no-upgrade', serverPort, false)}
        ${proxied('no-stream', serverPort, false)}
        ${blocked('no-stream', 'stream')}
        ${proxied('poll-only', serverPort, false)}
        ${blocked('poll-only', 'stream')}
        ${blocked('poll-only', 'sse')}
        ${proxied('buffered', serverPort, false, true)}
        ${proxied('down', downPort, false)}
    }`;
}

/** This SDK's directory under /sdk/ (pages, bundles, examples), with the types modules need. */
const pagesLocation = `
    location /sdk/ {
        alias ${SDK_DIR}/;
        types { text/html html; text/javascript js mjs; text/css css; }
    }`;

/**
 * The shipped deploy/nginx/peregrine.conf (what users run in front of several nodes) with its
 * upstream servers replaced by `servers` (`host:port` and parameters each, e.g.
 * "127.0.0.1:8081 backup") and its `listen` by loopback `port`; with `pages`, it also serves
 * this SDK's directory under /sdk/, so pages share the nodes' origin.
 */
export function renderShipped(port, servers, { pages = false } = {}) {
  const shipped = fs.readFileSync(path.join(SDK_DIR, '../../deploy/nginx/peregrine.conf'), 'utf8');
  let upstream = false;
  let written = false;
  const out = [];
  for (const line of shipped.split('\n')) {
    const code = line.split('#')[0].trim();
    if (/^upstream \S+ \{$/.test(code)) upstream = true;
    else if (upstream && code === '}') upstream = false;
    if (upstream && code.startsWith('server ')) {
      if (!written) out.push(...servers.map((s) => `    server ${s};`));
      written = true;
    } else if (/^listen /.test(code)) out.push(`    listen 127.0.0.1:${port};`, ...(pages ? [pagesLocation] : []));
    else out.push(line);
  }
  if (!written) throw new Error('no upstream servers in deploy/nginx/peregrine.conf: the rendering no longer fits it');
  return out.join('\n');
}

/** nginx in front of the servers at `servers` (see renderShipped), with the shipped configuration. */
export async function startBalancer(servers, options = {}) {
  const port = await freePort();
  return runNginx(port, renderShipped(port, servers, options));
}

/** Starts nginx in front of the server on `serverPort`; resolves once it listens. */
export async function startNginx(serverPort) {
  const [port, downPort] = [await freePort(), await freePort()];
  return runNginx(port, testConfig(port, serverPort, downPort));
}

/** Runs nginx with `http` as its http block, listening on `port`; resolves once it does. */
async function runNginx(port, http) {
  const binary = findNginx();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'peregrine-js-nginx-'));
  fs.writeFileSync(path.join(dir, 'nginx.conf'), mainConfig(dir, http));
  const child = spawn(binary, ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', path.join(dir, 'nginx.conf')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c));
  const errorLog = () => stderr + (fs.existsSync(path.join(dir, 'error.log')) ? fs.readFileSync(path.join(dir, 'error.log'), 'utf8') : '');
  const deadline = Date.now() + 20000;
  while (!(await listening(port))) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}:\n${errorLog()}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`nginx did not listen within 20 s:\n${errorLog()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    pid: child.pid,
    /** The page at `page` (a path under sdk/js) from nginx's origin. */
    page: (page) => `http://127.0.0.1:${port}/sdk/${page}`,
    /** The WebSocket URL under `prefix` (open, no-upgrade, no-stream, poll-only, down). */
    url: (prefix, viaPort = port) => `ws://127.0.0.1:${viaPort}/${prefix}/connection/websocket`,
    /** Request lines of the access log, e.g. "GET /no-upgrade/connection/websocket" (with status). */
    requests: () =>
      fs.existsSync(path.join(dir, 'access.log'))
        ? fs.readFileSync(path.join(dir, 'access.log'), 'utf8').split('\n').filter(Boolean).map((l) => {
            const m = l.match(/"(\w+) ([^ ?"]+)[^"]*" (\d+)/);
            return m ? `${m[1]} ${m[2]} ${m[3]}` : l;
          })
        : [],
    errorLog,
    stop: () => stopAndRemove(child, 'SIGTERM', dir),
  };
}

function listening(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
