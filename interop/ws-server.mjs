// An echo server on Node's `ws` with permessage-deflate on, for scripts/interop.sh:
//
//   node interop/ws-server.mjs [--variant takeover|no-takeover|windows|windows-8]
//
// Listens on a free 127.0.0.1 port and prints `listening PORT` once ready.
// threshold 0: every message is compressed, the empty one included.
//   takeover     ws's defaults (context takeover, 15-bit windows)
//   no-takeover  server_no_context_takeover and client_no_context_takeover in every answer
//   windows      server_max_window_bits=9, client_max_window_bits=10 (when the client offers it)
//   windows-8    8-bit windows both ways: Node's zlib compresses with 9 bits then, and
//                our client sends uncompressed (zlib cannot honour 8)
import { WebSocketServer } from 'ws';

const args = process.argv.slice(2);
const at = args.indexOf('--variant');
const variant = at >= 0 ? args[at + 1] : 'takeover';
const deflate = {
  takeover: {},
  'no-takeover': { serverNoContextTakeover: true, clientNoContextTakeover: true },
  windows: { serverMaxWindowBits: 9, clientMaxWindowBits: 10 },
  'windows-8': { serverMaxWindowBits: 8, clientMaxWindowBits: 8 },
}[variant];
if (!deflate) {
  console.error(`ws-server: unknown variant ${variant}`);
  process.exit(2);
}

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  maxPayload: 64 << 20,
  perMessageDeflate: { threshold: 0, ...deflate },
});
wss.on('connection', (ws, request) => {
  console.error(`ws-server: ${variant}: connection, offer ${request.headers['sec-websocket-extensions']}`);
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary, compress: true }));
  ws.on('error', (e) => console.error(`ws-server: ${e.message}`));
});
wss.on('listening', () => console.log(`listening ${wss.address().port}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
