// The tutorial broadcast server on Node's `ws`: a Set of sockets per channel, and
// POST /publish {channel, data} sends JSON.stringify({channel, data}) (encoded once) to
// every socket of the channel. Usage: node ws-server.mjs PORT
import http from 'node:http';
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2] ?? 9100);
const channels = new Map();

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/publish') {
    res.writeHead(404).end();
    return;
  }
  let body = '';
  req.on('data', (chunk) => (body += chunk));
  req.on('end', () => {
    const { channel, data } = JSON.parse(body);
    const message = JSON.stringify({ channel, data });
    for (const socket of channels.get(channel) ?? []) socket.send(message);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': 11 }).end('{"ok":true}');
  });
});

const wss = new WebSocketServer({ server });
wss.on('connection', (socket, req) => {
  const channel = new URL(req.url, 'http://localhost').searchParams.get('channel') ?? '';
  if (!channels.has(channel)) channels.set(channel, new Set());
  channels.get(channel).add(socket);
  socket.on('close', () => channels.get(channel).delete(socket));
});

server.listen(port, '127.0.0.1', () => console.error(`ws broadcast server listening on 127.0.0.1:${port}`));
