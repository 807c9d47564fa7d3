// Per-connection abort callbacks on a long-lived signal (a server's shutdown signal, which every
// open connection listens on). Node's AbortSignal keeps its listeners in a list that both
// addEventListener (duplicate check) and removeEventListener walk, so with n connections open each
// connection's add and remove cost O(n). Here a signal gets one listener, and the callbacks sit in
// a Set: O(1) each way. Same semantics as addEventListener('abort', callback, { once: true }):
// called once, in the order added; never for a signal that had aborted before; a throwing
// callback does not keep the others from running, and its error is thrown uncaught.

const registered = new WeakMap<AbortSignal, Set<() => void>>();

/** Calls `callback` once when `signal` aborts; the function returned unregisters it. */
export function onAbort(signal: AbortSignal, callback: () => void): () => void {
  if (signal.aborted) return noop;
  let callbacks = registered.get(signal);
  if (!callbacks) {
    const set = new Set<() => void>();
    callbacks = set;
    registered.set(signal, set);
    signal.addEventListener(
      'abort',
      () => {
        registered.delete(signal);
        for (const fn of [...set]) {
          // One removed by a callback that ran before it is not called.
          if (!set.delete(fn)) continue;
          try {
            fn();
          } catch (err) {
            process.nextTick(() => {
              throw err;
            });
          }
        }
      },
      { once: true },
    );
  }
  const set = callbacks;
  set.add(callback);
  return () => {
    set.delete(callback);
  };
}

function noop(): void {}
