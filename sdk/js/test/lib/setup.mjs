// The usual fixture of a browser test file: one real server and one Chromium, started
// before its tests and stopped after them. Fields are filled in by the `before` hook.
import { after, before } from 'node:test';
import { launch } from './browser.mjs';
import { startServer } from './server.mjs';

// More setup goes in `setup(fixture)` (which may return a cleanup): Node runs a file's
// `before` hooks concurrently, so a second hook could not count on this one.
export function serverAndBrowser(serverOptions, setup = async () => {}) {
  const fixture = { server: undefined, browser: undefined };
  let cleanup;
  before(async () => {
    fixture.server = await startServer(serverOptions);
    fixture.browser = await launch();
    cleanup = await setup(fixture);
  });
  after(async () => {
    await cleanup?.();
    await fixture.browser?.context.setOffline(false);
    await fixture.browser?.close();
    await fixture.server?.stop();
  });
  return fixture;
}
