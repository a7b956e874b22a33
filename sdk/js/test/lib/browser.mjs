// Debian's Chromium, headless, driven by playwright-core (never a downloaded browser), with
// a fresh profile. Pages are file:// pages of this directory loading the built bundle.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
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
const here = path.dirname(fileURLToPath(import.meta.url));
/** The test page: the SDK bundle and the helpers of page.js. */
export const TEST_PAGE = pathToFileURL(path.join(here, 'page.html')).href;
export const CHAT_PAGE = pathToFileURL(path.join(here, '../../examples/chat/index.html')).href;

/** `executablePath`: another binary or a wrapper (the benchmark pins Chromium to a core). */
export async function launch({ executablePath = CHROMIUM } = {}) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'peregrine-js-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: FLAGS,
    timeout: 60000,
  });
  const errors = [];
  return {
    context,
    /** Page errors seen so far (uncaught exceptions in any page). */
    errors,
    /** A new page at `url`; `withoutWebSocket`: `window.WebSocket` removed before any script runs. */
    async page(url = TEST_PAGE, { withoutWebSocket = false } = {}) {
      const page = await context.newPage();
      page.on('pageerror', (e) => errors.push(e.message));
      if (withoutWebSocket) await page.addInitScript(() => delete window.WebSocket);
      await page.goto(url);
      return page;
    },
    async close() {
      await context.close();
      fs.rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Polls `fn` (async) until it returns a truthy value, or fails naming `what`. */
export async function until(fn, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
