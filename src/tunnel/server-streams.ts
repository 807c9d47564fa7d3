// A session's public clients matched to its data connections. A public client takes an idle data
// connection from the pool (or a new stream on the session's mux connection), or waits (up to
// dataTimeout) while the client is asked for one; each match is a stream: START on the data
// connection or mux stream, then forward(), then one record. On the native data path
// (server-native.ts) the public client and the data connection are the acceptor's, and the engine
// adopts their fds.
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { RunningTasks } from '../net/drain.js';
import { defaultSpliceEngine, forward, type ForwardOptions } from '../engine/forward.js';
import type { ForwardResult } from '../engine/contract.js';
import { DATA_ERROR, dataErrorName, dataMac, encodeDataError, encodeStart, MAX_CONNECT_BATCH, publicAddressOf, safeEqual, type ConnectionStart, type PublicAddress } from './protocol.js';
import { destroyConn, endWith, ignore, isNative, logsInfo, round, type Conn, type IdleData, type NativeConn, type PublicTunnel, type Request, type ServerContext, type Session, type Waiting } from './server-context.js';
import { nodeSocketOf, spliceStream, watchIdle } from './server-native.js';
import type { ServerConnectionRecord } from './server-events.js';
import { acceptMux, openMuxStream } from './server-mux.js';

/** The start of a data or mux connection: preamble and hello. */
type HelloStart = Extract<ConnectionStart, { kind: 'data' | 'mux' }>;

/** Requests for data connections outstanding at once, per session. */
const MAX_OUTSTANDING = 4096;

export class Streams {
  readonly #ctx: ServerContext;
  readonly #findSession: (idText: string) => Session | undefined;
  readonly #streams = new RunningTasks();
  #nextStream = 1;
  #forward: ForwardOptions | undefined;
  #forwardMux: ForwardOptions | undefined;

  constructor(ctx: ServerContext, findSession: (idText: string) => Session | undefined) {
    this.#ctx = ctx;
    this.#findSession = findSession;
  }

  get size(): number {
    return this.#streams.size;
  }

  /** Gives the streams `graceMs` to finish, then aborts them; resolves once all have ended. */
  async drain(graceMs: number): Promise<void> {
    await this.#streams.close(graceMs);
  }

  onPublic(tunnel: PublicTunnel, socket: Conn): void {
    if (!isNative(socket)) socket.on('error', ignore);
    const session = tunnel.session;
    const waiting: Waiting = { socket, tunnel, accepted: performance.now(), timer: undefined };
    if (session.closed || tunnel.closed) return this.dropPublic(waiting, 'session-closed');
    if (this.#ctx.closing) return this.dropPublic(waiting, 'shutdown');
    const data = this.#takeData(session);
    if (data === 'limit') return this.dropPublic(waiting, 'limit');
    if (data) {
      this.#startStream(waiting, data);
    } else {
      if (session.waiting.length >= this.#ctx.o.maxWaiting) return this.dropPublic(waiting, 'limit');
      waiting.timer = setTimeout(() => {
        const i = session.waiting.indexOf(waiting);
        if (i >= 0) session.waiting.splice(i, 1);
        this.dropPublic(waiting, 'no-data-connection');
      }, this.#ctx.o.dataTimeout);
      session.waiting.push(waiting);
    }
    this.want(session);
  }

  /** A data connection from the pool, or a stream on the mux connection; undefined when neither is there now. */
  #takeData(session: Session): Conn | Duplex | 'limit' | undefined {
    if (session.mux) return openMuxStream(session.mux);
    const idle = session.idle.shift();
    if (!idle) return undefined;
    idle.release();
    return idle.socket;
  }

  /** A public client that will never get a data connection is reset, as a dead service would reset it. */
  dropPublic(waiting: Waiting, reason: 'no-data-connection' | 'session-closed' | 'limit' | 'shutdown'): void {
    clearTimeout(waiting.timer);
    // Its address is read before the reset: a closed socket no longer has one.
    const base = this.#recording() ? this.#recordBase(waiting, publicAddressOf(waiting.socket.remoteAddress, waiting.socket.remotePort)) : undefined;
    destroyConn(waiting.socket, true);
    if (!base) return;
    const ms = round(performance.now() - waiting.accepted);
    this.#report({ ...base, streamId: null, engine: null, bytesUp: 0, bytesDown: 0, waitMs: ms, durationMs: ms, reason });
  }

  /**
   * Asks the client for as many data connections as the waiting public clients and the pool need.
   * A client that reads `count` is asked for them in one message; while nobody waits and the pool
   * still holds half its connections, the asking waits, so that a busy pool is refilled a half at
   * a time (a quarter of the messages for a pool of 8) instead of one message per connection.
   */
  want(session: Session): void {
    if (session.closed) return;
    if (session.mux) {
      if (!session.mux.session && session.mux.request === 0) this.#request(session, 1, true);
      return;
    }
    let need = Math.min(session.waiting.length + session.pool - session.idle.length - session.requests.size, MAX_OUTSTANDING - session.requests.size);
    if (need <= 0) return;
    if (!session.batch) {
      while (need-- > 0) this.#request(session, 1);
      return;
    }
    if (session.waiting.length === 0 && need < Math.ceil(session.pool / 2)) return;
    while (need > 0) {
      const count = Math.min(need, MAX_CONNECT_BATCH);
      this.#request(session, count);
      need -= count;
    }
  }

  /**
   * One `connect` for `count` data connections, or for the mux connection: ids from nextRequest
   * on, expiring together after dataTimeout.
   */
  #request(session: Session, count: number, mux = false): void {
    const first = session.nextRequest;
    session.nextRequest += count;
    const request: Request = {
      left: count,
      timer: setTimeout(() => {
        for (let id = first; id < first + count; id++) if (session.requests.get(id) === request) session.requests.delete(id);
        if (session.mux?.request === first) session.mux.request = 0;
        this.want(session);
      }, this.#ctx.o.dataTimeout),
      ...(mux ? { mux: true as const } : {}),
    };
    for (let id = first; id < first + count; id++) session.requests.set(id, request);
    if (mux) {
      session.mux!.request = first;
      session.channel.send({ type: 'connect', id: first, mux: true });
    } else session.channel.send(count === 1 ? { type: 'connect', id: first } : { type: 'connect', id: first, count });
  }

  /**
   * A data or mux connection past its preamble and hello, checked against its session and request:
   * the session, or undefined when the connection was refused (answered ERROR, and logged). `rest`:
   * on the native path, the bytes read past the hello.
   */
  #authenticate(socket: Conn, remote: () => string, start: HelloStart, rest?: Buffer): Session | undefined {
    const refuse = (code: number, message: string, clientId?: string) => {
      endWith(socket, encodeDataError(code, message));
      this.#ctx.reject({ remote: remote(), kind: start.kind, code: dataErrorName(code), message, clientId });
      return undefined;
    };
    if (this.#ctx.closing) return refuse(DATA_ERROR.SHUTTING_DOWN, 'the server is shutting down');
    const session = this.#findSession(start.sessionId.toString('hex'));
    if (!session || session.closed) return refuse(DATA_ERROR.UNKNOWN_SESSION, 'no such session (it may have ended)');
    if (!safeEqual(start.mac, dataMac(session.key, session.id, start.requestId, start.kind))) {
      return refuse(DATA_ERROR.BAD_MAC, `the ${start.kind} connection did not authenticate`, session.clientId);
    }
    const request = session.requests.get(start.requestId);
    // A request is for one kind: a data connection cannot take the mux connection's, nor the reverse.
    if (request === undefined || (request.mux === true) !== (start.kind === 'mux')) {
      return refuse(DATA_ERROR.UNKNOWN_REQUEST, `request ${start.requestId} is unknown, used, expired or not for a ${start.kind} connection`, session.clientId);
    }
    session.requests.delete(start.requestId);
    if (--request.left === 0) clearTimeout(request.timer);
    if (session.mux?.request === start.requestId) session.mux.request = 0;
    // The client sends nothing after its hello until the reply has said what comes next.
    if ((isNative(socket) ? (rest?.length ?? 0) : socket.readableLength) > 0) {
      refuse(DATA_ERROR.PROTOCOL, `bytes after the ${start.kind} hello, before the reply`, session.clientId);
      // Its request is used up: another connection is asked for (the mux connection, or one for a waiting public client).
      this.want(session);
      return undefined;
    }
    return session;
  }

  /** A data connection past its preamble: authenticated against its session and request, then matched or pooled. */
  serveData(socket: Conn, remote: () => string, start: HelloStart, rest?: Buffer): void {
    const session = this.#authenticate(socket, remote, start, rest);
    if (!session) return;
    const refuse = (code: number, message: string) => {
      endWith(socket, encodeDataError(code, message));
      this.#ctx.reject({ remote: remote(), kind: 'data', code: dataErrorName(code), message, clientId: session.clientId });
    };
    const waiting = session.waiting.shift();
    if (waiting) this.#startStream(waiting, socket);
    else if (session.idle.length < Math.max(session.pool, 8)) this.#park(session, socket);
    else refuse(DATA_ERROR.SURPLUS, 'no stream needs this data connection');
    this.want(session);
  }

  /**
   * A mux connection past its preamble: authenticated like a data connection, then the session's
   * yamux session; the public clients waiting get their streams at once. When it ends, its streams
   * fail (their public clients are reset) and the client is asked for another.
   */
  serveMux(socket: net.Socket, remote: () => string, start: HelloStart): void {
    const session = this.#authenticate(socket, remote, start);
    if (!session) return;
    const mux = session.mux;
    if (!mux || mux.session) {
      endWith(socket, encodeDataError(DATA_ERROR.SURPLUS, 'this session has its mux connection'));
      this.#ctx.reject({ remote: remote(), kind: 'mux', code: 'surplus', message: 'this session has its mux connection', clientId: session.clientId });
      return;
    }
    acceptMux(this.#ctx, session as Session & { mux: typeof mux }, socket, remote(), () => this.want(session));
    while (session.waiting.length > 0) {
      const stream = openMuxStream(mux);
      if (stream === undefined) break;
      const waiting = session.waiting.shift()!;
      if (stream === 'limit') this.dropPublic(waiting, 'limit');
      else this.#startStream(waiting, stream);
    }
  }

  /** Keeps an authenticated data connection until a public client needs it (the pool). */
  #park(session: Session, socket: Conn): void {
    if (isNative(socket)) return this.#parkNative(session, socket);
    const onData = () => {
      remove();
      endWith(socket, encodeDataError(DATA_ERROR.PROTOCOL, 'bytes on an idle data connection'));
    };
    const onGone = () => {
      remove();
      socket.destroy();
      this.want(session);
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

  #parkNative(session: Session, conn: NativeConn): void {
    const remove = () => {
      const i = session.idle.indexOf(entry);
      if (i >= 0) session.idle.splice(i, 1);
    };
    const entry: IdleData = {
      socket: conn,
      release: watchIdle(
        conn,
        () => {
          remove();
          endWith(conn, encodeDataError(DATA_ERROR.PROTOCOL, 'bytes on an idle data connection'));
        },
        () => {
          remove();
          conn.acceptor.destroy(conn.id);
          this.want(session);
        },
      ),
    };
    session.idle.push(entry);
  }

  #startStream(waiting: Waiting, data: Conn | Duplex): void {
    if (waiting.timer) clearTimeout(waiting.timer);
    const streamId = this.#nextStream++;
    const started = performance.now();
    const client = publicAddressOf(waiting.socket.remoteAddress, waiting.socket.remotePort);
    const start = encodeStart(streamId, waiting.tunnel.name, client);
    const events = this.#ctx.events;
    if (events.listenerCount('connectionOpen') > 0) {
      const base = this.#recordBase(waiting, client);
      events.emit('connectionOpen', { tunnel: base.tunnel, public: base.public, client: base.client, clientId: base.clientId, streamId });
    }
    const stream = this.#carry(waiting.socket, data, start, waiting.tunnel.session.mux !== undefined).then(
      (result) => {
        if (!this.#recording()) return;
        this.#report({
          ...this.#recordBase(waiting, client),
          streamId,
          engine: result.engine,
          bytesUp: result.bytesAtoB,
          bytesDown: result.bytesBtoA,
          waitMs: round(started - waiting.accepted),
          durationMs: round(performance.now() - waiting.accepted),
          reason: result.reason,
          ...(result.error ? { code: result.error.code } : {}),
        });
      },
      (err: NodeJS.ErrnoException) => {
        destroyConn(waiting.socket, true);
        if ('acceptor' in data) destroyConn(data);
        else data.destroy();
        if (!this.#recording()) return;
        this.#report({
          ...this.#recordBase(waiting, client),
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
    );
    this.#streams.run(stream);
  }

  /**
   * START, then the pair: adopted by the engine when both are the acceptor's, else forward(). A mux
   * stream is bytes in user space: its public client goes to Node and the JS engine carries it.
   */
  #carry(publicConn: Conn, data: Conn | Duplex, start: Buffer, mux: boolean): Promise<ForwardResult> {
    if (mux) {
      const stream = data as Duplex;
      stream.write(start);
      return forward(isNative(publicConn) ? nodeSocketOf(publicConn, Buffer.alloc(0)) : publicConn, stream, this.#forwardOptions(true));
    }
    const conn = data as Conn;
    if (isNative(publicConn) && isNative(conn)) {
      const o = this.#ctx.o;
      return spliceStream(publicConn, conn, start, o.spliceEngine ?? defaultSpliceEngine(), { idleTimeout: o.idleTimeout, signal: this.#streams.signal });
    }
    if (isNative(publicConn) || isNative(conn)) return Promise.reject(Object.assign(new Error('a stream has one native and one Node connection'), { code: 'EINVAL' }));
    conn.write(start);
    return forward(publicConn, conn, this.#forwardOptions(false));
  }

  /** The same for every stream, so made once; a mux stream is bytes in user space, so the JS engine's. */
  #forwardOptions(mux: boolean): ForwardOptions {
    const o = this.#ctx.o;
    if (mux) return (this.#forwardMux ??= { engine: 'js', idleTimeout: o.idleTimeout, signal: this.#streams.signal });
    return (this.#forward ??= { engine: o.engine, idleTimeout: o.idleTimeout, signal: this.#streams.signal, spliceEngine: o.spliceEngine });
  }

  /** Whether a stream's record goes anywhere: built only then. */
  #recording(): boolean {
    return this.#ctx.events.listenerCount('connectionClose') > 0 || logsInfo(this.#ctx.o.logger);
  }

  #recordBase(w: Waiting, client: PublicAddress | null) {
    return { tunnel: w.tunnel.name, public: w.tunnel.address, client: client ? addressText(client) : '?', clientId: w.tunnel.session.clientId };
  }

  #report(record: ServerConnectionRecord): void {
    this.#ctx.o.logger?.info(record, 'connection closed');
    this.#ctx.events.emit('connectionClose', record);
  }
}

/** A public client's address as records print it; `host` is an IP (publicAddressOf), so a colon means IPv6. */
function addressText({ host, port }: PublicAddress): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
