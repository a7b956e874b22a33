// The HTTP transports, for where a WebSocket cannot get through (docs/protocol.md, "HTTP
// transports"): HTTP streaming (fetch streams), Server-Sent Events (EventSource) and
// long-polling. The server's frames come down the stream or the polls; the client's go up
// by POST /connection/send, one request at a time so that they arrive in order. Only the
// JSON encoding. A transport reports its events from later tasks, never from its factory.
import { utf8Length } from './payload.js';
import type { Transport, TransportEvents, TransportFactory } from './transport.js';

/** What the server takes in one POST /connection/send: bytes (max_message_size) and commands. */
const SEND_BYTES = 65536;
const SEND_COMMANDS = 100;

/** The HTTP endpoint `path` beside the WebSocket endpoint `url` (ws: -> http:, wss: -> https:). */
export function endpoint(url: string, path: string, query: Record<string, string | number> = {}): string {
  const u = new URL(url.replace(/^ws/, 'http'));
  u.pathname = u.pathname.replace(/[^/]*$/, path);
  for (const k in query) u.searchParams.set(k, String(query[k]));
  return u.href;
}

/**
 * Takes from `lines` (JSON messages, in order) the next body for POST /connection/send: as
 * many as fit the server's limits, and always at least one.
 */
export function nextBody(lines: string[]): string {
  let n = 0;
  let bytes = 0;
  while (n < lines.length && n < SEND_COMMANDS) {
    bytes += utf8Length(lines[n]) + 1;
    if (n && bytes > SEND_BYTES) break;
    n++;
  }
  return lines.splice(0, n).join('\n');
}

/**
 * Splits a byte stream into its non-empty lines (empty ones are keepalives): each call
 * returns the lines that `chunk` completed.
 */
export function lineSplitter(): (chunk: Uint8Array) => string[] {
  const decoder = new TextDecoder();
  let rest = '';
  return (chunk) => {
    const lines = (rest + decoder.decode(chunk, { stream: true })).split('\n');
    rest = lines.pop()!;
    return lines.filter((l) => l.trim());
  };
}

/**
 * The token a frame's `connect` or `refresh` carries, if any: once connected as a user, the
 * server answers a session's later requests only with that user's token.
 */
export function frameToken(line: string): string | undefined {
  if (!line.includes('"token"')) return;
  const m = JSON.parse(line);
  return (m.connect || m.refresh || {}).token;
}

/** What an HTTP transport's loop reports through. */
interface Link {
  signal: AbortSignal;
  /** Headers for a request speaking for the session (its user's token). */
  auth(): Record<string, string>;
  /** The server gave the session its key: open. */
  open(key: string): void;
  frame(data: string): void;
  /** The transport ended; `down`: the server could not be reached, or refused the session. */
  end(reason: string, down?: boolean): void;
  /** Checks an answer: false (and ended) for an error status. */
  ok(r: Response): Promise<boolean>;
}

/** The shape all three share: a loop that reads, and POSTs that send, under one AbortController. */
function httpTransport(url: string, events: TransportEvents, run: (link: Link) => Promise<void> | (() => void)): Transport {
  const abort = new AbortController();
  let over = false;
  let stop: (() => void) | void;
  let lines: string[] | undefined;
  let sending = false;
  let sendUrl = '';
  let token: string | undefined;
  const finish = () => {
    over = true;
    abort.abort();
    if (typeof stop === 'function') stop();
  };
  const link: Link = {
    signal: abort.signal,
    auth: (): Record<string, string> => (token ? { authorization: 'Bearer ' + token } : {}),
    open(key) {
      if (over || lines) return;
      lines = [];
      sendUrl = endpoint(url, 'send', { session: key });
      events.open();
    },
    frame: (data) => over || events.frame(data),
    end(reason, down) {
      if (over) return;
      finish();
      events.close(undefined, reason, down && !lines);
    },
    async ok(r) {
      if (r.ok) return true;
      // The server's reason; a proxy's error page is cut short.
      const why = ((await r.text().catch(() => '')) || r.statusText).trim().slice(0, 120);
      // 5xx: the server (or the proxy's upstream) is down or draining; 401/403/429: it
      // refuses this client. Another transport would fare no better.
      const s = r.status;
      link.end(`HTTP ${s}: ${why}`, s >= 500 || s === 401 || s === 403 || s === 429);
      return false;
    },
  };
  // A 429 (too many commands waiting) is retried after a pause; any other failure ends the
  // connection, and the session core resends what was not acknowledged on the next one.
  const pump = async () => {
    sending = true;
    try {
      while (lines!.length) {
        const body = nextBody(lines!);
        for (let pause = 50; ; pause *= 2) {
          const r = await fetch(sendUrl, { method: 'POST', body, headers: link.auth(), signal: abort.signal });
          if (r.status !== 429 || pause > 2000) {
            if (!(await link.ok(r))) return;
            break;
          }
          await new Promise((wait) => setTimeout(wait, pause));
        }
      }
      sending = false;
    } catch (e) {
      link.end('sending failed: ' + (e as Error).message);
    }
  };
  const running = run(link);
  if (typeof running === 'function') stop = running;
  else running.catch((e) => link.end((e as Error).message, true));
  return {
    send(frame) {
      if (over || !lines) return;
      for (const line of (frame as string).split('\n')) {
        token = frameToken(line) || token;
        lines.push(line);
      }
      if (!sending) pump();
    },
    close: () => over || finish(),
  };
}

/** HTTP streaming: POST /connection/stream, read as newline-delimited JSON. */
export const httpStreamTransport: TransportFactory = (url, _protocol, events) =>
  httpTransport(url, events, async (link) => {
    const r = await fetch(endpoint(url, 'stream'), { method: 'POST', body: '', signal: link.signal, cache: 'no-store' });
    if (!(await link.ok(r))) return;
    const reader = r.body!.getReader();
    const split = lineSplitter();
    let opened = false;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return link.end('the stream ended');
      const lines = split(value);
      if (!opened && lines.length) {
        const key = JSON.parse(lines.shift()!).session;
        if (typeof key !== 'string') return link.end('the stream did not start with a session');
        opened = true;
        link.open(key);
      }
      if (lines.length) link.frame(lines.join('\n'));
    }
  });

/** Server-Sent Events: GET /connection/sse with the runtime's EventSource. */
export const sseTransport: TransportFactory = (url, _protocol, events) =>
  httpTransport(url, events, (link) => {
    const source = new EventSource(endpoint(url, 'sse'));
    source.addEventListener('session', (e) => link.open((e as MessageEvent).data));
    source.onmessage = (e) => link.frame(e.data);
    // EventSource would reconnect by itself into a new session that knows nothing of this
    // one: the session core reconnects instead, and recovers.
    source.onerror = () => link.end('the event stream failed');
    return () => source.close();
  });

/** Long-polling: POST /connection/poll/open, then held GET /connection/poll requests. */
export const longPollTransport: TransportFactory = (url, _protocol, events) =>
  httpTransport(url, events, async (link) => {
    const r = await fetch(endpoint(url, 'poll/open'), { method: 'POST', body: '', signal: link.signal });
    if (!(await link.ok(r))) return;
    const session = (await r.json()).session;
    link.open(session);
    // `ack`: frames up to it arrived; the server sends again what an answer lost on the way held.
    for (let ack = 0; ; ) {
      const p = await fetch(endpoint(url, 'poll', { session, ack }), {
        headers: link.auth(),
        signal: link.signal,
        cache: 'no-store',
      });
      if (!(await link.ok(p))) return;
      const answer: { seq: number; frames: string[]; closed?: boolean } = await p.json();
      if (answer.frames.length) link.frame(answer.frames.join('\n'));
      if (answer.closed) return link.end('the session ended');
      ack = answer.seq;
    }
  });
