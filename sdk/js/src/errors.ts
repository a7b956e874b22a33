/** Why a call failed. `kind` says what to do about it; `code` is the server's, when it sent one. */
export type ErrorKind = 'closed' | 'timeout' | 'queue_full' | 'too_large' | 'server' | 'already_subscribed';

export class PeregrineError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    readonly code?: number,
  ) {
    super(message);
    this.name = 'PeregrineError';
  }
}
