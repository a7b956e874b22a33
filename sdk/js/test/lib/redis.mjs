// A real redis-server for the multi-node test: a free loopback port, no persistence, its
// files in a temporary directory, stopped by PID.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, stopAndRemove } from './server.mjs';

export async function startRedis() {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'peregrine-js-redis-'));
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (c) => (log += c));
  child.stderr.on('data', (c) => (log += c));
  const spawned = new Promise((_, reject) => child.on('error', (e) => reject(new Error(`cannot start redis-server (apt-get install -y redis-server): ${e.message}`))));
  const ready = (async () => {
    for (const deadline = Date.now() + 20000; Date.now() < deadline; ) {
      if (log.includes('Ready to accept connections')) return;
      if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}:\n${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGKILL');
    throw new Error(`redis-server did not start within 20 s:\n${log}`);
  })();
  await Promise.race([ready, spawned]);
  return {
    port,
    address: `127.0.0.1:${port}`,
    stop: () => stopAndRemove(child, 'SIGKILL', dir),
  };
}

