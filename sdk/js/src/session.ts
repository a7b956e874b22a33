// The protocol core, without I/O: transport events, API calls and timer ticks in; frames to
// send, transport opens and closes, token fetches, deadlines and application events out
// (through Host). The Client drives it over a WebSocket; tests drive it by hand. Behaviour
// mirrors the Rust SDK (crates/peregrine-client/src/session): docs/client.md is the contract.
import { backoffCeiling, backoffDelay } from './backoff.js';
import { DISCONNECT, ERROR, UNSUBSCRIBE_EXPIRED, isTemporary, shouldReconnect, shouldResubscribe } from './codes.js';
import { Emitter } from './emitter.js';
import { PeregrineError } from './errors.js';
import { type Payload, utf8Length } from './payload.js';
import { PublishQueue, type Queued, type QueueStore } from './queue.js';
import { ACTIVE, type SubscribeOptions, Subscription, WAITING } from './subscription.js';
import { JUMP, type SubscriptionEvent } from './tracker.js';
import type { ClientEvents, Host, Settings, State } from './session-api.js';
import type { Codec, Command, PublishResult, ReplyError, ServerMessage, SubscribeResult } from './wire.js';

export type { ClientEvents, Host, Settings, State } from './session-api.js';

/** Why a connection ended, and what comes next. */
interface Ending {
  code?: number;
  reason: string;
  reconnect: boolean;
  /** The token was refused as expired or invalid: get a fresh one first. */
  newToken?: boolean;
}

const retry = (reason: string, code?: number): Ending => ({ code, reason, reconnect: true });

function ending(code: number, reason: string, reconnect = shouldReconnect(code)): Ending {
  return { code, reason, reconnect, newToken: code === DISCONNECT.EXPIRED || code === DISCONNECT.INVALID_TOKEN };
}

/** A presence or history call: waits for a connection, then for its reply. */
interface Call {
  type: string;
  body: unknown;
  deadline: number;
  settle(error: Error | null, result?: any): void;
}

/** What a command in flight was, to route its reply. */
type Pending =
  | { type: 'publish' | 'refresh' | 'ping' | 'unsubscribe' }
  | { type: 'subscribe' | 'sub_refresh'; sub: Subscription }
  | { type: 'call'; call: Call };

type Phase = 'idle' | 'token' | 'connecting' | 'online' | 'waiting' | 'closed';

const serverError = (e: ReplyError) => new PeregrineError('server', e.message, e.code);

export class Session {
  readonly events = new Emitter<ClientEvents>();
  state: State = { type: 'connecting', attempt: 0 };
  readonly subs = new Map<string, Subscription>();
  readonly queue: PublishQueue;
  private phase: Phase = 'idle';
  private transportOpen = false;
  private attempt = 0;
  private connectionToken?: string;
  private fetchingToken = false;
  private tokenRetried = false;
  private calls: Call[] = [];
  private pending = new Map<number, Pending>();
  private outbox: Command[] = [];
  private lastId = 0;
  private connectId = 0;
  private subId = 0;
  private keyPrefix: string;
  private lastKey = 0;
  /** The server's disconnect push, which precedes its close frame. */
  private disconnect?: Ending;
  private lastHeard = 0;
  private pingSent?: number;
  private pingInterval = 25000;
  private reconnectAt?: number;
  private connectDeadline?: number;
  private refreshAt?: number;
  private resubscribeAt?: number;
  /** Queued publishes may be sendable: send them at the next flush. */
  private pump = false;
  /** Connected in the frame being read: resume once it is read. */
  private resuming = false;

  constructor(
    private s: Settings,
    private codec: Codec,
    private host: Host,
    token: string | undefined,
    private hasTokenProvider: boolean,
    store?: QueueStore,
    private now: () => number = Date.now,
    private random: () => number = Math.random,
  ) {
    this.connectionToken = token;
    this.queue = new PublishQueue(s.queueLimit, store);
    // Idempotency keys are unique per client instance (and per page load).
    this.keyPrefix = (random() * 2 ** 52).toString(36) + (now() % 1e8).toString(36);
  }

  // ---- inputs: lifecycle -------------------------------------------------------------

  /** Starts connecting (once). */
  start(): void {
    if (this.phase === 'idle') this.connect();
  }

  /** Closes for good: queued publishes and waiting calls fail with `closed`. */
  close(): void {
    if (this.phase === 'closed') return;
    if (this.phase === 'connecting' || this.phase === 'online') this.host.close(1000, 'client closed');
    this.lost();
    this.finish(undefined, 'closed by the application');
  }

  /** The network is back, or a sleeping tab woke up: skip the backoff wait. */
  reconnectNow(): void {
    if (this.phase === 'waiting') this.connect();
    this.host.wake();
  }

  /** The browser went offline: the connection cannot work, end it now. */
  goOffline(reason: string): void {
    if (this.phase === 'connecting' || this.phase === 'online') this.end(retry(reason));
    this.host.wake();
  }

  /** Checks the connection at once (after a long sleep): a ping, answered within pongTimeout. */
  checkAlive(): void {
    if (this.phase === 'online' && this.pingSent === undefined) this.ping();
    this.host.wake();
  }

  // ---- inputs: transport ---------------------------------------------------------------

  opened(): void {
    if (this.phase !== 'connecting') return;
    this.transportOpen = true;
    this.connectId = ++this.lastId;
    const subs: Record<string, unknown> = {};
    let any = false;
    for (const sub of this.subs.values()) {
      if (sub.options.getToken && sub.tokenAt !== undefined && this.now() >= sub.tokenAt) {
        // Its token was due for renewal while offline: it may have expired.
        sub.token = undefined;
      }
      if (sub.needsToken()) continue; // subscribed after the connect, once it has a token
      sub.phase = this.connectId;
      subs[sub.channel] = this.subscribeFields(sub);
      any = true;
    }
    const body = { token: this.connectionToken, name: this.s.name, version: 1, subs: any ? subs : undefined };
    for (const frame of this.codec.encode([{ id: this.connectId, type: 'connect', body }], Infinity)) {
      this.host.send(frame);
    }
  }

  frame(data: string | Uint8Array): void {
    if (this.phase !== 'connecting' && this.phase !== 'online') return;
    this.heard();
    let messages: ServerMessage[];
    try {
      messages = this.codec.decode(data);
    } catch (e) {
      return this.end(retry('undecodable frame from the server: ' + (e as Error).message));
    }
    for (const m of messages) {
      if (this.phase === 'online') this.message(m);
      else if (this.phase === 'connecting') this.beforeConnected(m);
    }
    if (this.resuming && this.phase === 'online') this.resume();
    this.host.wake();
  }

  /** The transport closed (`code` absent or 1006: it ended without a close frame). */
  closed(code?: number, reason?: string): void {
    if (this.phase !== 'connecting' && this.phase !== 'online') return;
    let e = this.disconnect;
    if (!e) {
      if (!this.transportOpen) e = retry('cannot connect' + (reason ? ': ' + reason : ''), code);
      else if (code === undefined || code === 1006) e = retry(reason || 'the connection ended without a close frame', code);
      else if (code === 1005) e = retry('closed by the server without a status code', code);
      else e = ending(code, reason || 'closed by the server');
    }
    this.end(e, false);
  }

  // ---- inputs: tokens and time ---------------------------------------------------------

  /** The token provider answered. */
  token(result: string | Error): void {
    this.fetchingToken = false;
    if (typeof result !== 'string') {
      if (this.phase === 'token') this.end(retry('the token provider failed: ' + result.message));
      else if (this.phase === 'online') this.refreshAt = this.now() + 1000;
    } else {
      this.connectionToken = result;
      if (this.phase === 'token') this.open();
      else if (this.phase === 'online') this.command('refresh', { token: result }, { type: 'refresh' });
    }
    this.host.wake();
  }

  /** A subscription's token provider answered. */
  subscriptionToken(sub: Subscription, result: string | Error): void {
    if (this.subs.get(sub.channel) !== sub) return;
    sub.fetching = false;
    if (typeof result !== 'string') {
      sub.tokenAt = this.now() + 1000;
    } else {
      sub.token = result;
      if (sub.phase === ACTIVE && this.phase === 'online') {
        this.command('sub_refresh', { channel: sub.channel, token: result }, { type: 'sub_refresh', sub });
      } else if (sub.phase === WAITING) {
        this.subscribeWaiting();
      }
    }
    this.host.wake();
  }

  /** The earliest time `timer` has something to do (Infinity: nothing). */
  deadline(): number {
    let d = Math.min(
      this.reconnectAt ?? Infinity,
      this.connectDeadline ?? Infinity,
      this.refreshAt ?? Infinity,
      this.resubscribeAt ?? Infinity,
    );
    for (const c of this.calls) d = Math.min(d, c.deadline);
    for (const p of this.pending.values()) if (p.type === 'call') d = Math.min(d, p.call.deadline);
    if (this.phase !== 'online') return d;
    d = Math.min(d, this.pingSent === undefined ? this.lastHeard + this.pingInterval : this.pingSent + this.s.pongTimeout);
    for (const q of this.queue.items) {
      if (q.sent) d = Math.min(d, q.sent.deadline);
      else {
        // A past one is not a deadline: the window is full, an ack will pump.
        if (q.notBefore && q.notBefore > this.now()) d = Math.min(d, q.notBefore);
        break;
      }
    }
    for (const sub of this.subs.values()) if (sub.tokenAt !== undefined) d = Math.min(d, sub.tokenAt);
    return d;
  }

  /** Time passed: whatever is due. */
  timer(): void {
    const now = this.now();
    if (this.reconnectAt !== undefined && now >= this.reconnectAt) this.connect();
    if (this.connectDeadline !== undefined && now >= this.connectDeadline) {
      this.end(retry(`no connect reply within ${this.s.connectTimeout} ms`));
    }
    this.callTimeouts(now);
    if (this.phase === 'online') {
      if (this.pingSent !== undefined && now >= this.pingSent + this.s.pongTimeout) {
        return this.end(retry(`no answer from the server within ${this.s.pongTimeout} ms of a ping: the connection is dead`));
      }
      if (this.pingSent === undefined && now >= this.lastHeard + this.pingInterval) this.ping();
      this.publishTimeouts(now);
      this.pump = true;
      for (const sub of this.subs.values()) {
        if (sub.tokenAt !== undefined && now >= sub.tokenAt) this.fetchSubscriptionToken(sub);
      }
      if (this.resubscribeAt !== undefined && now >= this.resubscribeAt) {
        this.resubscribeAt = undefined;
        this.subscribeWaiting();
      }
      if (this.refreshAt !== undefined && now >= this.refreshAt) {
        this.refreshAt = undefined;
        if (this.hasTokenProvider) this.fetchToken();
      }
    }
    this.host.wake();
  }

  /** Sends what is due: queued publishes, then every command batched into frames. */
  flush(): void {
    if (this.phase !== 'online') return;
    if (this.pump) {
      this.pump = false;
      this.pumpPublishes();
    }
    if (!this.outbox.length) return;
    const frames = this.codec.encode(this.outbox, this.s.frameLimit);
    this.outbox = [];
    for (const frame of frames) this.host.send(frame);
  }

  // ---- inputs: API -------------------------------------------------------------------

  publish(channel: string, payload: Payload, done: Queued['done']): void {
    if (this.phase === 'closed') throw this.closedError();
    const size =
      utf8Length(channel) + (payload.b ? Math.ceil(payload.b.length / 3) * 4 : utf8Length(payload.j)) + 128;
    if (size > this.s.frameLimit) {
      throw new PeregrineError('too_large', `publish of ${size} bytes: frames are limited to ${this.s.frameLimit}`);
    }
    this.queue.push({ key: this.keyPrefix + '-' + ++this.lastKey, channel, payload, done, timeouts: 0 });
    this.pump = true;
    this.host.wake();
  }

  subscribe(channel: string, options: SubscribeOptions): Subscription {
    if (this.phase === 'closed') throw this.closedError();
    if (this.subs.has(channel)) throw new PeregrineError('already_subscribed', 'already subscribed to ' + channel);
    const sub = new Subscription(channel, ++this.subId, options, this);
    this.subs.set(channel, sub);
    this.subscribeWaiting();
    this.host.wake();
    return sub;
  }

  unsubscribe(sub: Subscription): void {
    if (this.subs.get(sub.channel) !== sub) return;
    this.subs.delete(sub.channel);
    if (this.phase === 'online' && sub.phase !== WAITING) this.unsubscribeCommand(sub.channel);
    this.host.wake();
  }

  /** A presence or history command: sent when connected, answered or timed out. */
  call(type: string, body: unknown): Promise<any> {
    return new Promise((resolve, reject) => {
      if (this.phase === 'closed') return reject(this.closedError());
      const call: Call = {
        type,
        body,
        deadline: this.now() + this.s.requestTimeout,
        settle: (error, result) => (error ? reject(error) : resolve(result)),
      };
      if (this.phase === 'online') this.command(type, body, { type: 'call', call });
      else this.calls.push(call);
      this.host.wake();
    });
  }

  // ---- connection lifecycle ------------------------------------------------------------

  private setState(state: State): void {
    this.state = state;
    this.events.emit('state', state);
    this.events.emit(state.type, state as any);
  }

  private connect(): void {
    this.reconnectAt = undefined;
    this.setState({ type: 'connecting', attempt: this.attempt });
    if (this.connectionToken === undefined && this.hasTokenProvider) {
      this.phase = 'token';
      this.fetchToken();
    } else {
      this.open();
    }
  }

  private open(): void {
    this.phase = 'connecting';
    this.transportOpen = false;
    this.connectDeadline = this.now() + this.s.connectTimeout;
    this.host.open();
  }

  private fetchToken(): void {
    if (this.fetchingToken) return;
    this.fetchingToken = true;
    this.host.fetchToken();
  }

  private beforeConnected(m: ServerMessage): void {
    if (m.id === this.connectId) {
      const e = m.error;
      if (!e) return this.connected(m.connect);
      if (isTemporary(e)) return this.end(retry('connect refused for now: ' + e.message));
      return this.end({
        reason: `connect refused (${e.code}): ${e.message}`,
        reconnect: false,
        newToken: e.code === ERROR.TOKEN_EXPIRED || e.code === ERROR.UNAUTHORIZED,
      });
    }
    const d = m.push && m.push.disconnect;
    if (d) this.end(ending(d.code, d.reason, d.reconnect));
  }

  private connected(r: any): void {
    this.phase = 'online';
    this.attempt = 0;
    this.tokenRetried = false;
    this.connectDeadline = undefined;
    this.pingSent = undefined;
    this.lastHeard = this.now();
    this.pingInterval = Math.max(100, this.s.pingInterval ?? r.ping_interval_ms ?? 25000);
    this.scheduleRefresh(r.expires);
    this.setState({ type: 'connected', clientId: r.client_id });
    if (this.phase !== 'online') return; // closed by a handler
    const results: Record<string, SubscribeResult> = r.subs || {};
    for (const sub of this.subs.values()) {
      if (sub.phase !== this.connectId) continue;
      const result = results[sub.channel];
      delete results[sub.channel];
      // Refused: an `unsubscribe` push says why; subscribing again gets the error.
      if (result) this.subscribed(sub, result);
      else sub.phase = WAITING;
    }
    // Subscribed server-side although nobody wants it any more.
    for (const channel in results) this.unsubscribeCommand(channel);
    this.resuming = true;
  }

  /**
   * After the whole frame that brought the connect reply (an `unsubscribe` push for a
   * refused channel may follow it): subscribe what is waiting, send waiting calls.
   */
  private resume(): void {
    this.resuming = false;
    this.subscribeWaiting();
    for (const call of this.calls.splice(0)) this.command(call.type, call.body, { type: 'call', call });
    this.pump = true;
  }

  /** Ends the current connection (or attempt) and decides what comes next. */
  private end(e: Ending, closeTransport = true): void {
    if (this.phase === 'closed') return;
    if (closeTransport && (this.phase === 'connecting' || this.phase === 'online')) {
      this.host.close(1000, e.reason.slice(0, 120));
    }
    this.lost();
    if (e.newToken && !this.hasTokenProvider) {
      // The same token would be refused again, forever.
      return this.finish(e.code, e.reason + '; pass getToken to renew tokens');
    }
    const retryToken = e.newToken && !this.tokenRetried;
    if (!(e.reconnect || retryToken)) return this.finish(e.code, e.reason);
    if (e.newToken) {
      this.connectionToken = undefined;
      this.tokenRetried = !e.reconnect;
    }
    const retryIn = backoffDelay(this.s.backoff, this.attempt++, this.random);
    this.phase = 'waiting';
    this.reconnectAt = this.now() + retryIn;
    this.setState({ type: 'disconnected', code: e.code, reason: e.reason, retryIn });
    this.host.wake();
  }

  /** The connection is gone: what was in flight goes out again on the next one. */
  private lost(): void {
    if (this.phase === 'connecting' || this.phase === 'online') this.phase = 'waiting';
    this.outbox = [];
    this.resuming = false;
    this.disconnect = this.connectDeadline = this.refreshAt = this.resubscribeAt = this.pingSent = undefined;
    const inFlight: Call[] = [];
    for (const p of this.pending.values()) if (p.type === 'call') inFlight.push(p.call);
    this.calls = inFlight.concat(this.calls);
    this.pending.clear();
    this.queue.connectionLost();
    for (const sub of this.subs.values()) sub.phase = WAITING;
  }

  /** Closed for good: everyone waiting learns it. */
  private finish(code: number | undefined, reason: string): void {
    this.phase = 'closed';
    this.reconnectAt = undefined;
    const kept = this.queue.store ? '; the publish stays queued for the next page' : '';
    for (const q of this.queue.items.splice(0)) q.done?.(new PeregrineError('closed', reason + kept));
    for (const sub of this.subs.values()) sub.fail(undefined, reason);
    this.subs.clear();
    for (const call of this.calls.splice(0)) call.settle(new PeregrineError('closed', reason));
    this.setState({ type: 'closed', code, reason });
  }

  private closedError(): PeregrineError {
    return new PeregrineError('closed', 'the client is closed: ' + (this.state as { reason?: string }).reason);
  }

  private heard(): void {
    this.lastHeard = this.now();
    this.pingSent = undefined;
  }

  private ping(): void {
    this.command('ping', {}, { type: 'ping' });
    this.pingSent = this.now();
  }

  private scheduleRefresh(expires?: number): void {
    this.refreshAt = this.hasTokenProvider && expires ? this.renewAt(expires) : undefined;
  }

  /** When to renew a token expiring at `expires` (unix s): ahead by a fifth of what is left, at most 30 s. */
  private renewAt(expires: number): number {
    const now = this.now();
    const remaining = Math.max(0, expires * 1000 - now);
    return now + remaining - Math.min(remaining / 5, 30000);
  }

  private command(type: string, body: any, pending: Pending, payload?: Payload): number {
    const id = ++this.lastId;
    this.pending.set(id, pending);
    this.outbox.push({ id, type, body, payload });
    return id;
  }

  private unsubscribeCommand(channel: string): void {
    this.command('unsubscribe', { channel }, { type: 'unsubscribe' });
  }

  private callTimeouts(now: number): void {
    const timedOut = (c: Call) => {
      if (now < c.deadline) return false;
      c.settle(new PeregrineError('timeout', `no answer to ${c.type} within ${this.s.requestTimeout} ms`));
      return true;
    };
    this.calls = this.calls.filter((c) => !timedOut(c));
    for (const [id, p] of this.pending) if (p.type === 'call' && timedOut(p.call)) this.pending.delete(id);
  }

  // ---- replies and pushes --------------------------------------------------------------

  private message(m: ServerMessage): void {
    if (m.push) return this.push(m.push);
    const p = this.pending.get(m.id!);
    if (!p) return;
    this.pending.delete(m.id!);
    const error = m.error;
    switch (p.type) {
      case 'publish':
        return this.publishReply(m.id!, error, m.publish);
      case 'subscribe':
        return this.subscribeReply(p.sub, error, m.subscribe);
      case 'call':
        return error ? p.call.settle(serverError(error)) : p.call.settle(null, m[p.call.type]);
      case 'refresh':
        if (!error) this.scheduleRefresh(m.refresh.expires);
        return;
      case 'sub_refresh':
        // Refused: the subscription ends at the old token's expiry (2501) and is subscribed
        // again with a fresh token.
        if (!error) this.scheduleSubscriptionToken(p.sub, m.sub_refresh.expires);
    }
  }

  private push(push: Record<string, any>): void {
    const p = push.publication;
    if (p) return this.publication(p.channel, p.publication);
    const body = push.join || push.leave || push.unsubscribe;
    const sub = body && this.subs.get(body.channel);
    if (push.join) sub?.emit('join', body.info);
    else if (push.leave) sub?.emit('leave', body.info);
    else if (push.unsubscribe && sub) {
      if (shouldResubscribe(body.code)) {
        sub.phase = WAITING;
        // Ended because its token expired: a fresh one first.
        if (body.code === UNSUBSCRIBE_EXPIRED && sub.options.getToken) sub.token = undefined;
        this.subscribeWaiting();
      } else {
        this.subs.delete(sub.channel);
        sub.fail(body.code, body.reason);
      }
    } else if (push.disconnect) {
      const d = push.disconnect;
      this.disconnect = ending(d.code, d.reason, d.reconnect);
    } else if (push.message) {
      this.events.emit('message', push.message.data);
    }
  }

  private publication(channel: string, raw: any): void {
    const sub = this.subs.get(channel);
    if (!sub) return;
    const events = sub.tracker.publication(this.codec.publication(raw));
    if (events === JUMP) {
      // Something was lost on the way: reconnecting with `since` recovers it.
      return this.end(
        retry(`publications missing in ${channel}; reconnecting to recover them`, DISCONNECT.INSUFFICIENT_STATE),
      );
    }
    deliver(sub, events);
  }

  // ---- subscriptions -------------------------------------------------------------------

  private subscribeFields(sub: Subscription) {
    const since = sub.tracker.position;
    return { token: sub.token, since, recover: since ? true : undefined, join_leave: sub.options.joinLeave };
  }

  private subscribeWaiting(): void {
    if (this.phase !== 'online') return;
    for (const sub of this.subs.values()) {
      if (sub.phase !== WAITING) continue;
      if (sub.needsToken()) {
        // Subscribed once the provider answers, unless it failed a moment ago: then when
        // its retry is due.
        if (sub.tokenAt === undefined || sub.tokenAt <= this.now()) this.fetchSubscriptionToken(sub);
        continue;
      }
      const body = { channel: sub.channel, ...this.subscribeFields(sub) };
      sub.phase = this.command('subscribe', body, { type: 'subscribe', sub });
    }
  }

  private subscribed(sub: Subscription, r: SubscribeResult): void {
    sub.subscribed();
    this.scheduleSubscriptionToken(sub, r.expires);
    deliver(sub, sub.tracker.subscribed(r, this.codec.publication));
  }

  private subscribeReply(sub: Subscription, error: ReplyError | undefined, r: SubscribeResult): void {
    if (this.subs.get(sub.channel) !== sub) {
      if (!error) this.unsubscribeCommand(sub.channel);
      return;
    }
    if (!error) return this.subscribed(sub, r);
    sub.phase = WAITING;
    if (isTemporary(error)) {
      this.resubscribeAt = this.now() + backoffCeiling(this.s.backoff, 1);
    } else if (error.code === ERROR.TOKEN_EXPIRED && sub.options.getToken && !sub.tokenRetried) {
      // Refused as expired: one fresh token from the provider, then subscribe again.
      sub.tokenRetried = true;
      sub.token = undefined;
      this.subscribeWaiting();
    } else if (error.code === ERROR.UNRECOVERABLE_POSITION) {
      sub.tracker.forget();
      this.subscribeWaiting();
    } else {
      this.subs.delete(sub.channel);
      sub.fail(error.code, error.message);
    }
  }

  private fetchSubscriptionToken(sub: Subscription): void {
    if (sub.fetching || !sub.options.getToken) return;
    sub.fetching = true;
    sub.tokenAt = undefined;
    this.host.fetchSubscriptionToken(sub);
  }

  private scheduleSubscriptionToken(sub: Subscription, expires?: number): void {
    sub.tokenAt = sub.options.getToken && expires ? this.renewAt(expires) : undefined;
  }

  // ---- publishes -----------------------------------------------------------------------

  /** Sends queued publishes, oldest first, up to the in-flight window. */
  private pumpPublishes(): void {
    const now = this.now();
    let inFlight = 0;
    for (const q of this.queue.items) {
      if (inFlight >= this.s.maxInFlight) break;
      inFlight++;
      if (q.sent) continue;
      // Held back by a rate limit: later ones wait too, to keep the order.
      if (q.notBefore && q.notBefore > now) break;
      this.sendPublish(q, now + this.s.ackTimeout);
    }
  }

  private sendPublish(q: Queued, deadline: number): void {
    if (q.sent) this.pending.delete(q.sent.id);
    const id = this.command('publish', { channel: q.channel, idempotency_key: q.key }, { type: 'publish' }, q.payload);
    q.sent = { id, deadline };
    q.notBefore = undefined;
  }

  private publishTimeouts(now: number): void {
    const items = this.queue.items;
    for (let i = 0; i < items.length; ) {
      const q = items[i];
      if (!q.sent) break;
      if (q.sent.deadline > now) {
        i++;
      } else if (q.timeouts >= this.s.publishRetries) {
        this.pending.delete(q.sent.id);
        this.queue.finish(i).done?.(new PeregrineError('timeout', `publish not acknowledged after ${q.timeouts + 1} attempts`));
      } else {
        // Same key: the server publishes it once, whichever attempt gets through.
        q.timeouts++;
        this.sendPublish(q, now + this.s.ackTimeout);
        i++;
      }
    }
  }

  private publishReply(id: number, error: ReplyError | undefined, result: PublishResult): void {
    const index = this.queue.indexOfAttempt(id);
    if (index < 0) return;
    this.pump = true;
    if (error && isTemporary(error)) {
      // Rate limited: send it again a little later, and the later ones after it.
      const q = this.queue.items[index];
      q.sent = undefined;
      q.notBefore = this.now() + this.s.backoff.min;
      return;
    }
    this.queue.finish(index).done?.(error ? serverError(error) : null, result);
  }
}

function deliver(sub: Subscription, events: SubscriptionEvent[]): void {
  for (const e of events) {
    if (e.type === 'publication') sub.emit('publication', e.publication);
    else sub.emit(e.type, e as any);
  }
}
