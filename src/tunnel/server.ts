// `splicer tunnel server`: accepts tunnel clients on one address (control and data connections
// alike), publishes each client's tunnels on ports of its own, and joins every public connection
// to a data connection from that client with forward(): plain TCP on both sides, so on Linux the
// bytes are spliced.
//
// This file is the listener (TCP or TLS) and the front door: each connection's preamble says
// whether it is a control connection (server-sessions.ts), a data connection (server-streams.ts)
// or a mux connection (server-streams.ts, server-mux.ts). Tunnels' ports are server-ports.ts. With
// the splice engine and no TLS, the listeners are the addon's acceptors instead (server-native.ts).
import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { formatHostPort, type HostPort } from '../net/host-port.js';
import { certificateFingerprint } from './server-dialer.js';
import { HeaderError, readHeader } from './header.js';
import { parseOptions, TunnelServerOptionsSchema, type ResolvedServerOptions, type TunnelServerOptions } from './options.js';
import { encodeDataError, encodeFrame, parseConnectionStart, PREAMBLE_LENGTH, DATA_HELLO_LENGTH } from './protocol.js';
import { destroyConn, endWith, ignore, isNative, type Conn, type NativeConn, type ServerContext } from './server-context.js';
import { nodeSocketOf, nativeAddress, openNativeListener, serverNativePath } from './server-native.js';
import { readNativeHeader } from './native-header.js';
import type { Acceptor } from '../engine/splice/acceptor.js';
import type { RejectedInfo, ServerTunnelInfo, SessionInfo, TunnelServerEvents } from './server-events.js';
import { listenOn, PortAllocator } from './server-ports.js';
import { Sessions } from './server-sessions.js';
import { Streams } from './server-streams.js';

export type { RejectedInfo, ServerConnectionRecord, ServerTunnelInfo, SessionInfo, TunnelServerEvents } from './server-events.js';

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

export class TunnelServer extends EventEmitter<TunnelServerEvents> {
  #o: ResolvedServerOptions;
  #server: net.Server | undefined;
  /** The listen address's acceptor, on the native data path. */
  #acceptor: Acceptor | undefined;
  /** Whether connections are the acceptor's (server-native.ts): decided once, by the constructor's options. */
  readonly #native: boolean;
  readonly #sessions: Sessions;
  readonly #streams: Streams;
  readonly #unauthenticated = new Set<Conn>();
  /** Every TCP connection to the listen address, TLS handshakes included (net.Server.close waits for them all). */
  readonly #connections = new Set<net.Socket>();
  #closing = false;

  constructor(options: TunnelServerOptions) {
    super();
    this.#o = parseOptions(TunnelServerOptionsSchema, options, 'tunnel server');
    // Throws (ERR_SPLICE_UNAVAILABLE) when dataPath 'native' was asked for and cannot be had.
    this.#native = serverNativePath(this.#o);
    const closing = () => this.#closing;
    const current = () => this.#o;
    const ctx: ServerContext = {
      // What each login, registration and stream starts with: reconfigure() replaces it whole.
      get o() {
        return current();
      },
      events: this,
      get closing() {
        return closing();
      },
      reject: (info) => this.#reject(info),
    };
    this.#streams = new Streams(ctx, (idText) => this.#sessions.find(idText));
    this.#sessions = new Sessions(ctx, new PortAllocator(ctx, (tunnel, conn) => this.#streams.onPublic(tunnel, conn), this.#native), this.#streams);
  }

  /**
   * Options for what starts from now on: logins check the new token, registrations the new ports
   * and public host, new streams the new timeouts. Sessions already logged in, their published
   * ports and their streams go on as they are (a client whose token was replaced keeps its session
   * until it reconnects, and is refused then). The listen address, TLS, engine and logger are the
   * constructor's, and so is the data path. Invalid options reject and change nothing.
   */
  reconfigure(options: TunnelServerOptions): void {
    const next = parseOptions(TunnelServerOptionsSchema, options, 'tunnel server');
    const o = this.#o;
    this.#o = { ...next, listen: o.listen, tls: o.tls, engine: o.engine, spliceEngine: o.spliceEngine, logger: o.logger, dataPath: o.dataPath };
  }

  /** Who holds the connections: the addon's acceptor ('native') or net.Server ('node'). */
  get dataPath(): 'native' | 'node' {
    return this.#native ? 'native' : 'node';
  }

  /** The SHA-256 fingerprint of the TLS certificate, for clients to pin (`--tls-fingerprint`). */
  get fingerprint(): string | undefined {
    return this.#o.tls ? certificateFingerprint(this.#o.tls.cert) : undefined;
  }

  /** Binds the control/data address. */
  async listen(): Promise<HostPort> {
    if (this.#server || this.#acceptor) throw new Error('already listening');
    if (this.#native) {
      this.#acceptor = await openNativeListener(this.#o.listen, this.#o.logger, (conn) => this.#onConnection(conn));
      return this.address()!;
    }
    // Whatever goes wrong with one connection is that connection's end, logged, never the process's.
    const onSocket = (socket: net.Socket) => this.#onConnection(socket);
    const server = this.#o.tls
      ? // noDelay reaches the raw TCP sockets through net.Server (the TLS types omit it): without it a START and a small reply wait for a delayed ACK.
        tls.createServer({ cert: this.#o.tls.cert, key: this.#o.tls.key, allowHalfOpen: true, handshakeTimeout: this.#o.handshakeTimeout, noDelay: true } as tls.TlsOptions, onSocket)
      : net.createServer({ allowHalfOpen: true, noDelay: true }, onSocket);
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) =>
      this.#reject({ remote: remoteOf(socket), kind: 'unknown', code: err.code ?? 'ERR_TLS', message: err.message }),
    );
    server.on('connection', (raw: net.Socket) => {
      this.#connections.add(raw);
      raw.once('close', () => this.#connections.delete(raw));
    });
    await listenOn(server, this.#o.listen.host, this.#o.listen.port);
    server.on('error', (err) => this.#o.logger?.warn({ err: err.message }, 'accept failed'));
    this.#server = server;
    return this.address()!;
  }

  address(): HostPort | undefined {
    if (this.#acceptor) return nativeAddress(this.#acceptor);
    const address = this.#server?.address();
    return address && typeof address === 'object' ? { host: address.address, port: address.port } : undefined;
  }

  sessions(): SessionInfo[] {
    return this.#sessions.list();
  }

  tunnels(): ServerTunnelInfo[] {
    return this.#sessions.tunnels();
  }

  get activeConnections(): number {
    return this.#streams.size;
  }

  /**
   * Stops accepting, ends every client session (their ports close), gives streams `graceMs` to
   * finish, then aborts them.
   */
  async close(graceMs = 0): Promise<void> {
    this.#closing = true;
    const closed = this.#server ? closeServer(this.#server) : Promise.resolve();
    this.#acceptor?.closeListeners();
    for (const conn of this.#unauthenticated) destroyConn(conn);
    await this.#sessions.closeAll('shutting-down', 'the server is shutting down');
    await this.#streams.drain(graceMs);
    // What is left in it: refusals lingering for their peer to read them.
    this.#acceptor?.close();
    // A peer that half-closed during a TLS handshake leaves a socket that only the handshake timeout would end.
    for (const raw of this.#connections) raw.destroy();
    await closed;
  }

  // Whatever goes wrong with one connection is that connection's end, logged, never the process's.
  #onConnection(conn: Conn): void {
    this.#accept(conn).catch((err: Error) => {
      destroyConn(conn);
      this.#o.logger?.error({ remote: remoteOf(conn), err: err.message }, 'connection failed');
    });
  }

  /** Its first header, and on the native path the bytes read past it. */
  async #readStart(conn: Conn) {
    const options = { timeoutMs: this.#o.handshakeTimeout, maxBytes: PREAMBLE_LENGTH + DATA_HELLO_LENGTH };
    if (isNative(conn)) return readNativeHeader(conn.acceptor, conn.id, parseConnectionStart, options);
    return { header: await readHeader(conn, parseConnectionStart, options), rest: undefined };
  }

  /** Every connection to the listen address: preamble → control or data. */
  async #accept(socket: Conn): Promise<void> {
    if (!isNative(socket)) socket.on('error', ignore);
    // Read now (a socket closed by its peer no longer has it), printed only when something is logged about it.
    const host = socket.remoteAddress;
    const port = socket.remotePort ?? 0;
    const remote = () => (host ? formatHostPort({ host, port }) : '?');
    if (this.#closing) return void destroyConn(socket);
    if (this.#unauthenticated.size >= this.#o.maxUnauthenticated) {
      this.#reject({ remote: remote(), kind: 'unknown', code: 'busy', message: `${this.#unauthenticated.size} connections are already logging in` });
      destroyConn(socket);
      return;
    }
    this.#unauthenticated.add(socket);
    // The connection as a net.Socket, once it is one (a control or mux connection).
    let control: net.Socket | undefined;
    try {
      const { header: start, rest } = await this.#readStart(socket);
      if (start.status === 'error') {
        const kind = (start as { kind?: 'control' | 'data' | 'mux' }).kind;
        const from = remote();
        if (kind === 'control') endWith(socket, encodeFrame({ type: 'error', code: start.code, message: start.message }));
        else if (kind === 'data' || kind === 'mux') endWith(socket, encodeDataError(start.reply, start.message));
        else destroyConn(socket);
        this.#reject({ remote: from, kind: kind ?? 'unknown', code: start.code, message: start.message });
        return;
      }
      if (start.kind === 'control') {
        // A control connection's frames are read by ControlChannel, over a net.Socket.
        control = isNative(socket) ? this.#toSocket(socket, rest ?? Buffer.alloc(0)) : socket;
        await this.#sessions.serveControl(control, remote(), () => this.#unauthenticated.delete(control!));
      } else if (start.kind === 'mux') {
        // A mux connection is a yamux session, over a net.Socket too.
        control = isNative(socket) ? this.#toSocket(socket, rest ?? Buffer.alloc(0)) : socket;
        this.#streams.serveMux(control, remote, start);
      } else this.#streams.serveData(socket, remote, start, rest);
    } catch (err) {
      const from = remote();
      if (control) control.destroy();
      else destroyConn(socket);
      if (err instanceof HeaderError) this.#reject({ remote: from, kind: 'unknown', code: err.code, message: err.message });
      else throw err;
    } finally {
      this.#unauthenticated.delete(socket);
      if (control) this.#unauthenticated.delete(control);
    }
  }

  /** The native connection as a net.Socket, counted as unauthenticated in its place. */
  #toSocket(conn: NativeConn, rest: Buffer): net.Socket {
    const socket = nodeSocketOf(conn, rest);
    socket.on('error', ignore);
    this.#unauthenticated.delete(conn);
    this.#unauthenticated.add(socket);
    return socket;
  }

  #reject(info: RejectedInfo): void {
    this.#o.logger?.warn(info, 'rejected');
    this.emit('rejected', info);
  }
}

function remoteOf(socket: Conn): string {
  return socket.remoteAddress ? formatHostPort({ host: socket.remoteAddress, port: socket.remotePort ?? 0 }) : '?';
}

export function createTunnelServer(options: TunnelServerOptions): TunnelServer {
  return new TunnelServer(options);
}
