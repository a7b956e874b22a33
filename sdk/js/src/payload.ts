// Publication payloads (docs/protocol.md#payloads): a JSON value kept as its text, or bytes.
// JSON subscribers get binary payloads as base64 with `binary: true`.

/** A payload ready for the wire: JSON text (`j`) or bytes (`b`). */
export type Payload = { j: string; b?: undefined } | { b: Uint8Array; j?: undefined };

/** What the application publishes: bytes, or any value JSON.stringify accepts. */
export function toPayload(data: unknown): Payload {
  if (data instanceof Uint8Array) return { b: data };
  if (data instanceof ArrayBuffer) return { b: new Uint8Array(data) };
  const j = JSON.stringify(data);
  if (j === undefined) throw new TypeError('publish: data must be JSON-serializable or bytes, got ' + typeof data);
  return { j };
}

export function toBase64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function fromBase64(text: string): Uint8Array {
  const s = atob(text);
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return bytes;
}

/** UTF-8 length of a string, without encoding it. */
export function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // 2 bytes up to 0x7ff, 3 above, 4 for a surrogate pair (2 units).
    if (c > 0x7f) n += c > 0x7ff && (c < 0xd800 || c > 0xdfff) ? 2 : 1;
  }
  return n;
}
