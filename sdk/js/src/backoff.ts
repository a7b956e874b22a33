// Reconnect delays: exponential backoff with full jitter. Every client of a restarted
// server loses its connection at the same moment; with full jitter each delay is drawn
// uniformly from 0..min(max, min * 2^attempt), so they come back spread out instead of in
// one storm (as the Rust SDK, crates/peregrine-client/src/backoff.rs).

export interface Backoff {
  /** Ceiling of the first delay, ms (default 250). */
  min: number;
  /** No delay is longer, ms (default 20000). */
  max: number;
}

/** The longest delay before reconnect attempt `attempt` (0-based), ms. */
export function backoffCeiling(b: Backoff, attempt: number): number {
  return Math.min(b.max, b.min * 2 ** Math.min(attempt, 30));
}

/** A random delay in 0..=ceiling, ms. */
export function backoffDelay(b: Backoff, attempt: number, random: () => number): number {
  return Math.floor(random() * (backoffCeiling(b, attempt) + 1));
}
