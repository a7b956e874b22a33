// The publish queue: every publish waits here, in call order, until the server
// acknowledges it. It is sent at once when connected (up to a window of unacknowledged
// ones), and again after a reconnect or an ack timeout, always with the same idempotency
// key, so the server publishes it once however often it is sent. Bounded: a full queue
// refuses a new publish at once instead of dropping one later. A QueueStore keeps the
// queued publishes across a page reload.
import type { Payload } from './payload.js';
import type { PublishResult } from './wire.js';
import { PeregrineError } from './errors.js';

/** A queued publish as stored: `data` is the JSON text, or base64 when `binary`. */
export interface StoredPublish {
  key: string;
  channel: string;
  data: string;
  binary?: boolean;
}

/**
 * Where queued publishes survive a page reload (see localStorageQueue, indexedDBQueue).
 * `load` gives what the previous page left, in order; `add` and `remove` follow the queue.
 */
export interface QueueStore {
  load(): StoredPublish[] | Promise<StoredPublish[]>;
  add(p: StoredPublish): void;
  remove(key: string): void;
}

export interface Queued {
  key: string;
  channel: string;
  payload: Payload;
  /** Settles the caller's promise; absent for publishes loaded from a store. */
  done?: (error: PeregrineError | null, result?: PublishResult) => void;
  /** Command id and ack deadline of the attempt on the current connection. */
  sent?: { id: number; deadline: number };
  timeouts: number;
  /** Not before this time (rate limited). */
  notBefore?: number;
}

export class PublishQueue {
  items: Queued[] = [];

  constructor(
    readonly limit: number,
    readonly store?: QueueStore,
  ) {}

  push(q: Queued, fromStore = false): void {
    if (this.items.length >= this.limit && !fromStore) {
      throw new PeregrineError('queue_full', `the publish queue is full (${this.limit}): wait for acks or raise queueLimit`);
    }
    this.items.push(q);
    if (this.store && !fromStore) this.store.add(stored(q));
  }

  /** Removes the publish whose attempt had command id `id`, if it is queued. */
  indexOfAttempt(id: number): number {
    return this.items.findIndex((q) => q.sent && q.sent.id === id);
  }

  finish(index: number): Queued {
    const [q] = this.items.splice(index, 1);
    if (this.store) this.store.remove(q.key);
    return q;
  }

  /** The connection is gone: nothing is in flight any more. */
  connectionLost(): void {
    for (const q of this.items) q.sent = undefined;
  }
}

import { toBase64, fromBase64 } from './payload.js';

export function stored(q: Queued): StoredPublish {
  const p = q.payload;
  return p.b
    ? { key: q.key, channel: q.channel, data: toBase64(p.b), binary: true }
    : { key: q.key, channel: q.channel, data: p.j! };
}

export function restored(s: StoredPublish): Queued {
  return {
    key: s.key,
    channel: s.channel,
    payload: s.binary ? { b: fromBase64(s.data) } : { j: s.data },
    timeouts: 0,
  };
}
