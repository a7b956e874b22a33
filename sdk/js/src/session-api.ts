// What the protocol core (session.ts) exchanges with its driver and the application: its
// settings, the Host it asks for I/O, the connection states and client events.
import type { Backoff } from './backoff.js';
import type { Subscription } from './subscription.js';

export interface Settings {
  name: string;
  backoff: Backoff;
  /** ms; absent: the server's `ping_interval_ms`. */
  pingInterval?: number;
  pongTimeout: number;
  connectTimeout: number;
  ackTimeout: number;
  publishRetries: number;
  queueLimit: number;
  maxInFlight: number;
  requestTimeout: number;
  /** Largest frame sent, bytes (the server's default `client.max_message_size` is 64 KiB). */
  frameLimit: number;
}

/** What the core asks of its driver. */
export interface Host {
  /** Open a transport; report it with opened / frame / closed. */
  open(): void;
  send(frame: string | Uint8Array): void;
  /** Close the current transport; its later events are not reported. */
  close(code: number, reason: string): void;
  /** Ask the token provider; answer with `token`. */
  fetchToken(): void;
  /** Ask a subscription's token provider; answer with `subscriptionToken`. */
  fetchSubscriptionToken(sub: Subscription): void;
  /** Output or deadlines changed: call `flush`, then re-arm a timer at `deadline()`. */
  wake(): void;
}

export type State =
  | { type: 'connecting'; attempt: number }
  /** `transport`: its name, in the Client's events (client.transport). */
  | { type: 'connected'; clientId: string; transport?: string }
  | { type: 'disconnected'; code?: number; reason: string; retryIn: number }
  | { type: 'closed'; code?: number; reason: string };

export interface ClientEvents {
  state: State;
  connecting: State & { type: 'connecting' };
  connected: State & { type: 'connected' };
  disconnected: State & { type: 'disconnected' };
  closed: State & { type: 'closed' };
  /** A `message` push from the server. */
  message: unknown;
}
