// Codes of docs/protocol.md the client acts on.

/** Reply error codes. */
export const ERROR = {
  INTERNAL: 100,
  UNAUTHORIZED: 101,
  TOKEN_EXPIRED: 109,
  TOO_MANY_REQUESTS: 111,
  UNRECOVERABLE_POSITION: 112,
} as const;

/** Disconnect codes the client treats specially. */
export const DISCONNECT = {
  EXPIRED: 3005,
  INSUFFICIENT_STATE: 3010,
  INVALID_TOKEN: 3500,
} as const;

/** Unsubscribe push code: the subscription token expired. */
export const UNSUBSCRIBE_EXPIRED = 2501;

/**
 * Whether a connection closed with `code` should be reconnected: 3000-3499 and 4000-4499
 * yes, 3500-3999 and 4500-4999 no, WebSocket codes below 3000 (1001, 1006) yes.
 */
export function shouldReconnect(code: number): boolean {
  return !((code >= 3500 && code < 4000) || (code >= 4500 && code < 5000));
}

/** Unsubscribe pushes 2500-2999 ask the client to subscribe again from its position. */
export function shouldResubscribe(code: number): boolean {
  return code >= 2500 && code < 3000;
}

/** A reply error that may succeed later (internal error, rate limited). */
export function isTemporary(error: { code: number; temporary?: boolean }): boolean {
  return !!error.temporary || error.code === ERROR.INTERNAL || error.code === ERROR.TOO_MANY_REQUESTS;
}
