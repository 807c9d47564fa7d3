// `forward` where an end is not plain TCP: every connection (or stream) accepted is carried to
// one upstream by the JS engine, whatever either end speaks.
//   accepted from   tcp://      TCP clients (left unread until the upstream is there)
//                   tls://      TLS clients, their handshake done
//                   mux://      every stream of every yamux session accepted (1:n)
//                   mux+tls://  the same, the sessions over TLS
//   carried to      tcp://, tls://  a connection per client
//                   mux://, mux+tls://  a stream per client, on N sessions kept up (n:1, mux-sessions.ts)
// A stream or a TLS socket is bytes in user space, so every pair is forward()ed on the JS engine;
// half-close and resets cross the hop as they would a plain TCP forwarder. With muxDataPath
// 'splice' (plain mux:// and TCP, the addon loaded) the sessions are SplicedMuxSessions instead:
// each stream's bytes move between its TCP socket and the session by splice().
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { forward } from '../engine/forward.js';
import type { EndReason, ForwardResult } from '../engine/contract.js';
import { resetSocket } from '../engine/splice/takeover.js';
import { observed } from '../net/connect-observer.js';
import { RunningTasks } from '../net/drain.js';
import { formatHostPort, type HostPort } from '../net/host-port.js';
import { Listeners } from '../net/listeners.js';
import { TlsDialer, type ClientTlsOptions } from '../net/tls-dial.js';
import { formatTransportAddress, isMux, isTls, type TransportScheme } from '../net/transport-url.js';
import { createMuxSession, type MuxSession } from '../mux/session.js';
import type { MuxSessionOptions } from '../mux/options.js';
import { SplicedMuxSession, type IncomingSplicedStream } from '../mux/spliced-session.js';
import type { Logger } from '../logger.js';
import { MuxSessionPool, type PooledSession } from './mux-sessions.js';
import { splicedPairResult, whyNotSpliced, type SplicedPairResult } from './spliced-mux.js';

export interface TransportForwarderOptions {
  listen: HostPort[];
  /** What is spoken on the listen addresses. */
  listenScheme: TransportScheme;
  to: HostPort;
  toScheme: TransportScheme;
  /** The certificate and key of a tls:// or mux+tls:// listener (PEM). */
  serverTls?: { cert: Buffer | string; key: Buffer | string };
  /** How a tls:// or mux+tls:// upstream is verified (none given: the system CAs). */
  clientTls?: ClientTlsOptions;
  /** Session options other than the role (maxWindow, maxStreams, keepalive). */
  mux?: Omit<MuxSessionOptions, 'role'>;
  /** 'splice': the streams of plain mux:// with a TCP other end move by splice() (Linux, the addon); default 'js'. */
  muxDataPath?: 'splice' | 'js';
  /** n:1: sessions kept up to the mux end (default 1). */
  muxSessions?: number;
  /** n:1: the longest wait between dials of a lost session, ms (default 30 s). */
  backoffMax?: number;
  /** ms an upstream connect (or, n:1, the wait for a session) may take; the client is reset after that. */
  connectTimeout?: number;
  /** ms with no byte either way before a pair is closed; 0 = never. */
  idleTimeout?: number;
  logger?: Logger;
}

/** A TLS client that has not finished its handshake by then is dropped. */
const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/** What a pair did, reported once when it ends (as the plain Forwarder's records). */
export interface TransportConnectionRecord {
  client: string;
  upstream: string;
  engine: 'js' | 'splice' | null;
  bytesUp: number;
  bytesDown: number;
  durationMs: number;
  reason: EndReason | 'connect-failed';
  code?: string;
}

export class TransportForwarder extends EventEmitter<{ connection: [TransportConnectionRecord] }> {
  readonly #o: TransportForwarderOptions;
  readonly #listeners: Listeners;
  readonly #pairs = new RunningTasks();
  /** 1:n: the sessions accepted and not yet closed. */
  readonly #accepted = new Set<PooledSession>();
  /** n:1: the sessions to the mux end. */
  readonly #pool: MuxSessionPool<PooledSession> | undefined;
  readonly #spliced: boolean;
  readonly #dialer: TlsDialer | undefined;
  readonly #upstreamName: string;
  #closing = false;

  constructor(options: TransportForwarderOptions) {
    super();
    this.#o = options;
    if (isTls(options.listenScheme) && !options.serverTls) throw new TypeError(`a ${options.listenScheme}:// listener needs serverTls (a certificate and its key)`);
    if (isMux(options.listenScheme) && isMux(options.toScheme)) throw new TypeError('mux on both ends: one side of the hop must be plain TCP or TLS');
    this.#spliced = options.muxDataPath === 'splice';
    const notSpliced = this.#spliced ? whyNotSpliced(options.listenScheme, options.toScheme, 'auto') : undefined;
    if (notSpliced) throw new TypeError(`the spliced mux data path cannot carry this hop: ${notSpliced}`);
    this.#upstreamName = formatTransportAddress({ ...options.to, scheme: options.toScheme });
    const dialer = new TlsDialer(options.to, isTls(options.toScheme) ? (options.clientTls ?? {}) : undefined, this.#upstreamName);
    if (isMux(options.toScheme)) {
      const mux = options.mux;
      this.#pool = new MuxSessionPool<PooledSession>({
        dial: (timeoutMs, signal) => dialer.dial(timeoutMs, signal),
        createSession: this.#spliced ? (connection) => new SplicedMuxSession(connection as net.Socket, { ...mux, role: 'client' }) : undefined,
        sessions: options.muxSessions ?? 1,
        connectTimeout: this.#connectTimeout,
        mux: options.mux,
        backoffMax: options.backoffMax,
        peer: this.#upstreamName,
        logger: options.logger,
      });
    } else {
      this.#dialer = dialer;
    }
    const onConnection = isMux(options.listenScheme) ? (socket: net.Socket) => this.#onSessionConnection(socket) : (socket: net.Socket) => this.#onClient(socket, remoteOf(socket));
    this.#listeners = new Listeners(onConnection, {
      pauseOnConnect: options.listenScheme === 'tcp',
      createServer: isTls(options.listenScheme) ? (handler) => this.#tlsServer(handler) : undefined,
      logger: options.logger,
    });
  }

  /** Pairs open now (n:1 and plain: clients; 1:n: streams). */
  get activeConnections(): number {
    return this.#pairs.size;
  }

  /** Mux sessions up now: n:1, those taking new streams; 1:n, those accepted and open. */
  get muxSessions(): number {
    return this.#pool ? this.#pool.sessionsUp : this.#accepted.size;
  }

  /** Binds the listen addresses, and (n:1) starts dialling the sessions. */
  async listen(): Promise<HostPort[]> {
    const bound = await this.#listeners.listen(this.#o.listen);
    this.#pool?.start();
    return bound;
  }

  /** Stops accepting; GoAway on every session; pairs get `graceMs` to finish, then are reset and every session closed. */
  async close(graceMs: number): Promise<void> {
    this.#closing = true;
    const stopped = this.#listeners.close();
    this.#pool?.goAway();
    for (const session of this.#accepted) void session.close();
    await this.#pairs.close(graceMs);
    await this.#pool?.destroy();
    for (const session of this.#accepted) session.destroy();
    await stopped;
  }

  get #connectTimeout(): number {
    return this.#o.connectTimeout ?? 10_000;
  }

  #tlsServer(onSecure: (socket: net.Socket) => void): net.Server {
    const { cert, key } = this.#o.serverTls!;
    // noDelay reaches the raw TCP sockets through net.Server (the TLS types omit it); allowHalfOpen keeps a client's FIN a FIN.
    const server = tls.createServer({ cert, key, allowHalfOpen: true, handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS, noDelay: true } as tls.TlsOptions, onSecure);
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) =>
      this.#o.logger?.debug({ client: remoteOf(socket), code: err.code, err: err.message }, 'TLS handshake failed'),
    );
    return server;
  }

  // ---- 1:n: mux sessions → a pair per stream ----

  #onSessionConnection(socket: net.Socket): void {
    if (this.#closing) return void socket.destroy();
    const from = remoteOf(socket);
    if (this.#spliced) return this.#onSplicedSession(socket, from);
    const session = createMuxSession(socket, { ...this.#o.mux, role: 'server' });
    this.#accepted.add(session);
    session.on('error', (err) => this.#o.logger?.warn({ client: from, err: err.message }, 'mux session failed'));
    session.once('close', () => this.#accepted.delete(session));
    session.on('stream', (stream) => this.#onClient(stream, `${from}#${stream.id}`));
  }

  #onSplicedSession(socket: net.Socket, from: string): void {
    let session: SplicedMuxSession;
    try {
      session = new SplicedMuxSession(socket, { ...this.#o.mux, role: 'server' });
    } catch (err) {
      this.#o.logger?.warn({ client: from, err: (err as Error).message }, 'mux session failed to start');
      return void socket.destroy();
    }
    this.#accepted.add(session);
    session.on('error', (err) => this.#o.logger?.warn({ client: from, err: err.message }, 'mux session failed'));
    session.once('close', () => this.#accepted.delete(session));
    session.on('stream', (incoming) => this.#pairs.run(this.#acceptSpliced(incoming, `${from}#${incoming.id}`)));
  }

  // 1:n spliced: the upstream is dialled, then handed to the stream.
  async #acceptSpliced(incoming: IncomingSplicedStream, name: string): Promise<void> {
    const started = performance.now();
    let upstream: net.Socket;
    try {
      upstream = await observed(() => this.#dialer!.dial(this.#connectTimeout, this.#pairs.signal));
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      this.#o.logger?.warn({ client: name, to: this.#upstreamName, code: e.code, err: e.message }, 'no upstream: client reset');
      incoming.refuse();
      this.#report(name, started, undefined, e.code ?? 'EIO');
      return;
    }
    upstream.on('error', () => {});
    const result = splicedPairResult(await incoming.accept(upstream, this.#pairs.signal), false);
    this.#report(name, started, result, result.code);
  }

  // n:1 spliced: the client's socket becomes a stream of the least busy session.
  async #carrySpliced(client: net.Socket, name: string): Promise<void> {
    const started = performance.now();
    let result: SplicedPairResult;
    try {
      const session = (await this.#pool!.session(this.#connectTimeout)) as SplicedMuxSession;
      result = splicedPairResult(await session.openStream(client, this.#pairs.signal), true);
    } catch (err) {
      return this.#noUpstream(client, name, started, err as NodeJS.ErrnoException);
    }
    this.#report(name, started, result, result.code);
  }

  // ---- every pair ----

  #onClient(client: Duplex, name: string): void {
    client.on('error', () => {});
    if (this.#spliced && this.#pool) return void this.#pairs.run(this.#carrySpliced(client as net.Socket, name));
    this.#pairs.run(this.#carry(client, name));
  }

  async #carry(client: Duplex, name: string): Promise<void> {
    const started = performance.now();
    let upstream: Duplex;
    try {
      upstream = await this.#openUpstream();
    } catch (err) {
      return this.#noUpstream(client, name, started, err as NodeJS.ErrnoException);
    }
    const result = await forward(client, upstream, { engine: 'js', signal: this.#pairs.signal, ...(this.#o.idleTimeout ? { idleTimeout: this.#o.idleTimeout } : {}) }).catch(
      (err: Error) => {
        this.#o.logger?.warn({ client: name, err: err.message }, 'pair failed');
        client.destroy();
        upstream.destroy();
        return undefined;
      },
    );
    if (result) this.#report(name, started, result, result.error?.code);
  }

  /** No upstream for this client: a TCP client sees a reset, as from a refused connect; a stream gets RST. */
  #noUpstream(client: Duplex, name: string, started: number, e: NodeJS.ErrnoException): void {
    this.#o.logger?.warn({ client: name, to: this.#upstreamName, code: e.code, err: e.message }, 'no upstream: client reset');
    resetSocket(client);
    this.#report(name, started, undefined, e.code ?? 'EIO');
  }

  #openUpstream(): Promise<Duplex> {
    if (this.#pool) return this.#pool.session(this.#connectTimeout).then((session) => (session as MuxSession).openStream());
    return observed(() => this.#dialer!.dial(this.#connectTimeout, this.#pairs.signal));
  }

  #report(client: string, started: number, result: Pick<ForwardResult, 'engine' | 'bytesAtoB' | 'bytesBtoA' | 'reason'> | undefined, code: string | undefined): void {
    const logger = this.#o.logger;
    const logs = logger !== undefined && (typeof logger.isLevelEnabled !== 'function' || logger.isLevelEnabled('info'));
    if (!logs && this.listenerCount('connection') === 0) return;
    const record: TransportConnectionRecord = {
      client,
      upstream: this.#upstreamName,
      engine: result ? result.engine : null,
      bytesUp: result?.bytesAtoB ?? 0,
      bytesDown: result?.bytesBtoA ?? 0,
      durationMs: Math.round((performance.now() - started) * 1000) / 1000,
      reason: result?.reason ?? 'connect-failed',
    };
    if (code !== undefined) record.code = code;
    logger?.info(record, 'connection closed');
    this.emit('connection', record);
  }
}

function remoteOf(socket: net.Socket): string {
  return formatHostPort({ host: socket.remoteAddress ?? '?', port: socket.remotePort ?? 0 });
}
