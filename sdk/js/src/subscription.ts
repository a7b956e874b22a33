// A subscription: the handle the application listens on, and what the session keeps about
// it across connections (stream position, phase, subscription token).
import { Emitter } from './emitter.js';
import { Tracker } from './tracker.js';
import type { ClientInfo, Publication, StreamPosition } from './wire.js';
import { PeregrineError } from './errors.js';

export interface SubscribeOptions {
  /** Subscription token, for channels in `private` namespaces. */
  token?: string;
  /**
   * Where fresh subscription tokens come from (called with the channel's name): before
   * subscribing when `token` is absent, ahead of each expiry (sent with `sub_refresh`), and
   * when the server ended the subscription because its token expired.
   */
  getToken?: (channel: string) => Promise<string>;
  /** Ask for join/leave events (absent: the namespace's default). */
  joinLeave?: boolean;
  /** Start from this position instead of "now": what came after it is delivered first. */
  since?: StreamPosition;
}

export interface SubscriptionEvents {
  /** Active: after subscribing and again after every reconnect. */
  subscribed: { epoch: string; offset: number; recovered: boolean };
  /** A publication, in order, each exactly once. */
  publication: Publication;
  /** Offsets `from..=to` were missed and history no longer holds them. */
  gap: { from: number; to: number };
  /** The stream was reset (new epoch): reload the state from your source of truth. */
  reset: { previousEpoch: string; epoch: string; offset: number };
  join: ClientInfo;
  leave: ClientInfo;
  /** Ended by the server (code) or because the client closed. Nothing follows. */
  unsubscribed: { code?: number; reason: string };
}

/** @internal Phases: waiting to be (re)subscribed, subscribe sent with a command id, active. */
export const WAITING = -1;
export const ACTIVE = 0;

export class Subscription extends Emitter<SubscriptionEvents> {
  /** Settles at the first `subscribed`, or fails when the subscription is refused. */
  readonly ready: Promise<void>;
  /** @internal */ phase = WAITING;
  /** @internal */ tracker: Tracker;
  /** @internal */ token?: string;
  /** @internal When to ask for the next token (before expiry, or after a failure). */
  tokenAt?: number;
  /** @internal */ fetching = false;
  /** @internal A fresh token was already tried after one was refused as expired. */
  tokenRetried = false;
  private settle!: (error?: Error) => void;

  /** @internal */
  constructor(
    readonly channel: string,
    /** @internal */ readonly id: number,
    readonly options: SubscribeOptions,
    private owner: { unsubscribe(sub: Subscription): void },
  ) {
    super();
    this.tracker = new Tracker(options.since);
    this.token = options.token;
    this.ready = new Promise<void>((resolve, reject) => {
      this.settle = (error) => (error ? reject(error) : resolve());
    });
    // Awaiting `ready` is optional: a refusal also comes as `unsubscribed`.
    this.ready.catch(() => {});
  }

  /** The last position delivered (save it to resume with `since` later). */
  get position(): StreamPosition | undefined {
    const p = this.tracker.position;
    return p && { epoch: p.epoch, offset: p.offset };
  }

  /** Stops the subscription. */
  unsubscribe(): void {
    this.owner.unsubscribe(this);
  }

  /** @internal Whether the provider must be asked before (re)subscribing. */
  needsToken(): boolean {
    return !this.token && !!this.options.getToken;
  }

  /** @internal */
  subscribed(): void {
    this.phase = ACTIVE;
    this.tokenRetried = false;
    this.settle();
  }

  /** @internal */
  fail(code: number | undefined, reason: string): void {
    this.settle(new PeregrineError(code === undefined ? 'closed' : 'server', reason, code));
    this.emit('unsubscribed', { code, reason });
  }
}
