// The chat page's logic: load the room's recent history, then subscribe from its position,
// so nothing is shown twice and nothing is missed; publish with acknowledgements (messages
// typed while offline are queued and sent when the connection is back).
const params = new URLSearchParams(location.search);
const server = params.get('server') || 'ws://127.0.0.1:8080/connection/websocket';
const room = params.get('room') || 'chat:lobby';
const name = params.get('name') || 'guest-' + Math.random().toString(36).slice(2, 6);

const statusLine = document.getElementById('status');
const list = document.getElementById('messages');
const input = document.getElementById('text');

// `transports=sse,long_poll`: only these, in this order (default: WebSocket first, then the
// HTTP fallbacks, which need the page on the server's origin, e.g. behind the same nginx).
const transports = params.get('transports')?.split(',');
const client = new Peregrine.Client(server, { name: 'chat-example', transports });
client.on('state', (s) => {
  statusLine.className = s.type;
  statusLine.textContent =
    s.type === 'disconnected'
      ? `disconnected (${s.reason}), retrying in ${(s.retryIn / 1000).toFixed(1)} s`
      : s.type === 'closed'
        ? `closed: ${s.reason}`
        : `${s.type} as ${name} to ${server}${s.transport ? ' over ' + s.transport : ''}, room ${room}`;
});

function show(publication) {
  const li = document.createElement('li');
  const who = document.createElement('b');
  const data = publication.data || {};
  who.textContent = String(data.name ?? '?');
  li.append(who, String(data.text ?? ''));
  li.dataset.offset = publication.offset;
  list.append(li);
}

function notice(text) {
  const li = document.createElement('li');
  li.className = 'notice';
  li.textContent = text;
  list.append(li);
}

async function start() {
  const recent = await client.history(room, { limit: 50, reverse: true });
  recent.publications.reverse().forEach(show);
  const sub = client.subscribe(room, { since: { epoch: recent.epoch, offset: recent.offset } });
  sub.on('publication', show);
  sub.on('gap', (g) => notice(`messages ${g.from}–${g.to} were lost while you were away`));
  sub.on('reset', () => notice('the room was reset (server restarted): earlier messages are gone'));
  sub.on('unsubscribed', (u) => notice(`left the room: ${u.reason}`));
}

document.getElementById('form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  input.value = '';
  client.publish(room, { name, text }).catch((e) => notice(`not sent (${e.kind}): ${e.message}`));
});

start().catch((e) => notice(`cannot load the room: ${e.message}`));
