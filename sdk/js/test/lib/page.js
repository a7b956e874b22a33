// Helpers the browser tests call with page.evaluate: clients by name, and everything they
// and their subscriptions report, recorded for the test to read.
window.T = {
  clients: {},
  log: {},
  /**
   * A client recording its states. Options that cannot cross page.evaluate are named:
   * queue: "localStorage:NAME" | "indexedDB:NAME", getToken: "mint:TTL_SECONDS".
   */
  connect(name, url, options = {}) {
    const o = { ...options };
    if (typeof o.queue === 'string') {
      const [kind, key] = o.queue.split(':');
      o.queue = kind === 'indexedDB' ? Peregrine.indexedDBQueue(key) : Peregrine.localStorageQueue(key);
    }
    if (typeof o.getToken === 'string') {
      const ttl = Number(o.getToken.split(':')[1]);
      o.getToken = () => window.mintToken(ttl);
    }
    if (o.codec === 'msgpack') o.codec = PeregrineMsgpack.msgpack;
    const log = (this.log[name] = { states: [], acks: [], failures: [], subs: {} });
    const client = new Peregrine.Client(url, o);
    client.on('state', (s) => log.states.push(s));
    this.clients[name] = client;
    return true;
  },
  subscribe(name, channel, options = {}) {
    const events = (this.log[name].subs[channel] = { publications: [], gaps: [], resets: [], subscribed: [], unsubscribed: [] });
    const sub = this.clients[name].subscribe(channel, options);
    sub.on('publication', (p) => events.publications.push(p.data));
    sub.on('gap', (e) => events.gaps.push(e));
    sub.on('reset', (e) => events.resets.push(e));
    sub.on('subscribed', (e) => events.subscribed.push(e));
    sub.on('unsubscribed', (e) => events.unsubscribed.push(e));
    return sub.ready.then(() => true);
  },
  /** Publishes data(i) for i in from..to, without waiting; acks and failures are logged. */
  publishMany(name, channel, from, to) {
    const log = this.log[name];
    for (let n = from; n <= to; n++) {
      this.clients[name].publish(channel, { n }).then(
        (ack) => log.acks.push({ n, ...ack }),
        (e) => log.failures.push({ n, kind: e.kind, message: e.message }),
      );
    }
    return true;
  },
  summary(name, channel) {
    const log = this.log[name];
    const sub = channel && log.subs[channel];
    return {
      state: this.clients[name].state,
      states: log.states.map((s) => s.type),
      acks: log.acks.length,
      duplicates: log.acks.filter((a) => a.duplicate).length,
      failures: log.failures,
      received: sub ? sub.publications.length : 0,
      gaps: sub ? sub.gaps : [],
      resets: sub ? sub.resets : [],
      subscribed: sub ? sub.subscribed : [],
    };
  },
};
