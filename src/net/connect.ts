// Connecting to an upstream for a client that is already accepted.
import net from 'node:net';
import { onAbort } from './abort.js';
import type { HostPort } from './host-port.js';

/** How long a service waits for an upstream to accept, unless told otherwise. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/**
 * Connects with half-open allowed and Nagle off (a forwarder must not add delay), rejecting with
 * code ETIMEDOUT after `timeoutMs` and ABORT_ERR when the signal aborts; the socket is destroyed then.
 */
export function connectTcp(to: HostPort, timeoutMs: number, signal?: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const upstream = net.connect({ host: to.host, port: to.port, allowHalfOpen: true, noDelay: true });
    const timer = setTimeout(() => fail(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })), timeoutMs);
    const detach = signal ? onAbort(signal, () => fail(Object.assign(new Error('aborted'), { code: 'ABORT_ERR' }))) : undefined;
    const done = () => {
      clearTimeout(timer);
      detach?.();
      upstream.off('error', fail);
    };
    function fail(err: Error) {
      done();
      upstream.destroy();
      reject(err);
    }
    upstream.once('error', fail);
    upstream.once('connect', () => {
      done();
      resolve(upstream);
    });
  });
}
