// A Socket.IO server doing the same work: a client joins a room with
// emit("subscribe", channel); POST /publish {channel, data} does
// io.to(channel).emit("publication", data), and so does a client's
// emit("publish", channel, data, ack) (then acks: the browser benchmark's publisher).
// One transport, so clients cannot upgrade away from the one measured: WebSocket by default,
// or Engine.IO long-polling with `polling` (`peregrine bench fanout --transport polling`).
// Usage: node socketio-server.mjs PORT [websocket|polling]
import http from 'node:http';
import { Server } from 'socket.io';

const port = Number(process.argv[2] ?? 9200);
const transport = process.argv[3] ?? 'websocket';
if (!['websocket', 'polling'].includes(transport)) {
  console.error(`unknown transport ${transport}: websocket or polling`);
  process.exit(2);
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/publish') {
    res.writeHead(404).end();
    return;
  }
  let body = '';
  req.on('data', (chunk) => (body += chunk));
  req.on('end', () => {
    const { channel, data } = JSON.parse(body);
    io.to(channel).emit('publication', data);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': 11 }).end('{"ok":true}');
  });
});

const io = new Server(server, { transports: [transport], serveClient: false });
io.on('connection', (socket) => {
  socket.on('subscribe', (channel) => socket.join(channel));
  socket.on('publish', (channel, data, ack) => {
    io.to(channel).emit('publication', data);
    if (typeof ack === 'function') ack();
  });
});

server.listen(port, '127.0.0.1', () => console.error(`socket.io server listening on 127.0.0.1:${port}`));
