// Publishing a client's tunnel: a listener of its own on a port of the server's ranges (`--ports`).
// A tunnel asking for port 0 gets the port it had last when that is free, else a free one from
// a random point of the ranges; a port is held from before its bind until its listener has closed.
import net from 'node:net';
import { formatHostPort } from '../net/host-port.js';
import { Acceptor } from '../engine/splice/acceptor.js';
import { tunnelInfo, tunnelLog, type Conn, type PublicTunnel, type ServerContext, type Session } from './server-context.js';
import { openNativeListener } from './server-native.js';

export type Refusal = { name: string; ok: false; code: string; message: string };
export type Granted = { name: string; ok: true; host: string; port: number };

/** Bind attempts when looking for a free port for a tunnel that asked for port 0. */
const MAX_BIND_ATTEMPTS = 512;
/** Tunnels whose last port is remembered (for a tunnel asking for port 0 again). */
const MAX_REMEMBERED_PORTS = 10_000;

export function listenOn(server: net.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * Stops a tunnel's listener. The port is free once close() returns (libuv closes a listening fd at
 * once); its 'close' is not awaited, as net.Server delays it until every public connection it
 * accepted has ended, and streams outlive their session.
 */
async function releasePort(server: net.Server | Acceptor): Promise<void> {
  // The acceptor's waiting public clients were reset with their session; its streams' fds are the engine's.
  if (server instanceof Acceptor) server.close();
  else if (server.listening) server.close();
  await new Promise((resolve) => setImmediate(resolve));
}

function formatRanges(ranges: { from: number; to: number }[]): string {
  return ranges.map((r) => (r.from === r.to ? `${r.from}` : `${r.from}-${r.to}`)).join(',');
}

export class PortAllocator {
  readonly #ctx: ServerContext;
  /** Where a public tunnel's connections go. */
  readonly #onPublic: (tunnel: PublicTunnel, conn: Conn) => void;
  /** Listeners are the addon's acceptors (the native data path), not net.Servers. */
  readonly #native: boolean;
  /** Ports held by a tunnel, until its listener has closed. */
  readonly #ports = new Map<number, PublicTunnel>();
  /** The port a client's tunnel had last: a tunnel asking for port 0 gets it back when it is free. */
  readonly #lastPort = new Map<string, number>();

  constructor(ctx: ServerContext, onPublic: (tunnel: PublicTunnel, conn: Conn) => void, native: boolean) {
    this.#ctx = ctx;
    this.#onPublic = onPublic;
    this.#native = native;
  }

  /** A listener on `port` whose public clients go to onPublic; rejects with the bind's error. */
  async #listen(tunnel: PublicTunnel, host: string, port: number): Promise<net.Server | Acceptor> {
    if (this.#native) return openNativeListener({ host, port }, this.#ctx.o.logger, (conn) => this.#onPublic(tunnel, conn));
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) => this.#onPublic(tunnel, socket));
    await listenOn(server, host, port);
    server.on('error', (err) => this.#ctx.o.logger?.warn({ tunnel: tunnel.name, err: err.message }, 'accept failed'));
    return server;
  }

  #allowed(port: number): boolean {
    return this.#ctx.o.ports.some((r) => port >= r.from && port <= r.to);
  }

  /** Ports to try for a tunnel that asked for port 0: the one it had last, then the ranges from a random point. */
  *#candidates(key: string): Generator<number> {
    const last = this.#lastPort.get(key);
    if (last !== undefined && this.#allowed(last)) yield last;
    const total = this.#ctx.o.ports.reduce((n, r) => n + (r.to - r.from + 1), 0);
    const offset = Math.floor(Math.random() * total);
    for (let i = 0; i < total; i++) {
      let k = (offset + i) % total;
      for (const r of this.#ctx.o.ports) {
        const size = r.to - r.from + 1;
        if (k < size) {
          yield r.from + k;
          break;
        }
        k -= size;
      }
    }
  }

  async open(session: Session, name: string, port: number): Promise<Granted | Refusal> {
    const o = this.#ctx.o;
    const refuse = (code: string, message: string): Refusal => ({ name, ok: false, code, message });
    if (session.tunnels.has(name)) return refuse('name-taken', `this client already has a tunnel named ${name}`);
    if (session.tunnels.size >= o.maxTunnelsPerClient) return refuse('too-many-tunnels', `a client may have ${o.maxTunnelsPerClient} tunnels`);
    if (port !== 0 && !this.#allowed(port)) return refuse('port-not-allowed', `port ${port} is outside the ports this server publishes on (${formatRanges(o.ports)})`);
    const host = o.publicHost;
    const key = `${session.clientId}\0${name}`;
    let attempts = 0;
    for (const candidate of port !== 0 ? [port] : this.#candidates(key)) {
      if (this.#ports.has(candidate)) {
        if (port !== 0) return refuse('port-in-use', `port ${port} is taken by another tunnel`);
        continue;
      }
      if (++attempts > MAX_BIND_ATTEMPTS) break;
      const tunnel: PublicTunnel = { name, host, port: candidate, address: formatHostPort({ host, port: candidate }), session, server: undefined as unknown as net.Server, closed: false };
      // Held before the bind so that a concurrent registration cannot pick it too.
      this.#ports.set(candidate, tunnel);
      try {
        tunnel.server = await this.#listen(tunnel, host, candidate);
      } catch (err) {
        this.#ports.delete(candidate);
        const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
        if (code === 'EADDRINUSE' && port === 0) continue;
        if (code === 'EADDRINUSE') return refuse('port-in-use', `port ${port} is in use on the server`);
        if (code === 'EACCES') return refuse('port-not-allowed', `the server may not listen on port ${candidate}`);
        return refuse('listen-failed', `listening on ${formatHostPort({ host, port: candidate })} failed: ${code}`);
      }
      if (session.closed) {
        tunnel.closed = true;
        await releasePort(tunnel.server);
        this.#ports.delete(candidate);
        return refuse('session-closed', 'the session ended');
      }
      session.tunnels.set(name, tunnel);
      this.#lastPort.delete(key);
      this.#lastPort.set(key, candidate);
      // Remembered for the clients seen most recently only: churning client ids cannot grow it without bound.
      if (this.#lastPort.size > MAX_REMEMBERED_PORTS) this.#lastPort.delete(this.#lastPort.keys().next().value!);
      const info = tunnelInfo(tunnel);
      o.logger?.info(tunnelLog(tunnel), 'tunnel up');
      this.#ctx.events.emit('tunnelUp', info);
      return { name, ok: true, host, port: candidate };
    }
    return refuse('no-free-port', `no free port in ${formatRanges(o.ports)}`);
  }

  /** Closes a tunnel's listener; its port is free for another tunnel once this resolves. */
  async release(tunnel: PublicTunnel): Promise<void> {
    tunnel.closed = true;
    await releasePort(tunnel.server);
    if (this.#ports.get(tunnel.port) === tunnel) this.#ports.delete(tunnel.port);
  }
}
