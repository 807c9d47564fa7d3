// A session's public clients matched to its data connections. A public client takes an idle data
// connection from the pool, or waits (up to dataTimeout) while the client is asked for one; each
// match is a stream: START on the data connection, then forward(), then one record.
import type net from 'node:net';
import { RunningTasks } from '../net/drain.js';
import { formatHostPort } from '../net/host-port.js';
import { forward } from '../engine/forward.js';
import { resetSocket } from '../engine/splice/takeover.js';
import { DATA_ERROR, dataErrorName, dataMac, encodeDataError, encodeStart, publicAddressOf, safeEqual, type ConnectionStart } from './protocol.js';
import { endWith, round, type IdleData, type PublicTunnel, type ServerContext, type Session, type Waiting } from './server-context.js';
import type { ServerConnectionRecord } from './server-events.js';

/** Requests for data connections outstanding at once, per session. */
const MAX_OUTSTANDING = 4096;

export class Streams {
  readonly #ctx: ServerContext;
  readonly #findSession: (idText: string) => Session | undefined;
  readonly #streams = new RunningTasks();
  #nextStream = 1;

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

  onPublic(tunnel: PublicTunnel, socket: net.Socket): void {
    socket.on('error', () => {});
    const session = tunnel.session;
    const waiting: Waiting = { socket, tunnel, client: publicAddressOf(socket.remoteAddress, socket.remotePort), accepted: performance.now() };
    if (session.closed || tunnel.closed) return this.dropPublic(waiting, 'session-closed');
    if (this.#ctx.closing) return this.dropPublic(waiting, 'shutdown');
    const idle = session.idle.shift();
    if (idle) {
      idle.release();
      this.#startStream(waiting, idle.socket);
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

  /** A public client that will never get a data connection is reset, as a dead service would reset it. */
  dropPublic(waiting: Waiting, reason: 'no-data-connection' | 'session-closed' | 'limit' | 'shutdown'): void {
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
  want(session: Session): void {
    if (session.closed) return;
    let need = session.waiting.length + session.pool - session.idle.length - session.requests.size;
    while (need-- > 0 && session.requests.size < MAX_OUTSTANDING) {
      const id = session.nextRequest++;
      session.requests.set(
        id,
        setTimeout(() => {
          session.requests.delete(id);
          this.want(session);
        }, this.#ctx.o.dataTimeout),
      );
      session.channel.send({ type: 'connect', id });
    }
  }

  /** A data connection past its preamble: authenticated against its session and request, then matched or pooled. */
  serveData(socket: net.Socket, remote: string, start: Extract<ConnectionStart, { kind: 'data' }>): void {
    const refuse = (code: number, message: string, clientId?: string) => {
      endWith(socket, encodeDataError(code, message));
      this.#ctx.reject({ remote, kind: 'data', code: dataErrorName(code), message, clientId });
    };
    if (this.#ctx.closing) return refuse(DATA_ERROR.SHUTTING_DOWN, 'the server is shutting down');
    const session = this.#findSession(start.sessionId.toString('hex'));
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
    this.want(session);
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

  #startStream(waiting: Waiting, data: net.Socket): void {
    clearTimeout(waiting.timer);
    const o = this.#ctx.o;
    const streamId = this.#nextStream++;
    const started = performance.now();
    const base = this.#recordBase(waiting);
    data.write(encodeStart(streamId, waiting.tunnel.name, waiting.client));
    this.#ctx.events.emit('connectionOpen', { tunnel: base.tunnel, public: base.public, client: base.client, clientId: base.clientId, streamId });
    const stream = forward(waiting.socket, data, {
      engine: o.engine,
      idleTimeout: o.idleTimeout,
      signal: this.#streams.signal,
      spliceEngine: o.spliceEngine,
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
      );
    this.#streams.run(stream);
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
    this.#ctx.o.logger?.info(record, 'connection closed');
    this.#ctx.events.emit('connectionClose', record);
  }
}
