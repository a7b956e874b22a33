// Where a subscription is in its channel's stream: turns subscribe replies and pushes into
// "every publication once, in order, or an explicit gap / reset" (the Rust SDK's Tracker,
// crates/peregrine-client/src/subscription.rs).
import type { Publication, StreamPosition, SubscribeResult } from './wire.js';

export type SubscriptionEvent =
  | { type: 'subscribed'; epoch: string; offset: number; recovered: boolean }
  | { type: 'publication'; publication: Publication }
  | { type: 'gap'; from: number; to: number }
  | { type: 'reset'; previousEpoch: string; epoch: string; offset: number };

/** A live publication skipped an offset: reconnecting with `since` recovers the rest. */
export const JUMP = 'jump';

export class Tracker {
  /** The last position delivered; undefined before the first reply and without history. */
  position?: StreamPosition;
  /** The epoch of a position the server refused (112): the next reply is a reset from it. */
  private lostEpoch?: string;

  constructor(since?: StreamPosition) {
    this.position = since && { epoch: since.epoch, offset: since.offset };
  }

  /** The server does not know our position any more: subscribe afresh, and report it. */
  forget(): void {
    if (this.position) this.lostEpoch = this.position.epoch;
    this.position = undefined;
  }

  /** A subscribe reply (first one or after a reconnect): the events to deliver, in order. */
  subscribed(r: SubscribeResult, publication: (p: any) => Publication): SubscriptionEvent[] {
    const events: SubscriptionEvent[] = [
      { type: 'subscribed', epoch: r.epoch, offset: r.offset, recovered: !!r.recovered },
    ];
    const pubs = r.publications || [];
    if (!r.positioned) {
      this.position = undefined;
      for (const p of pubs) events.push({ type: 'publication', publication: publication(p) });
      return events;
    }
    const pos = this.position;
    if (!pos || pos.epoch !== r.epoch) {
      const previousEpoch = pos ? pos.epoch : this.lostEpoch;
      this.lostEpoch = undefined;
      if (previousEpoch !== undefined) {
        events.push({ type: 'reset', previousEpoch, epoch: r.epoch, offset: r.offset });
      }
      // Live publications start after the top.
      this.position = { epoch: r.epoch, offset: r.offset };
      return events;
    }
    if (r.gap) {
      events.push({ type: 'gap', from: r.gap.from, to: r.gap.to });
      pos.offset = Math.max(pos.offset, r.gap.to);
    }
    for (const p of pubs) {
      if (p.offset > pos.offset + 1) events.push({ type: 'gap', from: pos.offset + 1, to: p.offset - 1 });
      if (p.offset > pos.offset) {
        pos.offset = p.offset;
        events.push({ type: 'publication', publication: publication(p) });
      }
    }
    // What the reply did not cover up to the top is missing, unless the server says the rest
    // follows as pushes (`more`): say so rather than let it vanish.
    if (r.offset > pos.offset && !r.more) {
      events.push({ type: 'gap', from: pos.offset + 1, to: r.offset });
      pos.offset = r.offset;
    }
    return events;
  }

  /**
   * A live publication: the events to deliver (none for a duplicate), or JUMP when
   * publications are missing before it.
   */
  publication(p: Publication): SubscriptionEvent[] | typeof JUMP {
    const pos = this.position;
    if (!pos || !p.offset) return [{ type: 'publication', publication: p }];
    if (p.epoch && p.epoch !== pos.epoch) {
      const reset: SubscriptionEvent = { type: 'reset', previousEpoch: pos.epoch, epoch: p.epoch, offset: p.offset };
      this.position = { epoch: p.epoch, offset: p.offset };
      return [reset, { type: 'publication', publication: p }];
    }
    if (p.offset <= pos.offset) return [];
    if (p.offset > pos.offset + 1) return JUMP;
    pos.offset = p.offset;
    return [{ type: 'publication', publication: p }];
  }
}
