// The handshake's sockets without net.Socket: the addon accepts, reads, writes and connects in
// an epoll set of its own on the JS thread, and this routes its events to whoever holds each
// connection. A service keeps every decision (parsers, rules, replies); what leaves here is
// either closed or an fd handed on whole: to the splice engine (SpliceEngine.adopt) or to a
// net.Socket (socketOnFd) for the paths that need one.
import fs from 'node:fs';
import { getSystemErrorName } from 'node:util';
import { formatHostPort, type HostPort } from '../../net/host-port.js';
import { openListenFd, type OpenListenFd } from '../../net/listeners.js';
import type { Connector } from '../../net/dial.js';
import type { Logger } from '../../logger.js';
import { ACCEPTOR_EVENT, loadNative, type NativeAcceptor } from './native.js';

/** What an accepted connection tells its holder. Each is called at most once, except `data`. */
export interface AcceptedHandler {
  data(chunk: Buffer): void;
  /** The peer's FIN: the connection is half-closed, still writable. */
  eof(): void;
  /** A read or write failed (errno name): the fd is closed already. */
  failed(code: string): void;
  /** After end(): the peer closed too, and the fd is closed. */
  drained(): void;
}

/** An upstream connection made by `connector`, held (not read) until it is released. */
export interface NativeUpstream {
  id: number;
  localAddress: string;
  localPort: number;
}

export interface AcceptorOptions {
  /** A new connection, already being read (unless `hold`); `attach` it, or `destroy` it. */
  onConnection: (id: number, remoteAddress: string, remotePort: number, acceptor: Acceptor) => void;
  /** Accepted connections are not read: their bytes wait in the kernel until `release` (a forwarder's). */
  hold?: boolean;
  logger?: Logger;
}

/** Who accepts a service's connections: 'native' (the Acceptor), 'node' (net.Server), or 'auto'. */
export type AcceptPath = 'auto' | 'native' | 'node';

/**
 * Whether the native accept path serves a service with this engine choice; throws (code
 * ERR_SPLICE_UNAVAILABLE) when 'native' was asked for and cannot be had.
 */
export function nativeAccept(asked: AcceptPath = 'auto', engine?: string): boolean {
  if (asked === 'node') return false;
  const why = engine === 'js' ? 'the js engine reads every byte through net.Socket' : acceptorUnavailable();
  if (why === null) return true;
  if (asked === 'native') throw Object.assign(new Error(`the native accept path is not available: ${why}`), { code: 'ERR_SPLICE_UNAVAILABLE' });
  return false;
}

type ConnectWaiter = (code: string | null, upstream?: NativeUpstream) => void;

const errnoName = (errno: number) => {
  try {
    return getSystemErrorName(-errno);
  } catch {
    return 'EIO';
  }
};

/** Why the acceptor cannot be used here, or null. */
export function acceptorUnavailable(): string | null {
  const load = loadNative();
  return load.binding ? null : load.reason;
}

export class Acceptor {
  readonly #native: NativeAcceptor;
  readonly #options: AcceptorOptions;
  readonly #handlers = new Map<number, AcceptedHandler>();
  readonly #connecting = new Map<number, ConnectWaiter>();
  readonly #listeners: number[] = [];
  /** The address each listener was asked for, as `unlisten` names it. */
  readonly #asked = new Map<number, string>();
  #closed = false;

  /**
   * An acceptor listening on every address (`listen`), on sockets `listenFd` makes or the addon's
   * own; when one cannot be bound, it is closed again and the bind's error rejects.
   */
  static async open(addresses: readonly HostPort[], options: AcceptorOptions & { listenFd?: OpenListenFd }): Promise<Acceptor> {
    const acceptor = new Acceptor(options);
    try {
      await acceptor.listen(addresses, { listenFd: options.listenFd });
      return acceptor;
    } catch (err) {
      acceptor.close();
      throw err;
    }
  }

  constructor(options: AcceptorOptions) {
    const load = loadNative();
    if (!load.binding) throw Object.assign(new Error(`native acceptor unavailable: ${load.reason}`), { code: 'ERR_SPLICE_UNAVAILABLE' });
    this.#options = options;
    this.#native = new load.binding.Acceptor((kind, id, a, b, c) => this.#onEvent(kind, id, a, b, c));
  }

  /**
   * Binds every address (names are resolved first: the addon takes numeric hosts), on sockets
   * `listenFd` makes (workers: SO_REUSEPORT) or the addon's plain ones; on a failure closes what
   * was bound and rejects with the bind's error (EADDRINUSE...).
   */
  async listen(addresses: readonly HostPort[], options: { listenFd?: OpenListenFd } = {}): Promise<HostPort[]> {
    const binding = loadNative().binding!;
    const open = options.listenFd ?? ((host: string, port: number) => binding.openListener(host, port));
    const before = this.#listeners.length;
    try {
      for (const address of addresses) {
        const fd = await openListenFd(open, address);
        try {
          const listener = this.#native.listen(fd, this.#options.hold ?? false);
          this.#listeners.push(listener);
          this.#asked.set(listener, formatHostPort(address));
        } catch (err) {
          // Not taken over (a closed acceptor): the fd is still ours.
          fs.closeSync(fd);
          throw err;
        }
      }
    } catch (err) {
      // Only what this call bound: a reload that fails leaves the running listeners as they were.
      for (const listener of this.#listeners.splice(before)) this.#closeListener(listener);
      throw err;
    }
    return this.addresses();
  }

  /**
   * Stops accepting on the listeners `listen` was asked to open on `address` (as given); the
   * connections they accepted are not touched. Returns how many.
   */
  unlisten(address: HostPort): number {
    const key = formatHostPort(address);
    const closing = this.#listeners.filter((listener) => this.#asked.get(listener) === key);
    for (const listener of closing) {
      this.#listeners.splice(this.#listeners.indexOf(listener), 1);
      this.#closeListener(listener);
    }
    return closing.length;
  }

  #closeListener(listener: number): void {
    this.#asked.delete(listener);
    this.#native.closeListener(listener);
  }

  addresses(): HostPort[] {
    return this.#listeners.flatMap((listener) => {
      const address = this.#native.listenerAddress(listener);
      return address ? [{ host: address[0], port: address[1] }] : [];
    });
  }

  /** Stops accepting; connections are not touched. */
  closeListeners(): void {
    for (const listener of this.#listeners.splice(0)) this.#closeListener(listener);
  }

  /** Routes the connection's events to `handler` from now on. */
  attach(id: number, handler: AcceptedHandler): void {
    this.#handlers.set(id, handler);
  }

  /**
   * Reads a held connection (an upstream from `connector` starts held), its events going to the
   * handler `attach` gave it; or holds it again, its bytes waiting in the kernel.
   */
  setHeld(id: number, held: boolean): void {
    this.#native.setHeld(id, held);
  }

  /** 0: written; 1: the rest queued; else the write failed (errno name). */
  write(id: number, data: Buffer): 0 | 1 | string {
    const written = this.#native.write(id, data);
    return written >= 0 ? (written as 0 | 1) : errnoName(-written);
  }

  /** Writes `data`, FIN, drops what still comes, and closes once the peer has: `drained` follows. */
  end(id: number, data: Buffer | null): void {
    this.#native.end(id, data);
  }

  /** Closes at once; `reset`: the peer sees a reset (SO_LINGER 0). */
  destroy(id: number, reset = false): void {
    this.#handlers.delete(id);
    this.#connecting.delete(id);
    this.#native.destroy(id, reset);
  }

  /**
   * The fd, now the caller's, with the bytes queued for it and not yet written (to be written
   * first). Null when the connection is gone.
   */
  release(id: number): { fd: number; unsent: Buffer | null } | null {
    this.#handlers.delete(id);
    const unsent = this.#native.takeUnsent(id);
    const fd = this.#native.release(id);
    return fd < 0 ? null : { fd, unsent };
  }

  /** Dial attempts for dialWith(): a non-blocking connect of the addon's, raced like any other. */
  readonly connector: Connector<NativeUpstream> = (address, port, settled) => {
    let id: number;
    try {
      id = this.#native.connect(address, port);
    } catch (err) {
      queueMicrotask(() => settled((err as NodeJS.ErrnoException).code ?? 'EIO'));
      return () => {};
    }
    this.#connecting.set(id, settled);
    return () => this.destroy(id);
  };

  get closed(): boolean {
    return this.#closed;
  }

  /** Closes every listener and connection; each holder hears `failed` (ECONNABORTED). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#listeners.length = 0;
    this.#native.close();
    const handlers = [...this.#handlers.values()];
    const connecting = [...this.#connecting.values()];
    this.#handlers.clear();
    this.#connecting.clear();
    for (const handler of handlers) handler.failed('ECONNABORTED');
    for (const settled of connecting) settled('ECONNABORTED');
  }

  #onEvent(kind: number, id: number, a: unknown, b: unknown, c: unknown): void {
    switch (kind) {
      case ACCEPTOR_EVENT.data:
        this.#handlers.get(id)?.data(a as Buffer);
        return;
      case ACCEPTOR_EVENT.accepted:
        this.#options.onConnection(id, b as string, c as number, this);
        return;
      case ACCEPTOR_EVENT.connected: {
        const settled = this.#connecting.get(id);
        this.#connecting.delete(id);
        if (!settled) {
          // Its dial gave up meanwhile.
          this.#native.destroy(id);
          return;
        }
        if (a === 0) settled(null, { id, localAddress: b as string, localPort: c as number });
        else settled(errnoName(a as number));
        return;
      }
      case ACCEPTOR_EVENT.eof:
        this.#handlers.get(id)?.eof();
        return;
      case ACCEPTOR_EVENT.failed: {
        const handler = this.#handlers.get(id);
        this.#handlers.delete(id);
        handler?.failed(errnoName(a as number));
        return;
      }
      case ACCEPTOR_EVENT.drained: {
        const handler = this.#handlers.get(id);
        this.#handlers.delete(id);
        handler?.drained();
        return;
      }
      case ACCEPTOR_EVENT.listenFailed:
        this.#options.logger?.warn({ err: errnoName(a as number) }, 'accept failed');
        return;
    }
  }
}
