// Drives the protocol core by hand: no socket, no real time. The "server" is the test,
// which reads the commands the core sends and answers with frames.
import { Session, json } from '../../dist/index.js';

export const SETTINGS = {
  name: 'test',
  backoff: { min: 100, max: 1000 },
  pongTimeout: 1000,
  connectTimeout: 2000,
  ackTimeout: 500,
  publishRetries: 2,
  queueLimit: 10,
  maxInFlight: 4,
  requestTimeout: 3000,
  frameLimit: 65536,
};

export function harness({ token, provider = false, store, settings = {}, random = () => 0.5 } = {}) {
  let now = 1_000_000_000;
  const h = {
    sent: [],
    frames: [],
    opens: 0,
    closes: [],
    tokenFetches: 0,
    subscriptionTokenFetches: [],
    states: [],
    get now() {
      return now;
    },
  };
  const host = {
    open: () => h.opens++,
    send: (frame) => {
      h.frames.push(frame);
      h.sent.push(...frame.split('\n').map((line) => JSON.parse(line)));
    },
    close: (code, reason) => h.closes.push({ code, reason }),
    fetchToken: () => h.tokenFetches++,
    fetchSubscriptionToken: (sub) => h.subscriptionTokenFetches.push(sub),
    wake: () => {},
  };
  const s = new Session({ ...SETTINGS, ...settings }, json, host, token, provider, store, () => now, random);
  s.events.on('state', (state) => h.states.push(state));
  Object.assign(h, {
    s,
    /** Commands sent since the last take. */
    take() {
      s.flush();
      return h.sent.splice(0);
    },
    /** The server sends these messages in one frame. */
    server(...messages) {
      s.frame(messages.map((m) => JSON.stringify(m)).join('\n'));
      s.flush();
    },
    /** Time passes; due timers fire. */
    advance(ms) {
      const until = now + ms;
      for (let i = 0; i < 1000 && s.deadline() <= until; i++) {
        now = Math.max(now, s.deadline());
        s.timer();
        s.flush();
      }
      now = until;
    },
    /** Opens and connects: returns the connect command. */
    connect(result = {}) {
      s.start();
      s.opened();
      const [connect] = h.take();
      h.server({ id: connect.id, connect: { client_id: 'c1', version: 1, ping_interval_ms: 25000, ...result } });
      return connect;
    },
    /** The connection drops (no close frame). */
    drop() {
      s.closed(undefined, '');
    },
    /** After a drop: waits out the backoff and connects again; returns the connect command. */
    reconnect(result = {}) {
      h.advance(SETTINGS.backoff.max * 2);
      s.opened();
      const [connect] = h.take();
      h.server({ id: connect.id, connect: { client_id: 'c2', version: 1, ping_interval_ms: 25000, ...result } });
      return connect;
    },
  });
  return h;
}

export const pub = (channel, offset, data = offset, epoch) => ({
  push: { publication: { channel, publication: { offset, data, ...(epoch ? { epoch } : {}) } } },
});

/** A subscription recording its events as [type, detail]. */
export function record(sub) {
  const events = [];
  for (const type of ['subscribed', 'gap', 'reset', 'join', 'leave', 'unsubscribed']) {
    sub.on(type, (e) => events.push([type, e]));
  }
  sub.on('publication', (p) => events.push(['publication', p.offset]));
  return events;
}

export const offsets = (events) => events.filter(([t]) => t === 'publication').map(([, o]) => o);
