// Keeping state across a page reload: the publish queue (localStorage or IndexedDB) and
// subscription positions (sessionStorage).
import type { QueueStore, StoredPublish } from './queue.js';
import type { StreamPosition } from './wire.js';

/**
 * Queued publishes in localStorage (or another Storage), one item each under
 * `name:<n>`, so that adding one does not rewrite the others.
 */
export function localStorageQueue(name = 'peregrine.queue', storage: Storage = localStorage): QueueStore {
  const slots = new Map<string, string>();
  let next = 0;
  return {
    load() {
      const found: [number, StoredPublish][] = [];
      for (let i = 0; i < storage.length; i++) {
        const slot = storage.key(i)!;
        const n = slot.startsWith(name + ':') ? +slot.slice(name.length + 1) : NaN;
        if (n >= 0) {
          try {
            const p = JSON.parse(storage.getItem(slot)!) as StoredPublish;
            found.push([n, p]);
            slots.set(p.key, slot);
          } catch {
            storage.removeItem(slot); // torn by a crash: nothing to send
          }
          next = Math.max(next, n + 1);
        }
      }
      return found.sort((a, b) => a[0] - b[0]).map((f) => f[1]);
    },
    add(p) {
      const slot = name + ':' + next++;
      slots.set(p.key, slot);
      storage.setItem(slot, JSON.stringify(p));
    },
    remove(key) {
      const slot = slots.get(key);
      slots.delete(key);
      if (slot) storage.removeItem(slot);
    },
  };
}

/** Queued publishes in an IndexedDB database of that name (for larger or binary queues). */
export function indexedDBQueue(name = 'peregrine.queue'): QueueStore {
  const open = new Promise<IDBDatabase>((resolve, reject) => {
    const request = indexedDB.open(name, 1);
    request.onupgradeneeded = () => request.result.createObjectStore('q', { autoIncrement: true });
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  // Publish key -> record key, known once its add committed; removes wait for it.
  const ids = new Map<string, Promise<IDBValidKey>>();
  const run = <T>(mode: IDBTransactionMode, op: (s: IDBObjectStore) => IDBRequest<T>) =>
    open.then(
      (db) =>
        new Promise<T>((resolve, reject) => {
          const request = op(db.transaction('q', mode).objectStore('q'));
          request.onsuccess = () => resolve(request.result);
          request.onerror = () => reject(request.error);
        }),
    );
  return {
    async load() {
      const [keys, values] = await Promise.all([
        run('readonly', (s) => s.getAllKeys()),
        run('readonly', (s) => s.getAll()),
      ]);
      values.forEach((p: StoredPublish, i) => ids.set(p.key, Promise.resolve(keys[i])));
      return values;
    },
    add(p) {
      ids.set(p.key, run('readwrite', (s) => s.add(p)));
    },
    remove(key) {
      const id = ids.get(key);
      ids.delete(key);
      id?.then((id) => run('readwrite', (s) => s.delete(id)));
    },
  };
}

/** Positions by channel, kept in sessionStorage for the tab's next page. */
export function loadPositions(name: string): Record<string, StreamPosition> {
  try {
    return JSON.parse(sessionStorage.getItem(name) || '{}');
  } catch {
    return {};
  }
}

export function savePositions(name: string, positions: Record<string, StreamPosition>): void {
  try {
    sessionStorage.setItem(name, JSON.stringify(positions));
  } catch {
    // Storage full or disabled: the next page subscribes from "now".
  }
}
