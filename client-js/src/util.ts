/**
 * Small helpers shared by the SDK's modules. Nothing here has state.
 */

/** Add a listener and return its remover (capture phase unless told otherwise). */
export function listen(t: EventTarget, type: string, fn: (e: any) => void, opts: AddEventListenerOptions | boolean = true): () => void {
  t.addEventListener(type, fn, opts);
  return () => t.removeEventListener(type, fn, opts);
}

/** Run `fn`, turning exceptions (storage quota, disabled storage, bad JSON) into `undefined`. */
export function safe<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch {
    return undefined;
  }
}
