// Connects to a host by name or address, trying every address the name resolves
// to, both families, with staggered starts (RFC 8305 "Happy Eyeballs"), so an
// unroutable family or one dead address does not fail the connect.
import dns from 'node:dns';
import net from 'node:net';
import { DialError, settleWithin } from './connect.js';
import { observed } from './connect-observer.js';

export type LookupAll = (hostname: string) => Promise<Array<{ address: string; family: number }>>;

export interface DialOptions {
  /** Resolves a name to every address; default: the system resolver (dns.lookup, all, verbatim). */
  lookup?: LookupAll;
  /** Whole connect, lookup included, in ms. */
  timeout: number;
  signal?: AbortSignal;
  /** Addresses this returns false for are not tried (rules on the resolved address). */
  allowAddress?: (address: string) => boolean;
  /** ms before the next address is tried while the previous is still pending. */
  attemptDelay?: number;
  /** Not a connect to an upstream (the tunnel client's own data connections): not observed. */
  notUpstream?: boolean;
}

export const systemLookup: LookupAll = (hostname) => dns.promises.lookup(hostname, { all: true, verbatim: true });

/** IPv6 first, then alternating families, as RFC 8305 section 4 orders them. */
export function interleave(addresses: Array<{ address: string; family: number }>): string[] {
  const v6 = addresses.filter((a) => a.family === 6).map((a) => a.address);
  const v4 = addresses.filter((a) => a.family !== 6).map((a) => a.address);
  const out: string[] = [];
  for (let i = 0; i < Math.max(v6.length, v4.length); i++) {
    if (i < v6.length) out.push(v6[i]);
    if (i < v4.length) out.push(v4[i]);
  }
  return [...new Set(out)];
}

// When every address failed, the most telling error decides the reply: a refusal says the
// host is there, so it wins over unreachable, which wins over a timeout.
const ERROR_RANK = ['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EADDRNOTAVAIL', 'EAFNOSUPPORT', 'ETIMEDOUT'];
function mostTelling(codes: string[]): string {
  for (const code of ERROR_RANK) if (codes.includes(code)) return code;
  return codes[codes.length - 1] ?? 'ETIMEDOUT';
}

/**
 * Starts one connection attempt to a numeric address and calls `settled` once, with the
 * connection or an errno name, unless the returned function is called first: that one gives the
 * attempt up (destroys what it opened).
 */
export type Connector<T> = (address: string, port: number, settled: (code: string | null, connection?: T) => void) => () => void;

/** Node's own TCP connect: half-open allowed, Nagle off. */
export const tcpConnector: Connector<net.Socket> = (address, port, settled) => {
  const socket = net.connect({ host: address, port, allowHalfOpen: true, noDelay: true });
  const onError = (err: NodeJS.ErrnoException) => {
    socket.destroy();
    settled(err.code ?? 'ECONNREFUSED');
  };
  socket.once('error', onError);
  socket.once('connect', () => {
    socket.off('error', onError);
    socket.on('error', ignore);
    settled(null, socket);
  });
  return () => socket.destroy();
};

export function dial(host: string, port: number, options: DialOptions): Promise<net.Socket> {
  return dialWith(tcpConnector, host, port, options);
}

/** dial() over another kind of connection (the addon's, for the native handshake path). */
export function dialWith<T>(connector: Connector<T>, host: string, port: number, options: DialOptions): Promise<T> {
  if (options.notUpstream) return dialAddresses(connector, host, port, options);
  return observed(() => dialAddresses(connector, host, port, options), (err) => err instanceof DeniedByRules);
}

/** Every address of the host denied by the caller's filter: a refusal, not a failed connect. */
class DeniedByRules extends DialError {}

async function dialAddresses<T>(connector: Connector<T>, host: string, port: number, options: DialOptions): Promise<T> {
  const { timeout, signal, allowAddress, attemptDelay = 250 } = options;
  const deadline = Date.now() + timeout;
  let addresses: string[];
  if (net.isIP(host)) {
    addresses = [host];
  } else {
    try {
      addresses = interleave(await withDeadline((options.lookup ?? systemLookup)(host), deadline, signal));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'ENOTFOUND';
      throw new DialError(code === 'EAI_AGAIN' || code === 'ENODATA' ? 'ENOTFOUND' : code, `cannot resolve ${host}: ${code}`);
    }
    if (addresses.length === 0) throw new DialError('ENOTFOUND', `${host} has no address`);
  }
  if (allowAddress) {
    addresses = addresses.filter(allowAddress);
    if (addresses.length === 0) throw new DeniedByRules('EACCES', `every address of ${host} is denied by the rules`);
  }
  return race(connector, addresses, port, deadline, attemptDelay, signal);
}

const aborted = () => new DialError('ABORT_ERR', 'aborted');
const ignore = () => {};

function withDeadline<T>(promise: Promise<T>, deadline: number, signal?: AbortSignal): Promise<T> {
  const timedOut = () => new DialError('ETIMEDOUT', 'lookup timed out');
  return settleWithin<T>({ timeoutMs: Math.max(0, deadline - Date.now()), signal, timedOut, aborted }, (resolve, reject) => {
    promise.then(resolve, reject);
  });
}

function race<T>(connector: Connector<T>, addresses: string[], port: number, deadline: number, attemptDelay: number, signal?: AbortSignal): Promise<T> {
  if (signal?.aborted) return Promise.reject(aborted());
  const timedOut = () => new DialError('ETIMEDOUT', `connect to port ${port} timed out`);
  return settleWithin<T>({ timeoutMs: Math.max(0, deadline - Date.now()), signal, timedOut, aborted }, (resolve, reject) => {
    // Attempts still pending, each with the function that gives it up.
    const pending = new Set<() => void>();
    const codes: string[] = [];
    let next = 0;
    let settled = false;
    let stagger: NodeJS.Timeout | undefined;

    const attempt = () => {
      clearTimeout(stagger);
      if (settled || next >= addresses.length) return;
      const address = addresses[next++];
      let cancel: (() => void) | undefined;
      let done = false;
      const giveUp = () => cancel?.();
      cancel = connector(address, port, (code, connection) => {
        done = true;
        pending.delete(giveUp);
        if (settled) {
          // Late: the race is over (a winner, a timeout, an abort).
          if (code === null) cancel?.();
          return;
        }
        if (code === null) {
          resolve(connection as T);
          return;
        }
        codes.push(code);
        if (next < addresses.length) attempt();
        else if (pending.size === 0) reject(new DialError(mostTelling(codes), `connect to port ${port} failed: ${codes.join(', ')}`));
      });
      if (!done) pending.add(giveUp);
      if (next < addresses.length) stagger = setTimeout(attempt, attemptDelay);
    };
    attempt();
    return () => {
      settled = true;
      clearTimeout(stagger);
      for (const giveUp of pending) giveUp();
      pending.clear();
    };
  });
}
