/**
 * A minimal typed event emitter. A throwing listener must not break the SDK
 * or other listeners, so calls are isolated.
 */

export class Emitter<Events extends { [K in keyof Events]: unknown[] }> {
  private listeners: { [K in keyof Events]?: Set<(...args: Events[K]) => void> } = {};

  /** Subscribe; returns the function that unsubscribes. */
  on<K extends keyof Events>(type: K, fn: (...args: Events[K]) => void): () => void {
    const set = (this.listeners[type] ??= new Set());
    set.add(fn);
    return () => void set.delete(fn);
  }

  emit<K extends keyof Events>(type: K, ...args: Events[K]): void {
    this.listeners[type]?.forEach((fn) => {
      try {
        fn(...args);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    });
  }

  clear(): void {
    this.listeners = {};
  }
}
