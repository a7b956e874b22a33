// The Client: drives the protocol core (Session) over a transport, with real time, token
// providers and the browser's signals (online, visibility, page reloads).
import { Emitter } from './emitter.js';
import { Fallback, TRANSPORTS, type TransportName, fallbackTransport } from './fallback.js';
import { httpStreamTransport, longPollTransport, sseTransport } from './http.js';
import { json } from './json.js';
import { toPayload } from './payload.js';
import { type QueueStore, restored } from './queue.js';
import { type ClientEvents, Session, type State } from './session.js';
import { loadPositions, savePositions } from './storage.js';
import type { SubscribeOptions, Subscription } from './subscription.js';
import { type Transport, type TransportFactory, type WebSocketLike, webSocketTransport } from './transport.js';
import type { ClientInfo, Codec, Publication, PublishResult, StreamPosition } from './wire.js';

export interface ClientOptions {
  /** Connection token (a JWT), when the server wants one. */
  token?: string;
  /** Where fresh connection tokens come from: before connecting without one, and ahead of expiry. */
  getToken?: () => Promise<string>;
  /** Client name sent in `connect` (default "js"). */
  name?: string;
  /** The protocol encoding (default JSON; `msgpack` from "@peregrine/client/msgpack"). */
  codec?: Codec;
  /** A WebSocket constructor where there is no global one (Node 20: the `ws` package). */
  WebSocket?: WebSocketLike;
  /**
   * The transports to try, in order (default: all, `['websocket', 'http_stream', 'sse',
   * 'long_poll']`). Those this runtime or the codec cannot use are left out (the HTTP ones
   * speak JSON only; `sse` needs EventSource). See docs/js-client.md, "Transports".
   */
  transports?: TransportName[];
  /** A transport of your own instead (then `transports` is not used). */
  transport?: TransportFactory;
  /** Keep queued publishes across page reloads: localStorageQueue() or indexedDBQueue(). */
  queue?: QueueStore;
  /**
   * Keep subscription positions in sessionStorage (under this key, or "peregrine.positions"
   * for `true`), so that a reloaded page recovers what it missed instead of starting afresh.
   */
  keepPositions?: boolean | string;
  /** Reconnect backoff, ms: full jitter in 0..min(max, min * 2^attempt). Default 250 .. 20000. */
  backoff?: { min?: number; max?: number };
  /** Ping interval, ms (default: the server's, 25 s). */
  pingInterval?: number;
  /** A ping unanswered this long means a dead connection, ms (default 10000). */
  pongTimeout?: number;
  /** Handshake and connect reply, ms (default 10000). */
  connectTimeout?: number;
  /** A publish unacknowledged this long is sent again (same key), ms (default 5000). */
  ackTimeout?: number;
  /** Resends after ack timeouts before a publish fails (default 3; reconnects do not count). */
  publishRetries?: number;
  /** Publishes waiting for an ack at most (default 1000); beyond, publish fails at once. */
  queueLimit?: number;
  /** Unacknowledged publishes on the wire at most (default 256). */
  maxInFlight?: number;
  /** Presence and history, including a wait for a connection, ms (default 10000). */
  requestTimeout?: number;
  /** Largest frame sent, bytes (default 65536, the server's default limit). */
  frameLimit?: number;
  /** Connect at once (default true); else call connect(). */
  autoConnect?: boolean;
}

export interface HistoryOptions {
  /** At most this many publications (default: all that history holds). */
  limit?: number;
  /** After this position (before it with `reverse`). */
  since?: StreamPosition;
  /** Newest first. */
  reverse?: boolean;
}

export interface HistoryResult {
  publications: Publication[];
  epoch: string;
  offset: number;
  /** More exist in the direction read (only when `limit` stopped the read). */
  more: boolean;
}

/** A hidden tab asleep longer than this checks its connection at once when shown again, ms. */
const LONG_SLEEP = 10000;

export class Client extends Emitter<ClientEvents> {
  private core: Session;
  private conn?: Transport;
  private openTransport: TransportFactory;
  private fallback?: Fallback;
  private codec: Codec;
  private timer?: ReturnType<typeof setTimeout>;
  private armedAt = Infinity;
  private woken = false;
  private started: Promise<void>;
  private positionsKey?: string;
  private detach: (() => void)[] = [];

  constructor(
    readonly url: string,
    options: ClientOptions = {},
  ) {
    super();
    if (!/^wss?:\/\//.test(url)) throw new TypeError(`url must start with ws:// or wss://, got "${url}"`);
    const o = options;
    this.codec = o.codec || json;
    if (o.transport) this.openTransport = o.transport;
    else {
      const g = globalThis as any;
      const text = this.codec.name === json.name;
      const usable: Record<TransportName, TransportFactory | false> = {
        websocket: !!(o.WebSocket || g.WebSocket) && webSocketTransport(o.WebSocket),
        http_stream: text && !!(g.fetch && g.ReadableStream) && httpStreamTransport,
        sse: text && !!g.EventSource && sseTransport,
        long_poll: text && !!g.fetch && longPollTransport,
      };
      const wanted = o.transports || TRANSPORTS;
      for (const name of wanted) if (!(name in usable)) throw new TypeError(`unknown transport "${name}"`);
      const names = wanted.filter((n) => usable[n]);
      if (!names.length) {
        throw new TypeError(`none of the transports ${wanted} works here: WebSocket needs one (Node 20: the ws package), the others fetch and JSON`);
      }
      this.fallback = new Fallback(names, url);
      this.openTransport = fallbackTransport(this.fallback, (n) => usable[n as TransportName] as TransportFactory);
    }
    const getToken = o.getToken;
    this.core = new Session(
      {
        name: o.name || 'js',
        backoff: { min: 250, max: 20000, ...o.backoff },
        pingInterval: o.pingInterval,
        pongTimeout: o.pongTimeout || 10000,
        connectTimeout: o.connectTimeout || 10000,
        ackTimeout: o.ackTimeout || 5000,
        publishRetries: o.publishRetries ?? 3,
        queueLimit: o.queueLimit || 1000,
        maxInFlight: o.maxInFlight || 256,
        requestTimeout: o.requestTimeout || 10000,
        frameLimit: o.frameLimit || 65536,
      },
      this.codec,
      {
        open: () => this.open(),
        send: (frame) => this.conn?.send(frame),
        close: (code, reason) => {
          const t = this.conn;
          this.conn = undefined;
          t?.close(code, reason);
        },
        fetchToken: () => ask(() => getToken!(), (t) => this.core.token(t)),
        fetchSubscriptionToken: (sub) =>
          ask(() => sub.options.getToken!(sub.channel), (t) => this.core.subscriptionToken(sub, t)),
        wake: () => this.wake(),
      },
      o.token,
      !!getToken,
      o.queue,
    );
    // Application events are the core's, re-emitted by the client.
    // A connected state names its transport.
    for (const type of ['state', 'connecting', 'connected', 'disconnected', 'closed', 'message'] as const) {
      this.core.events.on(type, (e: any) =>
        this.emit(type, type !== 'message' && e.type === 'connected' ? { ...e, transport: this.transport } : e),
      );
    }
    this.core.events.on('closed', () => this.stop());
    if (o.keepPositions) this.positionsKey = o.keepPositions === true ? 'peregrine.positions' : o.keepPositions;
    this.listen();
    // Publishes a previous page left in the store go first, before any made meanwhile.
    this.started = Promise.resolve(o.queue?.load() || []).then(
      (items) => void this.core.queue.items.unshift(...items.map(restored)),
      () => {},
    );
    if (o.autoConnect !== false) this.connect();
  }

  /** The connection state. */
  get state(): State {
    return this.core.state;
  }

  /**
   * The transport of the connection (or of the attempt under way): a name of
   * `transports`, or "custom" with the `transport` option.
   */
  get transport(): string {
    return this.fallback ? this.fallback.current : 'custom';
  }

  /** Starts connecting (only needed with `autoConnect: false`). */
  connect(): void {
    this.started.then(() => {
      this.core.start();
      this.wake();
    });
  }

  /** Closes for good. Queued publishes fail (or stay in the queue store). */
  close(): void {
    this.savePositions();
    this.core.close();
  }

  /**
   * Publishes `data` (any JSON value, or bytes) on `channel`. Resolves when the server
   * acknowledged it, after resends and reconnects if needed; each lands once.
   */
  publish(channel: string, data: unknown): Promise<PublishResult> {
    return new Promise((resolve, reject) => {
      this.core.publish(channel, toPayload(data), (error, result) => (error ? reject(error) : resolve(result!)));
    });
  }

  /**
   * Subscribes to `channel`. Listen with `on('publication', ...)`, and for `gap` / `reset`,
   * which say what was lost; `await sub.ready` for the first subscribe.
   */
  subscribe(channel: string, options: SubscribeOptions = {}): Subscription {
    const saved = this.positionsKey && !options.since ? loadPositions(this.positionsKey)[channel] : undefined;
    return this.core.subscribe(channel, saved ? { ...options, since: saved } : options);
  }

  /** Who is subscribed to `channel`: client id -> client info. */
  async presence(channel: string): Promise<Record<string, ClientInfo>> {
    return (await this.core.call('presence', { channel })).clients;
  }

  /**
   * Reads `channel`'s history, every page the server answers with, in order, each once. If
   * the epoch changes between two pages (history was lost), the read starts again.
   */
  async history(channel: string, options: HistoryOptions = {}): Promise<HistoryResult> {
    const { limit, reverse } = options;
    let since = options.since;
    let publications: Publication[] = [];
    let epoch: string | undefined;
    for (;;) {
      const body = { channel, limit: limit === undefined ? undefined : limit - publications.length, since, reverse };
      const r = await this.core.call('history', body);
      if (epoch !== undefined && r.epoch !== epoch) {
        publications = [];
        since = options.since;
        epoch = undefined;
        continue;
      }
      epoch = r.epoch;
      const page: Publication[] = (r.publications || []).map(this.codec.publication);
      publications.push(...page);
      const last = page[page.length - 1];
      if (!r.more || !last || (limit !== undefined && publications.length >= limit)) {
        return { publications, epoch: r.epoch, offset: r.offset, more: !!r.more };
      }
      since = { epoch: r.epoch, offset: last.offset };
    }
  }

  /** Subscriptions by channel. */
  get subscriptions(): ReadonlyMap<string, Subscription> {
    return this.core.subs;
  }

  private open(): void {
    let t: Transport | undefined;
    const current = () => t !== undefined && t === this.conn;
    try {
      t = this.openTransport(this.url, this.codec.name, {
        open: () => current() && this.core.opened(),
        frame: (data) => current() && this.core.frame(data),
        close: (code, reason) => {
          if (!current()) return;
          this.conn = undefined;
          this.core.closed(code, reason);
        },
      });
      this.conn = t;
    } catch (e) {
      setTimeout(() => this.core.closed(undefined, (e as Error).message));
    }
  }

  /** Output is batched: everything the application and the server did in this task goes out together. */
  private wake(): void {
    if (this.woken) return;
    this.woken = true;
    queueMicrotask(() => {
      this.woken = false;
      this.core.flush();
      this.arm();
    });
  }

  /** One timer at the core's next deadline; an early wake-up just re-arms it. */
  private arm(): void {
    const at = this.core.deadline();
    if (at >= this.armedAt) return;
    clearTimeout(this.timer);
    this.armedAt = at;
    if (at === Infinity) return;
    this.timer = setTimeout(
      () => {
        this.armedAt = Infinity;
        this.core.timer();
      },
      Math.min(Math.max(0, at - Date.now()), 2 ** 31 - 1),
    );
  }

  /** Browser manners: reconnect when the network returns or a sleeping tab is shown again. */
  private listen(): void {
    if (typeof addEventListener !== 'function' || typeof document === 'undefined') return;
    let hiddenAt = 0;
    const on = (target: EventTarget, type: string, handler: () => void) => {
      target.addEventListener(type, handler);
      this.detach.push(() => target.removeEventListener(type, handler));
    };
    on(globalThis, 'online', () => this.core.reconnectNow());
    on(globalThis, 'offline', () => this.core.goOffline('the browser went offline'));
    on(document, 'visibilitychange', () => {
      if (document.hidden) hiddenAt = Date.now();
      else if (Date.now() - hiddenAt > LONG_SLEEP) {
        this.core.reconnectNow();
        this.core.checkAlive();
      }
    });
    on(globalThis, 'pagehide', () => this.savePositions());
  }

  private savePositions(): void {
    if (!this.positionsKey) return;
    const positions = loadPositions(this.positionsKey);
    for (const sub of this.core.subs.values()) {
      const p = sub.position;
      if (p) positions[sub.channel] = p;
    }
    savePositions(this.positionsKey, positions);
  }

  private stop(): void {
    clearTimeout(this.timer);
    this.armedAt = Infinity;
    for (const d of this.detach.splice(0)) d();
  }
}

/** Runs a token provider and hands its answer (or failure) on. */
function ask(fetch: () => Promise<string>, answer: (token: string | Error) => void): void {
  Promise.resolve().then(fetch).then(
    (t) => answer(typeof t === 'string' && t ? t : new Error('the token provider gave no token')),
    (e) => answer(e instanceof Error ? e : new Error(String(e))),
  );
}
