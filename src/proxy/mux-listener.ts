// The proxy's listeners served on the JS path: `mux://HOST:PORT` (yamux over TCP), `mux+tls://HOST:PORT`
// (yamux over TLS) and `tls://HOST:PORT` (a TLS connection per client). Every connection accepted
// on a mux address is a server-side yamux session; every stream its peer opens is handed on with
// the address of that connection, which is the client for the rules, the per-client limit and the
// records (a stream has no address of its own). A tls:// connection is handed on itself, once its
// handshake is done.
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { formatHostPort } from '../net/host-port.js';
import { Listeners } from '../net/listeners.js';
import { createMuxSession, type MuxSession } from '../mux/session.js';
import type { MuxStream } from '../mux/stream.js';
import type { MuxSessionOptions } from '../mux/options.js';
import type { Logger } from '../logger.js';
import type { MuxListenAddress } from './mux-address.js';

export interface MuxTlsFiles {
  cert: Buffer;
  key: Buffer;
}

export interface MuxListenersOptions {
  /** Session options other than the role (window, stream count, keepalive). */
  mux?: Omit<MuxSessionOptions, 'role'>;
  /** The certificate and key of mux+tls:// listeners; without them none can be bound. */
  tls?: MuxTlsFiles;
  /** How long a TLS handshake may take, ms. */
  handshakeTimeout: number;
  /**
   * The server's limits now: connections carrying sessions (TLS handshakes included) are bounded
   * by them too, in all and by peer IP, so that connections that open no stream cannot pile up.
   */
  limits: () => { connections: number; perClient: number };
  logger?: Logger;
}

/** The peer of the connection that carries a stream. */
export interface StreamPeer {
  host: string;
  port: number;
}

export class MuxListeners {
  readonly #plain: Listeners;
  readonly #tls: Listeners;
  readonly #tlsClients: Listeners;
  /** Not listening: accepted TCP connections are handed to them for the handshake (handshakeTimeout included); then a session, or a client. */
  readonly #tlsServer: tls.Server | undefined;
  readonly #tlsClientServer: tls.Server | undefined;
  readonly #sessions = new Set<MuxSession>();
  readonly #options: MuxListenersOptions;
  /** A stream (with its id) or a tls:// client (no id), and the peer of its connection. */
  readonly #onStream: (stream: Duplex, peer: StreamPeer, streamId?: number) => void;
  #closing = false;
  /** Connections accepted and not yet closed, in all and by peer IP. */
  #connections = 0;
  readonly #perPeer = new Map<string, number>();

  constructor(onStream: (stream: Duplex, peer: StreamPeer, streamId?: number) => void, options: MuxListenersOptions) {
    this.#onStream = onStream;
    this.#options = options;
    const logger = options.logger;
    this.#plain = new Listeners(
      (socket) => {
        if (this.#admit(socket)) this.#session(socket);
      },
      { logger },
    );
    this.#tls = new Listeners(
      (socket) => {
        if (this.#admit(socket)) this.#handshake(this.#tlsServer!, socket);
      },
      { logger },
    );
    this.#tlsClients = new Listeners(
      (socket) => {
        if (this.#admit(socket)) this.#handshake(this.#tlsClientServer!, socket);
      },
      { logger },
    );
    if (options.tls) {
      this.#tlsServer = this.#handshaker(options.tls, 'mux+tls', (secure) => this.#session(secure));
      this.#tlsClientServer = this.#handshaker(options.tls, 'tls', (secure) => this.#client(secure));
    }
  }

  #handshaker(files: MuxTlsFiles, scheme: string, onSecure: (secure: tls.TLSSocket) => void): tls.Server {
    const server = tls.createServer({ cert: files.cert, key: files.key, handshakeTimeout: this.#options.handshakeTimeout, allowHalfOpen: true });
    server.on('secureConnection', onSecure);
    server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
      this.#options.logger?.debug({ client: formatHostPort({ host: socket.remoteAddress ?? '?', port: socket.remotePort ?? 0 }), err: err.message }, `${scheme} handshake failed`);
      socket.destroy();
    });
    return server;
  }

  /** Binds every address; on a failure closes what this call bound and rejects. */
  async listen(addresses: readonly MuxListenAddress[]): Promise<void> {
    if (addresses.some((address) => address.tls) && !this.#tlsServer) throw new TypeError('mux+tls:// and tls:// listen addresses need a certificate and key (tls)');
    const bound: MuxListenAddress[] = [];
    try {
      for (const address of addresses) {
        await this.#listenersOf(address).listen([address]);
        bound.push(address);
      }
    } catch (err) {
      for (const address of bound) this.#listenersOf(address).unlisten(address);
      throw err;
    }
  }

  #listenersOf(address: MuxListenAddress): Listeners {
    return address.tlsClients ? this.#tlsClients : address.tls ? this.#tls : this.#plain;
  }

  /** Stops accepting on `address` (as given to listen); its sessions go on. */
  unlisten(address: MuxListenAddress): number {
    return this.#listenersOf(address).unlisten(address);
  }

  addresses(): MuxListenAddress[] {
    return [
      ...this.#plain.addresses().map((a) => ({ ...a, tls: false })),
      ...this.#tls.addresses().map((a) => ({ ...a, tls: true })),
      ...this.#tlsClients.addresses().map((a) => ({ ...a, tls: true, tlsClients: true as const })),
    ];
  }

  get sessions(): number {
    return this.#sessions.size;
  }

  /**
   * Stops accepting and sends GoAway on every session: their peers open no more streams, the open
   * ones go on. Settles once every connection accepted here is gone (see destroy()).
   */
  goAway(): Promise<void> {
    this.#closing = true;
    const closed = Promise.all([this.#plain.close(), this.#tls.close(), this.#tlsClients.close()]);
    for (const session of this.#sessions) void session.close();
    return closed.then(() => {});
  }

  /** Ends every session at once, and with it every stream still open. */
  destroy(): void {
    for (const session of this.#sessions) session.destroy();
  }

  /** Whether the connection is within the limits (counted until it closes); destroyed if not. */
  #admit(socket: net.Socket): boolean {
    const ip = socket.remoteAddress ?? '';
    const fromPeer = this.#perPeer.get(ip) ?? 0;
    const limits = this.#options.limits();
    if (this.#closing || this.#connections >= limits.connections || fromPeer >= limits.perClient) {
      if (!this.#closing) this.#options.logger?.debug({ client: formatHostPort({ host: ip || '?', port: socket.remotePort ?? 0 }) }, 'mux connection past the limits: closed');
      socket.on('error', () => {});
      socket.destroy();
      return false;
    }
    this.#connections++;
    this.#perPeer.set(ip, fromPeer + 1);
    socket.once('close', () => {
      this.#connections--;
      const left = (this.#perPeer.get(ip) ?? 1) - 1;
      if (left > 0) this.#perPeer.set(ip, left);
      else this.#perPeer.delete(ip);
    });
    return true;
  }

  #handshake(server: tls.Server, socket: net.Socket): void {
    socket.on('error', () => {});
    server.emit('connection', socket);
  }

  /** A tls:// connection, past its handshake: the client itself. */
  #client(secure: tls.TLSSocket): void {
    if (this.#closing) return void secure.destroy();
    this.#onStream(secure, { host: secure.remoteAddress ?? '', port: secure.remotePort ?? 0 });
  }

  /** `socket`: the TCP or TLS connection (a TLSSocket reports its TCP peer). */
  #session(socket: net.Socket): void {
    if (this.#closing) return void socket.destroy();
    const peer: StreamPeer = { host: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
    const session = createMuxSession(socket, { ...this.#options.mux, role: 'server' });
    this.#sessions.add(session);
    session.on('error', (err) => this.#options.logger?.debug({ client: formatHostPort(peer), err: err.message }, 'mux session failed'));
    session.once('close', () => this.#sessions.delete(session));
    session.on('stream', (stream: MuxStream) => this.#onStream(stream, peer, stream.id));
  }
}
