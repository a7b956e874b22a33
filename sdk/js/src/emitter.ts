/** A small typed event emitter: `on` returns a function that removes the handler. */
export class Emitter<Events extends Record<string, any>> {
  private handlers: { [K in keyof Events]?: ((event: Events[K]) => void)[] } = {};

  on<K extends keyof Events>(type: K, handler: (event: Events[K]) => void): () => void {
    (this.handlers[type] ||= []).push(handler);
    return () => this.off(type, handler);
  }

  off<K extends keyof Events>(type: K, handler: (event: Events[K]) => void): void {
    // A new array, so an emit in progress goes on over the old one.
    this.handlers[type] = (this.handlers[type] || []).filter((h) => h !== handler);
  }

  /** @internal A handler that throws does not stop the others nor the client: rethrown apart. */
  emit<K extends keyof Events>(type: K, event: Events[K]): void {
    const list = this.handlers[type];
    if (!list) return;
    for (const handler of list) {
      try {
        handler(event);
      } catch (error) {
        setTimeout(() => {
          throw error;
        });
      }
    }
  }
}
