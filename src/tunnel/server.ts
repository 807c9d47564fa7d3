// `splicer tunnel server`: accepts tunnel clients on one address (control and data connections
// alike), publishes each client's tunnels on ports of its own, and joins every public connection
// to a data connection from that client with forward(): plain TCP on both sides, so on Linux the
// bytes are spliced.
import { randomBytes } from 'node:crypto';
import { EventEmitter, setMaxListeners } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { formatHostPort, type HostPort } from '../net/host-port.js';
import { forward } from '../engine/forward.js';
import { resetSocket } from '../engine/splice/takeover.js';
import { ChannelClosed, ControlChannel, type ChannelEnd } from './channel.js';
import { certificateFingerprint } from './server-dialer.js';
import { HeaderError, readHeader } from './header.js';
import { parseOptions, TunnelServerOptionsSchema, type ResolvedServerOptions, type TunnelServerOptions } from './options.js';
import {
  clientProof,
  DATA_ERROR,
  dataErrorName,
  dataMac,
  encodeDataError,
  encodeFrame,
  encodeStart,
  NONCE_LENGTH,
  parseConnectionStart,
  PREAMBLE_LENGTH,
  DATA_HELLO_LENGTH,
  publicAddressOf,
  safeEqual,
  serverProof,
  SESSION_ID_LENGTH,
  sessionKey,
  type ConnectionStart,
  type ParsedControlMessage,
  type PublicAddress,
} from './protocol.js';
import type { RejectedInfo, ServerConnectionRecord, ServerTunnelInfo, SessionInfo, TunnelServerEvents } from './server-events.js';

export type { RejectedInfo, ServerConnectionRecord, ServerTunnelInfo, SessionInfo, TunnelServerEvents } from './server-events.js';

interface PublicTunnel {
  name: string;
  host: string;
  port: number;
  session: Session;
  server: net.Server;
  closed: boolean;
}

interface Waiting {
  socket: net.Socket;
  tunnel: PublicTunnel;
  client: PublicAddress | null;
  accepted: number;
  timer?: NodeJS.Timeout;
}

interface IdleData {
  socket: net.Socket;
  release: () => void;
}

interface Session {
  clientId: string;
  id: Buffer;
  idText: string;
  key: Buffer;
  channel: ControlChannel;
  remote: string;
  pool: number;
  started: number;
  tunnels: Map<string, PublicTunnel>;
  idle: IdleData[];
  waiting: Waiting[];
  requests: Map<number, NodeJS.Timeout>;
  nextRequest: number;
  closed: boolean;
  done?: Promise<void>;
  registering: Promise<void>;
}

type Refusal = { name: string; ok: false; code: string; message: string };
type Granted = { name: string; ok: true; host: string; port: number };

/** Requests for data connections outstanding at once, per session. */
const MAX_OUTSTANDING = 4096;
/** Bind attempts when looking for a free port for a tunnel that asked for port 0. */
const MAX_BIND_ATTEMPTS = 512;
/** Tunnels whose last port is remembered (for a tunnel asking for port 0 again). */
const MAX_REMEMBERED_PORTS = 10_000;
/** A peer told of an error gets this long to read it before its connection is destroyed. */
const LINGER_MS = 1000;

const round = (ms: number) => Math.round(ms * 1000) / 1000;

function listenOn(server: net.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/**
 * Stops a tunnel's listener. The port is free once close() returns (libuv closes a listening fd at
 * once); its 'close' is not awaited, as net.Server delays it until every public connection it
 * accepted has ended, and streams outlive their session.
 */
async function releasePort(server: net.Server): Promise<void> {
  if (server.listening) server.close();
  await new Promise((resolve) => setImmediate(resolve));
}

export class TunnelServer extends EventEmitter<TunnelServerEvents> {
  readonly #o: ResolvedServerOptions;
  readonly #token: string | Buffer;
  #server: net.Server | undefined;
  readonly #sessions = new Map<string, Session>();
  readonly #bySessionId = new Map<string, Session>();
  /** Ports held by a tunnel, until its listener has closed. */
  readonly #ports = new Map<number, PublicTunnel>();
  /** The port a client's tunnel had last: a tunnel asking for port 0 gets it back when it is free. */
  readonly #lastPort = new Map<string, number>();
  readonly #unauthenticated = new Set<net.Socket>();
  /** Every TCP connection to the listen address, TLS handshakes included (net.Server.close waits for them all). */
  readonly #connections = new Set<net.Socket>();
  readonly #streams = new Set<Promise<void>>();
  readonly #shutdown = new AbortController();
  #nextStream = 1;
  #closing = false;

  constructor(options: TunnelServerOptions) {
    super();
    this.#o = parseOptions(TunnelServerOptionsSchema, options, 'tunnel server');
    this.#token = this.#o.token;
    // Every stream listens on the shutdown signal: that many listeners is the design, not a leak.
    setMaxListeners(0, this.#shutdown.signal);
  }

  /** The SHA-256 fingerprint of the TLS certificate, for clients to pin (`--tls-fingerprint`). */
  get fingerprint(): string | undefined {
    return this.#o.tls ? certificateFingerprint(this.#o.tls.cert) : undefined;
  }

  /** Binds the control/data address. */
  async listen(): Promise<HostPort> {
    if (this.#server) throw new Error('already listening');
    // Whatever goes wrong with one connection is that connection's end, logged, never the process's.
    const onSocket = (socket: net.Socket) =>
      this.#accept(socket).catch((err: Error) => {
        socket.destroy();
        this.#o.logger?.error({ remote: remoteOf(socket), err: err.message }, 'connection failed');
      });
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
    const address = this.#server?.address();
    return address && typeof address === 'object' ? { host: address.address, port: address.port } : undefined;
  }

  sessions(): SessionInfo[] {
    return [...this.#sessions.values()].map((s) => this.#sessionInfo(s));
  }

  tunnels(): ServerTunnelInfo[] {
    return [...this.#sessions.values()].flatMap((s) => [...s.tunnels.values()].map((t) => this.#tunnelInfo(t)));
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
    for (const socket of this.#unauthenticated) socket.destroy();
    await Promise.all([...this.#sessions.values()].map((s) => this.#closeSession(s, 'shutting-down', 'the server is shutting down')));
    const deadline = Date.now() + graceMs;
    while (this.#streams.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    this.#shutdown.abort();
    await Promise.all(this.#streams);
    // A peer that half-closed during a TLS handshake leaves a socket that only the handshake timeout would end.
    for (const raw of this.#connections) raw.destroy();
    await closed;
  }

  // -------------------------------------------------------------------------------------------
  // Every connection to the listen address: preamble → control or data.

  async #accept(socket: net.Socket): Promise<void> {
    socket.on('error', () => {});
    const remote = remoteOf(socket);
    if (this.#closing) return void socket.destroy();
    if (this.#unauthenticated.size >= this.#o.maxUnauthenticated) {
      socket.destroy();
      this.#reject({ remote, kind: 'unknown', code: 'busy', message: `${this.#unauthenticated.size} connections are already logging in` });
      return;
    }
    this.#unauthenticated.add(socket);
    try {
      const start = await readHeader(socket, parseConnectionStart, {
        timeoutMs: this.#o.handshakeTimeout,
        maxBytes: PREAMBLE_LENGTH + DATA_HELLO_LENGTH,
      });
      if (start.status === 'error') {
        const kind = (start as { kind?: 'control' | 'data' }).kind;
        if (kind === 'control') endWith(socket, encodeFrame({ type: 'error', code: start.code, message: start.message }));
        else if (kind === 'data') endWith(socket, encodeDataError(start.reply, start.message));
        else socket.destroy();
        this.#reject({ remote, kind: kind ?? 'unknown', code: start.code, message: start.message });
        return;
      }
      if (start.kind === 'control') await this.#serveControl(socket, remote);
      else this.#serveData(socket, remote, start);
    } catch (err) {
      socket.destroy();
      if (err instanceof HeaderError) this.#reject({ remote, kind: 'unknown', code: err.code, message: err.message });
      else throw err;
    } finally {
      this.#unauthenticated.delete(socket);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Control connections: login, then the session until the connection ends.

  async #serveControl(socket: net.Socket, remote: string): Promise<void> {
    const channel = new ControlChannel(socket);
    const timeout = this.#o.handshakeTimeout;
    let clientId: string | undefined;
    let session: Session;
    try {
      const hello = await channel.next(timeout);
      if (hello.type !== 'hello') return this.#refuseLogin(channel, remote, 'unexpected-message', `expected hello, got ${hello.type}`);
      clientId = hello.clientId;
      const clientNonce = Buffer.from(hello.nonce, 'base64');
      const serverNonce = randomBytes(NONCE_LENGTH);
      channel.send({ type: 'challenge', nonce: serverNonce.toString('base64') });
      const auth = await channel.next(timeout);
      if (auth.type !== 'auth') return this.#refuseLogin(channel, remote, 'unexpected-message', `expected auth, got ${auth.type}`, clientId);
      const expected = clientProof(this.#token, clientNonce, serverNonce, clientId);
      if (!safeEqual(Buffer.from(auth.proof, 'base64'), expected)) return this.#refuseLogin(channel, remote, 'auth-failed', 'the client does not know the token', clientId);
      if (this.#closing) return this.#refuseLogin(channel, remote, 'shutting-down', 'the server is shutting down', clientId);
      if (this.#sessions.size >= this.#o.maxSessions && !this.#sessions.has(clientId)) {
        return this.#refuseLogin(channel, remote, 'too-many-sessions', `the server holds ${this.#sessions.size} sessions, its limit`, clientId);
      }
      // A reconnecting client replaces its stale self: the old session's ports are free before the new one registers.
      for (let old = this.#sessions.get(clientId); old; old = this.#sessions.get(clientId)) {
        await this.#closeSession(old, 'replaced', 'a new connection with the same client id logged in');
      }
      if (channel.ended) throw new ChannelClosed(channel.ended);
      const id = randomBytes(SESSION_ID_LENGTH);
      session = {
        clientId,
        id,
        idText: id.toString('hex'),
        key: sessionKey(this.#token, clientNonce, serverNonce, id),
        channel,
        remote,
        pool: Math.min(hello.pool, this.#o.maxPool),
        started: performance.now(),
        tunnels: new Map(),
        idle: [],
        waiting: [],
        requests: new Map(),
        nextRequest: 1,
        closed: false,
        registering: Promise.resolve(),
      };
      this.#sessions.set(clientId, session);
      this.#bySessionId.set(session.idText, session);
      this.#unauthenticated.delete(socket);
      channel.send({
        type: 'welcome',
        sessionId: id.toString('base64'),
        proof: serverProof(this.#token, clientNonce, serverNonce, id).toString('base64'),
        heartbeatInterval: this.#o.heartbeatInterval,
        heartbeatTimeout: this.#o.heartbeatTimeout,
        pool: session.pool,
      });
    } catch (err) {
      if (!(err instanceof ChannelClosed)) throw err;
      channel.destroy();
      this.#reject({ remote, kind: 'control', code: err.code, message: err.message, clientId });
      return;
    }
    channel.startHeartbeat(this.#o.heartbeatInterval, this.#o.heartbeatTimeout);
    const info = this.#sessionInfo(session);
    this.#o.logger?.info(info, 'session open');
    this.emit('sessionOpen', info);
    channel.onMessage((message) => this.#onMessage(session, message));
    this.#want(session);
    const end = await channel.closed;
    await this.#endSession(session, end);
  }

  #refuseLogin(channel: ControlChannel, remote: string, code: string, message: string, clientId?: string): void {
    channel.fail(code, message);
    this.#reject({ remote, kind: 'control', code, message, clientId });
  }

  #onMessage(session: Session, message: ParsedControlMessage): void {
    switch (message.type) {
      case 'register': {
        const tunnels = message.tunnels;
        session.registering = session.registering
          .then(() => this.#register(session, tunnels))
          .catch((err: Error) => session.channel.fail('internal-error', `registration failed: ${err.message}`));
        return;
      }
      case 'connect-failed':
        // The request's slot stays taken until it expires, so a client that cannot dial is not asked again at once.
        this.#o.logger?.warn({ clientId: session.clientId, request: message.id, code: message.code }, 'client could not open a data connection');
        return;
      default:
        session.channel.fail('unexpected-message', `a client does not send ${message.type} once logged in`);
    }
  }

  async #register(session: Session, wanted: { name: string; port: number }[]): Promise<void> {
    const results: (Granted | Refusal)[] = [];
    for (const { name, port } of wanted) {
      if (session.closed) return;
      const result = await this.#openTunnel(session, name, port);
      if (!result.ok) {
        const refusal = { name, clientId: session.clientId, port, code: result.code, message: result.message };
        this.#o.logger?.warn({ tunnel: name, clientId: session.clientId, port, code: result.code, message: result.message }, 'tunnel refused');
        this.emit('tunnelRefused', refusal);
      }
      results.push(result);
    }
    if (!session.closed) session.channel.send({ type: 'registered', tunnels: results });
  }

  #allowed(port: number): boolean {
    return this.#o.ports.some((r) => port >= r.from && port <= r.to);
  }

  /** Ports to try for a tunnel that asked for port 0: the one it had last, then the ranges from a random point. */
  *#candidates(key: string): Generator<number> {
    const last = this.#lastPort.get(key);
    if (last !== undefined && this.#allowed(last)) yield last;
    const total = this.#o.ports.reduce((n, r) => n + (r.to - r.from + 1), 0);
    const offset = Math.floor(Math.random() * total);
    for (let i = 0; i < total; i++) {
      let k = (offset + i) % total;
      for (const r of this.#o.ports) {
        const size = r.to - r.from + 1;
        if (k < size) {
          yield r.from + k;
          break;
        }
        k -= size;
      }
    }
  }

  async #openTunnel(session: Session, name: string, port: number): Promise<Granted | Refusal> {
    const refuse = (code: string, message: string): Refusal => ({ name, ok: false, code, message });
    if (session.tunnels.has(name)) return refuse('name-taken', `this client already has a tunnel named ${name}`);
    if (session.tunnels.size >= this.#o.maxTunnelsPerClient) return refuse('too-many-tunnels', `a client may have ${this.#o.maxTunnelsPerClient} tunnels`);
    if (port !== 0 && !this.#allowed(port)) return refuse('port-not-allowed', `port ${port} is outside the ports this server publishes on (${formatRanges(this.#o.ports)})`);
    const host = this.#o.publicHost;
    const key = `${session.clientId}\0${name}`;
    let attempts = 0;
    for (const candidate of port !== 0 ? [port] : this.#candidates(key)) {
      if (this.#ports.has(candidate)) {
        if (port !== 0) return refuse('port-in-use', `port ${port} is taken by another tunnel`);
        continue;
      }
      if (++attempts > MAX_BIND_ATTEMPTS) break;
      const tunnel: PublicTunnel = { name, host, port: candidate, session, server: undefined as unknown as net.Server, closed: false };
      const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) => this.#onPublic(tunnel, socket));
      tunnel.server = server;
      // Held before the bind so that a concurrent registration cannot pick it too.
      this.#ports.set(candidate, tunnel);
      try {
        await listenOn(server, host, candidate);
      } catch (err) {
        this.#ports.delete(candidate);
        const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
        if (code === 'EADDRINUSE' && port === 0) continue;
        if (code === 'EADDRINUSE') return refuse('port-in-use', `port ${port} is in use on the server`);
        if (code === 'EACCES') return refuse('port-not-allowed', `the server may not listen on port ${candidate}`);
        return refuse('listen-failed', `listening on ${formatHostPort({ host, port: candidate })} failed: ${code}`);
      }
      server.on('error', (err) => this.#o.logger?.warn({ tunnel: name, err: err.message }, 'accept failed'));
      if (session.closed) {
        tunnel.closed = true;
        await releasePort(server);
        this.#ports.delete(candidate);
        return refuse('session-closed', 'the session ended');
      }
      session.tunnels.set(name, tunnel);
      this.#lastPort.delete(key);
      this.#lastPort.set(key, candidate);
      // Remembered for the clients seen most recently only: churning client ids cannot grow it without bound.
      if (this.#lastPort.size > MAX_REMEMBERED_PORTS) this.#lastPort.delete(this.#lastPort.keys().next().value!);
      const info = this.#tunnelInfo(tunnel);
      this.#o.logger?.info(this.#tunnelLog(tunnel), 'tunnel up');
      this.emit('tunnelUp', info);
      return { name, ok: true, host, port: candidate };
    }
    return refuse('no-free-port', `no free port in ${formatRanges(this.#o.ports)}`);
  }

  // -------------------------------------------------------------------------------------------
  // Public connections and data connections meet here.

  #onPublic(tunnel: PublicTunnel, socket: net.Socket): void {
    socket.on('error', () => {});
    const session = tunnel.session;
    const waiting: Waiting = { socket, tunnel, client: publicAddressOf(socket.remoteAddress, socket.remotePort), accepted: performance.now() };
    if (session.closed || tunnel.closed) return this.#dropPublic(waiting, 'session-closed');
    if (this.#closing) return this.#dropPublic(waiting, 'shutdown');
    const idle = session.idle.shift();
    if (idle) {
      idle.release();
      this.#startStream(waiting, idle.socket);
    } else {
      if (session.waiting.length >= this.#o.maxWaiting) return this.#dropPublic(waiting, 'limit');
      waiting.timer = setTimeout(() => {
        const i = session.waiting.indexOf(waiting);
        if (i >= 0) session.waiting.splice(i, 1);
        this.#dropPublic(waiting, 'no-data-connection');
      }, this.#o.dataTimeout);
      session.waiting.push(waiting);
    }
    this.#want(session);
  }

  /** A public client that will never get a data connection is reset, as a dead service would reset it. */
  #dropPublic(waiting: Waiting, reason: 'no-data-connection' | 'session-closed' | 'limit' | 'shutdown'): void {
    clearTimeout(waiting.timer);
    resetSocket(waiting.socket);
    this.#report({
      ...this.#recordBase(waiting),
      streamId: null,
      engine: null,
      bytesUp: 0,
      bytesDown: 0,
      waitMs: round(performance.now() - waiting.accepted),
      durationMs: round(performance.now() - waiting.accepted),
      reason,
    });
  }

  /** Asks the client for as many data connections as the waiting public clients and the pool need. */
  #want(session: Session): void {
    if (session.closed) return;
    let need = session.waiting.length + session.pool - session.idle.length - session.requests.size;
    while (need-- > 0 && session.requests.size < MAX_OUTSTANDING) {
      const id = session.nextRequest++;
      session.requests.set(
        id,
        setTimeout(() => {
          session.requests.delete(id);
          this.#want(session);
        }, this.#o.dataTimeout),
      );
      session.channel.send({ type: 'connect', id });
    }
  }

  #serveData(socket: net.Socket, remote: string, start: Extract<ConnectionStart, { kind: 'data' }>): void {
    const refuse = (code: number, message: string, clientId?: string) => {
      endWith(socket, encodeDataError(code, message));
      this.#reject({ remote, kind: 'data', code: dataErrorName(code), message, clientId });
    };
    if (this.#closing) return refuse(DATA_ERROR.SHUTTING_DOWN, 'the server is shutting down');
    const session = this.#bySessionId.get(start.sessionId.toString('hex'));
    if (!session || session.closed) return refuse(DATA_ERROR.UNKNOWN_SESSION, 'no such session (it may have ended)');
    if (!safeEqual(start.mac, dataMac(session.key, session.id, start.requestId))) {
      return refuse(DATA_ERROR.BAD_MAC, 'the data connection did not authenticate', session.clientId);
    }
    const timer = session.requests.get(start.requestId);
    if (timer === undefined) return refuse(DATA_ERROR.UNKNOWN_REQUEST, `request ${start.requestId} is unknown, used or expired`, session.clientId);
    clearTimeout(timer);
    session.requests.delete(start.requestId);
    // The client sends nothing after its hello until START has told it where the stream goes.
    if (socket.readableLength > 0) return refuse(DATA_ERROR.PROTOCOL, 'bytes after the data hello, before START', session.clientId);
    const waiting = session.waiting.shift();
    if (waiting) this.#startStream(waiting, socket);
    else if (session.idle.length < Math.max(session.pool, 8)) this.#park(session, socket);
    else refuse(DATA_ERROR.SURPLUS, 'no stream needs this data connection', session.clientId);
    this.#want(session);
  }

  /** Keeps an authenticated data connection until a public client needs it (the pool). */
  #park(session: Session, socket: net.Socket): void {
    const onData = () => {
      remove();
      endWith(socket, encodeDataError(DATA_ERROR.PROTOCOL, 'bytes on an idle data connection'));
    };
    const onGone = () => {
      remove();
      socket.destroy();
      this.#want(session);
    };
    const release = () => {
      socket.off('data', onData);
      socket.off('end', onGone);
      socket.off('close', onGone);
      socket.pause();
    };
    const entry: IdleData = { socket, release };
    const remove = () => {
      release();
      const i = session.idle.indexOf(entry);
      if (i >= 0) session.idle.splice(i, 1);
    };
    socket.on('data', onData);
    socket.on('end', onGone);
    socket.on('close', onGone);
    socket.resume();
    session.idle.push(entry);
  }

  #startStream(waiting: Waiting, data: net.Socket): void {
    clearTimeout(waiting.timer);
    const streamId = this.#nextStream++;
    const started = performance.now();
    const base = this.#recordBase(waiting);
    data.write(encodeStart(streamId, waiting.tunnel.name, waiting.client));
    this.emit('connectionOpen', { tunnel: base.tunnel, public: base.public, client: base.client, clientId: base.clientId, streamId });
    const done = forward(waiting.socket, data, {
      engine: this.#o.engine,
      idleTimeout: this.#o.idleTimeout,
      signal: this.#shutdown.signal,
      spliceEngine: this.#o.spliceEngine,
    })
      .then(
        (result) =>
          this.#report({
            ...base,
            streamId,
            engine: result.engine,
            bytesUp: result.bytesAtoB,
            bytesDown: result.bytesBtoA,
            waitMs: round(started - waiting.accepted),
            durationMs: round(performance.now() - waiting.accepted),
            reason: result.reason,
            ...(result.error ? { code: result.error.code } : {}),
          }),
        (err: NodeJS.ErrnoException) => {
          resetSocket(waiting.socket);
          data.destroy();
          this.#report({
            ...base,
            streamId,
            engine: null,
            bytesUp: 0,
            bytesDown: 0,
            waitMs: round(started - waiting.accepted),
            durationMs: round(performance.now() - waiting.accepted),
            reason: 'error',
            code: err.code ?? 'EIO',
          });
        },
      )
      .finally(() => this.#streams.delete(done));
    this.#streams.add(done);
  }

  // -------------------------------------------------------------------------------------------
  // Session end: ports freed, waiting public clients reset, idle data connections closed.

  #closeSession(session: Session, code: string, message: string): Promise<void> {
    session.channel.fail(code, message);
    return this.#endSession(session, session.channel.ended ?? { code, message, remote: false });
  }

  #endSession(session: Session, end: ChannelEnd): Promise<void> {
    session.done ??= (async () => {
      session.closed = true;
      if (this.#sessions.get(session.clientId) === session) this.#sessions.delete(session.clientId);
      this.#bySessionId.delete(session.idText);
      if (!session.channel.ended) session.channel.destroy(end.code, end.message);
      for (const timer of session.requests.values()) clearTimeout(timer);
      session.requests.clear();
      for (const waiting of session.waiting.splice(0)) this.#dropPublic(waiting, this.#closing ? 'shutdown' : 'session-closed');
      for (const idle of session.idle.splice(0)) {
        idle.release();
        idle.socket.destroy();
      }
      const reason = end.remote ? `client: ${end.code}` : end.code;
      await Promise.all(
        [...session.tunnels.values()].map(async (tunnel) => {
          tunnel.closed = true;
          await releasePort(tunnel.server);
          if (this.#ports.get(tunnel.port) === tunnel) this.#ports.delete(tunnel.port);
          this.#o.logger?.info({ ...this.#tunnelLog(tunnel), reason }, 'tunnel down');
          this.emit('tunnelDown', { ...this.#tunnelInfo(tunnel), reason });
        }),
      );
      session.tunnels.clear();
      const info = { ...this.#sessionInfo(session), code: end.code, message: end.message, durationMs: round(performance.now() - session.started) };
      this.#o.logger?.info({ ...info, remoteError: end.remote || undefined }, 'session closed');
      this.emit('sessionClose', info);
    })();
    return session.done;
  }

  // -------------------------------------------------------------------------------------------

  #sessionInfo(s: Session): SessionInfo {
    return { clientId: s.clientId, sessionId: s.idText, remote: s.remote, pool: s.pool };
  }

  #tunnelInfo(t: PublicTunnel): ServerTunnelInfo {
    return { name: t.name, clientId: t.session.clientId, sessionId: t.session.idText, host: t.host, port: t.port };
  }

  /** A tunnel as log lines name it: `tunnel` like the connection records, and where it is published. */
  #tunnelLog(t: PublicTunnel) {
    return { tunnel: t.name, clientId: t.session.clientId, sessionId: t.session.idText, public: formatHostPort({ host: t.host, port: t.port }) };
  }

  #recordBase(w: Waiting) {
    return {
      tunnel: w.tunnel.name,
      public: formatHostPort({ host: w.tunnel.host, port: w.tunnel.port }),
      client: w.client ? formatHostPort(w.client) : '?',
      clientId: w.tunnel.session.clientId,
    };
  }

  #report(record: ServerConnectionRecord): void {
    this.#o.logger?.info(record, 'connection closed');
    this.emit('connectionClose', record);
  }

  #reject(info: RejectedInfo): void {
    this.#o.logger?.warn(info, 'rejected');
    this.emit('rejected', info);
  }
}

function remoteOf(socket: net.Socket): string {
  return socket.remoteAddress ? formatHostPort({ host: socket.remoteAddress, port: socket.remotePort ?? 0 }) : '?';
}

function formatRanges(ranges: { from: number; to: number }[]): string {
  return ranges.map((r) => (r.from === r.to ? `${r.from}` : `${r.from}-${r.to}`)).join(',');
}

/** Writes a last message, ends, and destroys the socket if the peer has not closed within a second. */
function endWith(socket: net.Socket, message: Buffer): void {
  if (socket.destroyed) return;
  socket.on('error', () => {});
  socket.on('data', () => {});
  socket.on('end', () => socket.destroy());
  socket.resume();
  socket.end(message);
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
}

export function createTunnelServer(options: TunnelServerOptions): TunnelServer {
  return new TunnelServer(options);
}
