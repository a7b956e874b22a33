// Choosing a transport: the first of the `transports` option that gets through, tried in
// order within one connection attempt; the one that worked is remembered for the page.
import type { Transport, TransportFactory } from './transport.js';

/**
 * The transports, in the default order of preference: `websocket`, `http_stream` (a
 * streamed fetch response), `sse` (EventSource), `long_poll` (held requests).
 */
export type TransportName = 'websocket' | 'http_stream' | 'sse' | 'long_poll';

export const TRANSPORTS: TransportName[] = ['websocket', 'http_stream', 'sse', 'long_poll'];

/** Under this key (+ the URL) in sessionStorage, and in memory: the transport that worked. */
const KEY = 'peregrine.transport:';
const memory = new Map<string, string>();

function storage(): Storage | undefined {
  try {
    return globalThis.sessionStorage;
  } catch {
    return undefined; // access denied (sandboxed frames, some privacy modes)
  }
}

/**
 * The order of transports within connection attempts, without I/O. An attempt starts with
 * the remembered transport (or the first); when one fails before opening, the next is
 * tried at once, unless the failure says the server is down or refuses (`down`): then the
 * attempt fails and the reconnect backoff applies, as it does after the last transport.
 * The one that opened is remembered (forgotten when it is the first of the list). One that
 * neither opened nor failed before the attempt was given up (a proxy that holds or buffers
 * it) is skipped by the next attempt.
 */
export class Fallback {
  private i = 0;
  private skip = 0;

  constructor(
    readonly names: string[],
    private key: string,
  ) {}

  /** The transport in use, or being tried. */
  get current(): string {
    return this.names[this.i];
  }

  /** The transport that worked last for this URL on this page, if it is one of ours. */
  remembered(): string | undefined {
    const name = memory.get(this.key) ?? storage()?.getItem(KEY + this.key) ?? undefined;
    return name && this.names.includes(name) ? name : undefined;
  }

  /** A connection attempt starts: the transport to try first. */
  first(): string {
    this.i = this.skip || Math.max(0, this.names.indexOf(this.remembered()!));
    this.skip = 0;
    return this.current;
  }

  /** The attempt was given up while the current one had neither opened nor failed. */
  hung(): void {
    if (this.i + 1 < this.names.length) this.skip = this.i + 1;
  }

  /** The current one failed before opening: the next to try now, or none (back off). */
  next(down: boolean): string | undefined {
    if (down || this.i + 1 >= this.names.length) return undefined;
    return this.names[++this.i];
  }

  /** The current one opened: remember it. */
  opened(): void {
    const s = storage();
    try {
      if (this.i) s?.setItem(KEY + this.key, this.current);
      else s?.removeItem(KEY + this.key);
    } catch {
      // A full or read-only store: memory alone remembers it.
    }
    if (this.i) memory.set(this.key, this.current);
    else memory.delete(this.key);
  }
}

/**
 * One transport made of several: within a connection attempt, tries `fallback`'s
 * transports in turn (`make` gives each name's factory) until one opens, and only then
 * reports to the session core, which sees one transport.
 */
export function fallbackTransport(fallback: Fallback, make: (name: string) => TransportFactory): TransportFactory {
  return (url, protocol, events) => {
    let current: Transport | undefined;
    let opened = false;
    const attempt = (name: string) => {
      let t: Transport | undefined;
      const failed = (reason: string, down?: boolean) => {
        if (t !== current) return;
        const next = opened ? undefined : fallback.next(!!down);
        if (next) attempt(next);
        else events.close(undefined, `${name}: ${reason}`, down);
      };
      try {
        current = t = make(name)(url, protocol, {
          open() {
            if (t !== current) return;
            opened = true;
            fallback.opened();
            events.open();
          },
          frame: (data) => t === current && events.frame(data),
          close: (code, reason, down) => (opened ? t === current && events.close(code, reason, down) : failed(reason, down)),
        });
      } catch (e) {
        // No such transport in this runtime, or a bad URL: on to the next, from a later task.
        current = t = { send() {}, close() {} };
        setTimeout(() => failed((e as Error).message));
      }
    };
    attempt(fallback.first());
    return {
      send: (frame) => current?.send(frame),
      close(code, reason) {
        const t = current;
        current = undefined;
        // Given up before it opened (the connect timeout: going offline says so first).
        if (t && !opened && (globalThis.navigator as Navigator | undefined)?.onLine !== false) fallback.hung();
        t?.close(code, reason);
      },
    };
  };
}
