// SOCKS5 UDP ASSOCIATE (RFC 1928 section 7): a UDP relay that lives as long as
// the client's TCP control connection. The client sends `RSV FRAG ATYP ADDR
// PORT DATA` to the relay port; the payload goes to ADDR:PORT, and what comes
// back is wrapped in the same header, naming the target, and sent to the client.
import dgram from 'node:dgram';
import net from 'node:net';
import { unmapIPv4 } from '../net/ip.js';
import { encodeSocks5Reply, encodeUdpDatagram, parseUdpDatagram, SOCKS5_REPLY, socks5ReplyForErrno } from '../protocol/socks5.js';
import type { Logger } from '../logger.js';
import { isUnspecified, resolveHost, sameIp } from './bind.js';
import type { ClientSession } from './session.js';
import { allowed, refusedBeforeLookup, type Destination, type TunnelContext } from './connect-step.js';
import type { ProxyConnectionRecord } from './options.js';

export interface UdpContext extends TunnelContext {
  /** BND.ADDR given to clients instead of the local address (behind NAT: the public one). */
  advertise?: string;
  logger?: Logger;
}

// Every per-association structure is capped: a client may send as fast as it likes.
const MAX_NAMES = 256; // cached lookups
const MAX_TARGETS = 1024; // targets whose replies are let back in
const MAX_PENDING_LOOKUPS = 32; // datagrams waiting on DNS
const MAX_SEND_QUEUE = 64; // datagrams libuv holds unsent on one socket; past it, drop (UDP may)

export async function udpAssociate(session: ClientSession, hint: { host: string; port: number }, ctx: UdpContext, record: ProxyConnectionRecord): Promise<void> {
  const client = session.socket;
  // The relay listens where the client reached us, so it is reachable the same way.
  const localIp = unmapIPv4(client.localAddress ?? '');
  const relay = dgram.createSocket(net.isIPv6(localIp) ? 'udp6' : 'udp4');
  relay.on('error', () => {});
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) => {
      relay.once('error', reject);
      relay.bind(0, localIp, () => resolve(relay.address().port));
    });
  } catch (err) {
    relay.close();
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    record.outcome = code;
    record.reply = socks5ReplyForErrno(code);
    return session.close(encodeSocks5Reply(record.reply));
  }
  // Gone (or its FIN, the end of the association, came) while the socket was being bound.
  if (client.destroyed || client.readableEnded) {
    relay.close();
    record.outcome = 'client-closed';
    return;
  }
  session.write(encodeSocks5Reply(SOCKS5_REPLY.SUCCEEDED, { host: ctx.advertise ?? localIp, port }));
  record.reply = SOCKS5_REPLY.SUCCEEDED;
  // Nothing is expected on the control connection after the request; whatever came is ignored.
  session.detach();
  const association = new Association(relay, client, hint, ctx, record.user);
  const end = await association.ended;
  await association.close();
  record.outcome = end.outcome;
  if (end.code) record.code = end.code;
  record.bytesUp = association.bytesUp;
  record.bytesDown = association.bytesDown;
  record.datagramsDropped = association.dropped;
  record.datagramsDenied = association.denied;
}

type End = { outcome: string; code?: string };

class Association {
  bytesUp = 0;
  bytesDown = 0;
  dropped = 0;
  denied = 0;
  readonly ended: Promise<End>;
  readonly #clientIp: string;
  readonly #hintIp: string | undefined;
  /** The client's source port: from the request, else locked by its first datagram. */
  #clientPort: number;
  readonly #names = new Map<string, Promise<string>>();
  readonly #targets = new Set<string>();
  readonly #outbound = new Map<4 | 6, dgram.Socket>();
  #pending = 0;
  #closed = false;
  #lastActivity = performance.now();
  #idleTimer: NodeJS.Timeout | undefined;
  #finish: (end: End) => void = () => {};

  constructor(readonly relay: dgram.Socket, readonly client: net.Socket, hint: { host: string; port: number }, readonly ctx: UdpContext, readonly user?: string) {
    this.#clientIp = unmapIPv4(client.remoteAddress ?? '');
    this.#hintIp = net.isIP(hint.host) && !isUnspecified(hint.host) ? unmapIPv4(hint.host) : undefined;
    this.#clientPort = hint.port;
    this.ended = new Promise<End>((resolve) => (this.#finish = resolve));
    relay.on('message', (msg, rinfo) => this.#fromClient(msg, rinfo));
    // The control connection carries nothing after the reply, but is read to see it end.
    client.on('data', () => {});
    client.on('end', () => this.#finish({ outcome: 'eof' }));
    client.on('close', () => this.#finish({ outcome: 'eof' }));
    client.on('error', (err: NodeJS.ErrnoException) => {
      const reset = err.code === 'ECONNRESET' || err.code === 'EPIPE';
      this.#finish({ outcome: reset ? 'reset' : 'error', code: err.code });
    });
    client.resume();
    const onAbort = () => this.#finish({ outcome: 'aborted' });
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    if (ctx.signal.aborted) onAbort();
    void this.ended.then(() => ctx.signal.removeEventListener('abort', onAbort));
    if (ctx.idleTimeout > 0) this.#armIdle(ctx.idleTimeout);
  }

  // One timer re-armed from the last activity, not reset per datagram.
  #armIdle(ms: number): void {
    this.#idleTimer = setTimeout(() => {
      const left = this.ctx.idleTimeout - (performance.now() - this.#lastActivity);
      if (left <= 0) this.#finish({ outcome: 'timeout' });
      else this.#armIdle(left);
    }, ms);
  }

  #fromClient(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const fromClient =
      sameIp(rinfo.address, this.#clientIp) &&
      (this.#hintIp === undefined || sameIp(rinfo.address, this.#hintIp)) &&
      (this.#clientPort === 0 || rinfo.port === this.#clientPort);
    const parsed = fromClient ? parseUdpDatagram(msg) : undefined;
    // No reassembly: RFC 1928 lets a server drop fragments (FRAG != 0).
    if (parsed?.status !== 'ok' || parsed.datagram.frag !== 0) {
      this.dropped++;
      return;
    }
    this.#clientPort ||= rinfo.port;
    const { host, port, data } = parsed.datagram;
    const dest: Destination = { host, port, command: 'udp', user: this.user };
    if (net.isIP(host)) return this.#toTarget(dest, unmapIPv4(host), data);
    if (refusedBeforeLookup(this.ctx, this.client, dest)) {
      this.denied++;
      return;
    }
    if (this.#pending >= MAX_PENDING_LOOKUPS) {
      this.dropped++;
      return;
    }
    this.#pending++;
    this.#lookup(host).then(
      (address) => this.#toTarget(dest, address, data),
      () => this.dropped++,
    ).finally(() => this.#pending--);
  }

  /** First address of a name, cached for the association's life; a failure is not cached. */
  #lookup(host: string): Promise<string> {
    let found = this.#names.get(host);
    if (!found) {
      found = resolveHost(host, this.ctx).then((addresses) => unmapIPv4(addresses[0]));
      found.catch(() => this.#names.delete(host));
      if (this.#names.size >= MAX_NAMES) this.#names.delete(this.#names.keys().next().value!);
      this.#names.set(host, found);
    }
    return found;
  }

  #toTarget(dest: Destination, address: string, data: Buffer): void {
    // A lookup may finish after the association closed: no socket may be made then.
    if (this.#closed) return;
    if (!allowed(this.ctx, this.client, dest, address)) {
      this.denied++;
      return;
    }
    const family = net.isIPv6(address) ? 6 : 4;
    let socket = this.#outbound.get(family);
    if (!socket) {
      // A second socket, bound to the wildcard: the client-facing address (loopback, a LAN
      // address) may not route to the target, and target replies stay apart from the client's.
      socket = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
      socket.on('error', () => {});
      socket.on('message', (msg, rinfo) => this.#fromTarget(msg, rinfo));
      this.#outbound.set(family, socket);
    }
    const key = `${address} ${dest.port}`;
    if (!this.#targets.has(key)) {
      if (this.#targets.size >= MAX_TARGETS) this.#targets.delete(this.#targets.values().next().value!);
      this.#targets.add(key);
    }
    this.#send(socket, data, dest.port, address, data.length, 'up');
  }

  #fromTarget(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const address = unmapIPv4(rinfo.address);
    // Only targets the client sent to may answer: the outbound port is no open door to the client.
    if (!this.#targets.has(`${address} ${rinfo.port}`)) {
      this.dropped++;
      return;
    }
    this.#send(this.relay, encodeUdpDatagram(address, rinfo.port, msg), this.#clientPort, this.#clientIp, msg.length, 'down');
  }

  #send(socket: dgram.Socket, datagram: Buffer, port: number, address: string, payload: number, way: 'up' | 'down'): void {
    if (this.#closed || port === 0 || socket.getSendQueueCount() >= MAX_SEND_QUEUE) {
      this.dropped++;
      return;
    }
    this.#lastActivity = performance.now();
    try {
      socket.send(datagram, port, address, (err) => {
        if (err) this.dropped++;
        else if (way === 'up') this.bytesUp += payload;
        else this.bytesDown += payload;
      });
    } catch {
      this.dropped++;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#idleTimer);
    this.client.destroy();
    const sockets = [this.relay, ...this.#outbound.values()];
    await Promise.all(sockets.map((socket) => new Promise<void>((resolve) => socket.close(() => resolve()))));
  }
}
