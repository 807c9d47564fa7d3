// SOCKS BIND (SOCKS4 and SOCKS5): listen for one inbound connection on the
// client's behalf (the FTP active-mode data connection is the classic user),
// tell the client where, then who connected, and forward the pair.
import net from 'node:net';
import { formatHostPort } from '../net/host-port.js';
import { unmapIPv4 } from '../net/ip.js';
import { systemLookup } from '../net/dial.js';
import { parseIp } from './rules.js';
import type { ClientSession } from './session.js';
import type { BindReplies } from './socks.js';
import { allowed, refuse, refusedBeforeLookup, replyAndForward, type Destination, type TunnelContext } from './connect-step.js';
import type { ProxyConnectionRecord } from './options.js';

/** Bytes the client may send before the peer connects that are held for it; past this, TCP backpressure. */
const MAX_EARLY = 64 * 1024;

/** Same IP, whatever the spelling (IPv4-mapped IPv6, compressed or not). */
export function sameIp(a: string, b: string): boolean {
  const x = parseIp(a);
  const y = parseIp(b);
  return x !== undefined && y !== undefined && x.family === y.family && x.value === y.value;
}

/** 0.0.0.0 or :: — "any address" in a request. */
export function isUnspecified(host: string): boolean {
  return parseIp(host)?.value === 0n;
}

type Waited = { peer: net.Socket } | { failure: string; outcome: string; peerAddress?: string } | { outcome: 'client-closed' | 'aborted' };

export async function bindAndForward(
  session: ClientSession,
  request: { host: string; port: number },
  replies: BindReplies,
  ctx: TunnelContext,
  record: ProxyConnectionRecord,
): Promise<void> {
  const client = session.socket;
  const dest: Destination = { ...request, command: 'bind', user: record.user };
  record.destination = formatHostPort(request);
  // DST 0.0.0.0 ("any peer") is checked as that address: under an allow-list the client must name its peer.
  if (refusedBeforeLookup(ctx, client, dest)) return refuse(session, replies, 'EACCES', 'denied', record);

  // A domain DST is resolved and the peer compared with its addresses (rather than accepting
  // anyone): a name is as much a promise about who will connect as an IP is.
  let expected: string[] | 'any';
  try {
    expected = await expectedPeers(request.host, ctx);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'ENOTFOUND';
    return refuse(session, replies, code === 'ETIMEDOUT' ? code : 'ENOTFOUND', code, record);
  }
  if (expected !== 'any') {
    expected = expected.filter((address) => allowed(ctx, client, dest, address));
    if (expected.length === 0) return refuse(session, replies, 'EACCES', 'denied', record);
  }
  if (client.destroyed) {
    record.outcome = 'client-closed';
    return;
  }

  // The address the client reached us on is the one it can reach the listener on.
  const localIp = unmapIPv4(client.localAddress ?? '');
  const listener = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true });
  // accept() failing (EMFILE) must not throw from an unhandled 'error': the timeout ends the wait.
  listener.on('error', () => {});
  let waited: Waited;
  let early: EarlyBytes | undefined;
  try {
    const port = await listen(listener, localIp);
    session.write(replies.listening({ host: localIp, port }));
    early = new EarlyBytes(client, session.detach());
    // The IP alone is compared: a peer's source port is ephemeral, and clients put 0 or a guess in DST.PORT.
    waited = await awaitPeer(listener, client, ctx, (peerIp) =>
      (expected === 'any' || expected.some((address) => sameIp(address, peerIp))) && allowed(ctx, client, dest, peerIp),
    );
  } catch (err) {
    early?.take();
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    return refuse(session, replies, code, code, record);
  } finally {
    // Exactly one connection: whatever happened, nobody else gets in.
    listener.close();
  }
  const optimistic = early.take();

  if (!('peer' in waited)) {
    if ('failure' in waited) {
      if (waited.peerAddress) record.destination = waited.peerAddress;
      return refuse(session, replies, waited.failure, waited.outcome, record);
    }
    record.outcome = waited.outcome;
    client.destroy();
    return;
  }
  const { peer } = waited;
  const peerAddress = { host: unmapIPv4(peer.remoteAddress ?? ''), port: peer.remotePort ?? 0 };
  record.destination = formatHostPort(peerAddress);
  await replyAndForward(client, peer, replies.success(peerAddress), optimistic, ctx, record).forwarding;
}

async function expectedPeers(host: string, ctx: TunnelContext): Promise<string[] | 'any'> {
  if (net.isIP(host)) return isUnspecified(host) ? 'any' : [host];
  return resolveHost(host, ctx);
}

/** Every address of a name (ctx.lookup or the system resolver), within the connect timeout; errors carry an errno-style code. */
export async function resolveHost(host: string, ctx: TunnelContext): Promise<string[]> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error('lookup timed out'), { code: 'ETIMEDOUT' })), ctx.connectTimeout);
  });
  try {
    const found = await Promise.race([(ctx.lookup ?? systemLookup)(host), timeout]);
    if (found.length === 0) throw Object.assign(new Error(`${host} has no address`), { code: 'ENOTFOUND' });
    return found.map((entry) => entry.address);
  } finally {
    clearTimeout(timer);
  }
}

function listen(server: net.Server, host: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      server.off('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

/** The first connection decides: a peer the request did not name fails the BIND (protocols.md). */
function awaitPeer(listener: net.Server, client: net.Socket, ctx: TunnelContext, acceptable: (ip: string) => boolean): Promise<Waited> {
  return new Promise<Waited>((resolve) => {
    let settled = false;
    const finish = (waited: Waited) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.off('end', onGone);
      client.off('close', onGone);
      ctx.signal.removeEventListener('abort', onAbort);
      resolve(waited);
    };
    const onGone = () => finish({ outcome: 'client-closed' });
    const onAbort = () => finish({ outcome: 'aborted' });
    const timer = setTimeout(() => finish({ failure: 'ETIMEDOUT', outcome: 'ETIMEDOUT' }), ctx.connectTimeout);
    // A FIN counts as gone: a client that closes looks the same as one that half-closes while
    // waiting, and holding the listener open for it until the timeout helps nobody.
    client.once('end', onGone);
    client.once('close', onGone);
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    if (ctx.signal.aborted) onAbort();
    // It may have gone while the listener was being set up, its events already past.
    if (client.destroyed || client.readableEnded) onGone();
    listener.on('connection', (peer) => {
      peer.on('error', () => {});
      const ip = unmapIPv4(peer.remoteAddress ?? '');
      if (settled || !acceptable(ip)) {
        peer.destroy();
        if (!settled) finish({ failure: 'EACCES', outcome: 'denied', peerAddress: formatHostPort({ host: ip, port: peer.remotePort ?? 0 }) });
        return;
      }
      finish({ peer });
    });
  });
}

/**
 * Reads what the client sends while the peer is awaited, so its close is seen; the bytes go to the
 * peer first. Past MAX_EARLY the socket is paused (memory stays bounded; the timeout still ends it).
 */
class EarlyBytes {
  readonly #chunks: Buffer[] = [];
  #size = 0;
  readonly #onData = (chunk: Buffer) => {
    this.#chunks.push(chunk);
    this.#size += chunk.length;
    if (this.#size >= MAX_EARLY) this.socket.pause();
  };

  constructor(readonly socket: net.Socket, first: Buffer) {
    if (first.length > 0) this.#onData(first);
    socket.on('data', this.#onData);
    if (this.#size < MAX_EARLY) socket.resume();
  }

  /** Stops reading; the socket is left paused for forward() or close(). */
  take(): Buffer {
    this.socket.off('data', this.#onData);
    this.socket.pause();
    return Buffer.concat(this.#chunks);
  }
}
