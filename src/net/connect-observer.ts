// Upstream connects as the one place that makes them sees them (dialWith, connectTcp): how long a
// connect took (name resolution included) and why one failed, for whoever counts them (the
// metrics). One observer per process: a process runs one service.

export interface UpstreamConnectObserver {
  connected(seconds: number): void;
  /** `code`: the errno name (ECONNREFUSED, ETIMEDOUT, ENOTFOUND...). */
  failed(code: string): void;
}

let observer: UpstreamConnectObserver | undefined;

/** Sets (or, with undefined, removes) the observer of every upstream connect from now on. */
export function observeUpstreamConnects(next: UpstreamConnectObserver | undefined): void {
  observer = next;
}

/**
 * `connecting` timed and reported to the observer. Not reported: an abort (the service is
 * shutting down) and a refusal by the caller's own rules (`denied`), which are no connect's fault.
 */
export function observed<T>(connecting: () => Promise<T>, denied?: (err: unknown) => boolean): Promise<T> {
  const watcher = observer;
  if (!watcher) return connecting();
  const started = performance.now();
  return connecting().then(
    (connection) => {
      watcher.connected((performance.now() - started) / 1000);
      return connection;
    },
    (err: unknown) => {
      const code = (err as NodeJS.ErrnoException)?.code ?? 'EIO';
      if (code !== 'ABORT_ERR' && !denied?.(err)) watcher.failed(code);
      throw err;
    },
  );
}
