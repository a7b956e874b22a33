// A loopback TCP proxy between pages and the server, to break things the way networks do:
// `cut()` resets every connection (RST, no close frame), `dropReply(match)` swallows the next
// server frame whose text matches. It strips Sec-WebSocket-Extensions from the handshake so
// that frames pass uncompressed and can be read. Connections that are not upgraded (HTTP
// requests and responses: pages, the HTTP transports) pass as they are; `cut()` resets them too.
import net from 'node:net';

export async function startProxy(targetPort) {
  const pairs = new Set();
  const drops = [];
  const stats = { connections: 0, cuts: 0, dropped: 0 };
  let refuseUntil = 0;
  const server = net.createServer((client) => {
    if (Date.now() < refuseUntil) return client.resetAndDestroy();
    stats.connections++;
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    let request = Buffer.alloc(0);
    client.on('data', (chunk) => {
      if (request === null) return upstream.write(chunk);
      request = Buffer.concat([request, chunk]);
      const head = request.indexOf('\r\n\r\n');
      if (head < 0) return;
      const text = request.subarray(0, head).toString('latin1').replace(/\r\nSec-WebSocket-Extensions:[^\r]*/gi, '');
      upstream.write(Buffer.concat([Buffer.from(text, 'latin1'), request.subarray(head)]));
      request = null;
    });
    upstream.on('data', serverToClient(client, drops, stats));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  return {
    port,
    url: `ws://127.0.0.1:${port}/connection/websocket`,
    stats,
    /**
     * Resets every open connection: RST both ways, no close frame; with `outageMs`, new
     * connections are reset too for that long (a browser retries a GET that a reset cut off
     * on a kept-alive connection, so a held long-poll would otherwise carry on unharmed).
     */
    cut(outageMs = 0) {
      stats.cuts++;
      refuseUntil = Date.now() + outageMs;
      for (const { client, upstream } of pairs) {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
      pairs.clear();
    },
    /** Drops the next server frame whose text matches `pattern`; resolves when it did. */
    dropReply(pattern) {
      return new Promise((resolve) => drops.push({ pattern, resolve }));
    },
    close() {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Forwards the HTTP response head, then WebSocket frames one by one, dropping matches. */
function serverToClient(client, drops, stats) {
  let buffer = Buffer.alloc(0);
  let upgraded = false;
  let plain = false;
  return (chunk) => {
    if (plain) return client.write(chunk);
    buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
    if (!upgraded) {
      const head = buffer.indexOf('\r\n\r\n');
      if (head < 0) return;
      if (!buffer.subarray(0, 13).toString('latin1').startsWith('HTTP/1.1 101')) {
        plain = true;
        return client.write(buffer);
      }
      client.write(buffer.subarray(0, head + 4));
      buffer = buffer.subarray(head + 4);
      upgraded = true;
    }
    for (;;) {
      const length = frameLength(buffer);
      if (length < 0 || buffer.length < length) return;
      const frame = buffer.subarray(0, length);
      buffer = buffer.subarray(length);
      const drop = drops.length && frame.toString('utf8').match(drops[0].pattern);
      if (drop) {
        stats.dropped++;
        drops.shift().resolve(frame.toString('utf8'));
      } else {
        client.write(frame);
      }
    }
  };
}

/** The length of the (unmasked, server-sent) frame at the start of `b`, or -1 if unknown yet. */
function frameLength(b) {
  if (b.length < 2) return -1;
  const short = b[1] & 0x7f;
  if (short < 126) return 2 + short;
  if (short === 126) return b.length < 4 ? -1 : 4 + b.readUInt16BE(2);
  return b.length < 10 ? -1 : 10 + Number(b.readBigUInt64BE(2));
}
