// The real `peregrine serve` for the tests: started on a loopback port, stopped by PID.
// SDK_TEST_SERVER_BIN names the binary (scripts/js-sdk.sh builds it); default: the workspace's
// release build. (Not a PEREGRINE_ variable: the server reads those as configuration, so
// they are left out of its environment too.)
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '../../../..');
export const BIN = process.env.SDK_TEST_SERVER_BIN || join(process.env.CARGO_TARGET_DIR || join(repo, 'target'), 'release/peregrine');

/** A free loopback port (so a restarted server can come back on the same one). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts `peregrine serve` in development mode with `args` (e.g. --set k=v) on `port`
 * (free one by default). Resolves once it listens.
 */
export async function startServer({ port, args = [], prefix = [] } = {}) {
  port ??= await freePort();
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^PEREGRINE_/i.test(k)));
  // `prefix`: a command to run it under, e.g. ['taskset', '-c', '0'] in benchmarks.
  const command = [...prefix, BIN, 'serve', '--listen', `127.0.0.1:${port}`, ...args];
  const child = spawn(command[0], command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env });
  let log = '';
  const collect = (chunk) => (log += chunk);
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill(); // not left running after a failed start
      reject(new Error(`peregrine serve did not listen within 20 s:\n${log}`));
    }, 20000);
    const check = () => {
      if (log.includes('listening on')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', check);
    child.stderr.on('data', check);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${BIN}: ${e.message}`));
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`peregrine serve exited with ${code}:\n${log}`));
    });
  });
  const server = {
    port,
    pid: child.pid,
    url: `ws://127.0.0.1:${port}/connection/websocket`,
    api: `http://127.0.0.1:${port}/api`,
    log: () => log,
    /** Stops it by PID (SIGTERM: a graceful shutdown, disconnect pushes and close frames). */
    stop: (signal = 'SIGTERM') =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.removeAllListeners('exit');
        child.once('exit', () => resolve());
        child.kill(signal);
      }),
  };
  return server;
}

/** Stops a process we spawned, by its PID (`signal`), then removes its directory `dir`. */
export function stopAndRemove(child, signal, dir) {
  return new Promise((resolve) => {
    const done = () => {
      fs.rmSync(dir, { recursive: true, force: true });
      resolve();
    };
    if (child.exitCode !== null || child.signalCode !== null) return done();
    child.once('exit', done);
    child.kill(signal);
  });
}

/** POST to the server's HTTP API. */
export async function api(server, method, body) {
  const response = await fetch(`${server.api}/${method}`, { method: 'POST', body: JSON.stringify(body) });
  const json = await response.json();
  if (!response.ok) throw new Error(`/api/${method}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}
