// Connecting, held to a deadline and an abort signal: one upstream for a client already accepted
// (connectTcp), any socket that is connecting (whenConnected: the tunnel client's TCP or TLS way
// to its server), and the lookups and staggered attempts of dial.ts.
import net from 'node:net';
import { onAbort } from './abort.js';
import type { HostPort } from './host-port.js';
import { observed } from './connect-observer.js';

/** How long a service waits for an upstream to accept, unless told otherwise. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/** A connect failure with the errno-style code that says why (ECONNREFUSED, ENOTFOUND, ETIMEDOUT, EACCES, ABORT_ERR...). */
export class DialError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'DialError';
  }
}

export interface Deadline {
  timeoutMs: number;
  /** A signal aborted before the call is not looked at (as onAbort). */
  signal?: AbortSignal;
  timedOut: () => Error;
  aborted: () => Error;
}

/**
 * A promise that `start` settles, unless `timeoutMs` passes first (rejected with `timedOut()`) or
 * the signal aborts (`aborted()`). What `start` returns runs once when the promise is settled,
 * told whether it failed, so that what was opened for it is let go or destroyed.
 */
export function settleWithin<T>(
  deadline: Deadline,
  start: (resolve: (value: T) => void, reject: (err: Error) => void) => ((failed: boolean) => void) | void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let outcome: { failed: boolean } | undefined;
    let cleanup: ((failed: boolean) => void) | void;
    const settle = (failed: boolean, finish: () => void) => {
      if (outcome) return;
      outcome = { failed };
      clearTimeout(timer);
      detach?.();
      cleanup?.(failed);
      finish();
    };
    const fail = (err: Error) => settle(true, () => reject(err));
    const timer = setTimeout(() => fail(deadline.timedOut()), deadline.timeoutMs);
    const detach = deadline.signal ? onAbort(deadline.signal, () => fail(deadline.aborted())) : undefined;
    try {
      cleanup = start((value) => settle(false, () => resolve(value)), fail);
    } catch (err) {
      return fail(err as Error);
    }
    // Settled while starting: the cleanup was not there yet to be run.
    if (outcome) cleanup?.(outcome.failed);
  });
}

export interface WhenConnectedOptions<S extends net.Socket> {
  timeoutMs: number;
  signal?: AbortSignal;
  /** `secureConnect` for TLS: connected once the handshake is done. Default `connect`. */
  ready?: 'connect' | 'secureConnect';
  /** Called when ready; an Error it returns fails the connect instead. */
  check?: (socket: S) => Error | undefined;
  /** Defaults: an Error with code ETIMEDOUT / ABORT_ERR, and the socket's own error as it is. */
  timedOut?: () => Error;
  aborted?: () => Error;
  failed?: (err: NodeJS.ErrnoException) => Error;
}

/**
 * Resolves with the socket `connect()` opens once it is connected; rejects (a throw of `connect`
 * too) on its error, after `timeoutMs` or when the signal aborts, and destroys it then. Its errors
 * after that are the caller's to handle.
 */
export function whenConnected<S extends net.Socket>(connect: () => S, options: WhenConnectedOptions<S>): Promise<S> {
  const { timedOut = () => codeError('connect timed out', 'ETIMEDOUT'), aborted = () => codeError('aborted', 'ABORT_ERR') } = options;
  return settleWithin<S>({ timeoutMs: options.timeoutMs, signal: options.signal, timedOut, aborted }, (resolve, reject) => {
    const socket = connect();
    const onError = (err: NodeJS.ErrnoException) => reject(options.failed ? options.failed(err) : err);
    socket.once('error', onError);
    socket.once(options.ready ?? 'connect', () => {
      const failure = options.check?.(socket);
      if (failure) reject(failure);
      else resolve(socket);
    });
    return (failed) => {
      socket.off('error', onError);
      if (!failed) return;
      socket.on('error', () => {});
      socket.destroy();
    };
  });
}

/**
 * Connects with half-open allowed and Nagle off (a forwarder must not add delay), rejecting with
 * code ETIMEDOUT after `timeoutMs` and ABORT_ERR when the signal aborts; the socket is destroyed then.
 */
export function connectTcp(to: HostPort, timeoutMs: number, signal?: AbortSignal): Promise<net.Socket> {
  return observed(() => whenConnected(() => net.connect({ host: to.host, port: to.port, allowHalfOpen: true, noDelay: true }), { timeoutMs, signal }));
}

function codeError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}
