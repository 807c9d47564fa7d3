// The listening sockets of a service: bind every address or none, report what
// was bound, and keep accepting when accept() fails (EMFILE, ENFILE).
import dns from 'node:dns/promises';
import net from 'node:net';
import { formatHostPort, type HostPort } from './host-port.js';
import type { Logger } from '../logger.js';

/**
 * Makes a listening socket for a numeric host and returns its fd, which the Listeners then own
 * (the addon's `openListener(host, port, backlog, true)`: a socket with SO_REUSEPORT, which Node 20
 * cannot ask for, so that each worker process holds a socket of its own on one port).
 */
export type OpenListenFd = (host: string, port: number) => number;

/**
 * The fd of a socket listening on `address`, made by `open` (its name resolved first, as Node's
 * listen() would). A failure names the address, as Node's own "listen EADDRINUSE: address already
 * in use 127.0.0.1:1080" does.
 */
export async function openListenFd(open: OpenListenFd, address: HostPort): Promise<number> {
  const host = net.isIP(address.host) ? address.host : (await dns.lookup(address.host)).address;
  let fd: number;
  try {
    fd = open(host, address.port);
  } catch (err) {
    if (err instanceof Error) err.message = `${err.message} (listening on ${formatHostPort({ host, port: address.port })})`;
    throw err;
  }
  if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`listenFd returned ${String(fd)}, not an fd`);
  return fd;
}

/** Listen addresses to bind and to stop, compared as given (HOST:PORT before resolution). */
export function listenChanges(running: readonly HostPort[], wanted: readonly HostPort[]): { added: HostPort[]; removed: HostPort[] } {
  const keys = (list: readonly HostPort[]) => new Set(list.map(formatHostPort));
  const runningKeys = keys(running);
  const wantedKeys = keys(wanted);
  return {
    added: wanted.filter((address) => !runningKeys.has(formatHostPort(address))),
    removed: running.filter((address) => !wantedKeys.has(formatHostPort(address))),
  };
}

export interface ListenersOptions {
  /** Leave new connections unread until the handler reads them (their first bytes stay in the kernel). */
  pauseOnConnect?: boolean;
  /** Listen on sockets made by this function rather than by Node; host names are resolved first. */
  listenFd?: OpenListenFd;
  /** Makes each listening server (a tls.Server, whose connections come once their handshake is done) in place of a net.Server. */
  createServer?: (onConnection: (socket: net.Socket) => void) => net.Server;
  logger?: Logger;
}

export class Listeners {
  readonly #servers: net.Server[] = [];
  /** The address each server was asked for (by `listen`), as `unlisten` names it. */
  readonly #asked = new WeakMap<net.Server, string>();
  /** Servers closed by `unlisten`: their close settles when their last connection is gone. */
  readonly #retired: Promise<void>[] = [];
  readonly #onConnection: (socket: net.Socket) => void;
  readonly #options: ListenersOptions;

  constructor(onConnection: (socket: net.Socket) => void, options: ListenersOptions = {}) {
    this.#onConnection = onConnection;
    this.#options = options;
  }

  /**
   * Binds every address; on a failure closes what was bound and rejects. Called again (a reload),
   * it adds listeners, and a failure closes only the ones that call bound.
   */
  async listen(addresses: readonly HostPort[]): Promise<HostPort[]> {
    const before = this.#servers.length;
    try {
      for (const address of addresses) {
        const server =
          this.#options.createServer?.(this.#onConnection) ??
          net.createServer({ allowHalfOpen: true, pauseOnConnect: this.#options.pauseOnConnect ?? false, noDelay: true }, this.#onConnection);
        server.on('error', (err) => this.#options.logger?.warn({ err: err.message }, 'accept failed'));
        this.#servers.push(server);
        this.#asked.set(server, formatHostPort(address));
        const fd = this.#options.listenFd ? await openListenFd(this.#options.listenFd, address) : undefined;
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          const listening = () => {
            server.off('error', reject);
            resolve();
          };
          if (fd === undefined) server.listen(address.port, address.host, listening);
          else server.listen({ fd }, listening);
        });
      }
    } catch (err) {
      const added = this.#servers.splice(before);
      await Promise.all(added.map(closeServer));
      throw err;
    }
    return this.addresses();
  }

  /**
   * Stops accepting on the listeners `listen` was asked to open on `address` (as given, before
   * names and port 0 were resolved); their open connections are not touched. Returns how many.
   */
  unlisten(address: HostPort): number {
    const key = formatHostPort(address);
    const closing = this.#servers.filter((server) => this.#asked.get(server) === key);
    for (const server of closing) {
      this.#servers.splice(this.#servers.indexOf(server), 1);
      this.#retired.push(closeServer(server));
    }
    return closing.length;
  }

  addresses(): HostPort[] {
    return this.#servers.flatMap((server) => {
      const address = server.address();
      return address && typeof address === 'object' ? [{ host: address.address, port: address.port }] : [];
    });
  }

  /**
   * Stops accepting at once; open connections are not touched. The promise settles only
   * when every connection accepted here is gone (net.Server.close semantics): callers
   * that end connections themselves should await it after doing so.
   */
  async close(): Promise<void> {
    await Promise.all([...this.#servers.map(closeServer), ...this.#retired]);
  }
}

const closeServer = (server: net.Server) => new Promise<void>((resolve) => server.close(() => resolve()));
