// The transport adapter: all the core needs of a connection. WebSocket here; HTTP
// streaming, SSE and long-polling in http.ts, with the same shape; fallback.ts picks one.

/** What a transport reports. */
export interface TransportEvents {
  open(): void;
  /** One frame: a text or binary batch of messages. */
  frame(data: string | Uint8Array): void;
  /**
   * The connection ended (`code` absent when there was no close frame). `down`, before
   * opening: the server could not be reached or refused, so another transport is not tried.
   */
  close(code: number | undefined, reason: string, down?: boolean): void;
}

export interface Transport {
  send(frame: string | Uint8Array): void;
  close(code: number, reason: string): void;
}

/** Opens a connection to `url` speaking `protocol` (the codec's subprotocol). */
export type TransportFactory = (url: string, protocol: string, events: TransportEvents) => Transport;

/** A WebSocket constructor: the browser's, Node's global, or the `ws` package's. */
export type WebSocketLike = new (url: string, protocols: string) => {
  binaryType: string;
  onopen: ((e: any) => void) | null;
  onmessage: ((e: { data: any }) => void) | null;
  onclose: ((e: { code: number; reason: string }) => void) | null;
  onerror: ((e: any) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
};

export function webSocketTransport(WebSocketClass?: WebSocketLike): TransportFactory {
  return (url, protocol, events) => {
    const WS = WebSocketClass || (globalThis as { WebSocket?: WebSocketLike }).WebSocket;
    if (!WS) {
      throw new TypeError('no WebSocket in this runtime: pass one, e.g. new Client(url, { WebSocket }) with the ws package');
    }
    const ws = new WS(url, protocol);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => events.open();
    ws.onmessage = (e) => events.frame(typeof e.data === 'string' ? e.data : new Uint8Array(e.data));
    // 1006: the connection ended without a close frame (RST, network gone).
    ws.onclose = (e) => events.close(e.code === 1006 ? undefined : e.code, e.reason);
    ws.onerror = () => {};
    return {
      send: (data) => ws.send(data),
      close(code, reason) {
        ws.onopen = ws.onmessage = ws.onclose = null;
        try {
          ws.close(code, reason);
        } catch {
          // Already closed, or the reason too long for the close frame: it is gone either way.
        }
      },
    };
  };
}
