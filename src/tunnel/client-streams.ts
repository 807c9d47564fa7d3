// The client's data connections: one dialled for each `connect` the server sends, authenticated
// with the session key, then waiting for START; START names the tunnel, and the data connection
// becomes one stream to the local service with forward(), reported once when it ends.
// With the splice engine and no TLS, both connections are the addon's (Acceptor): dialled,
// authenticated and read with no net.Socket, then adopted by the engine whole. A stream of the mux
// connection (client-mux.ts) starts with the same START and is carried the same way, by forward().
import type { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import fs from 'node:fs';
import type net from 'node:net';
import { formatHostPort, type HostPort } from '../net/host-port.js';
import { connectTcp } from '../net/connect.js';
import { forward, type ForwardOptions } from '../engine/forward.js';
import { resetSocket } from '../engine/splice/takeover.js';
import type { ControlChannel } from './channel.js';
import type { DialError } from '../net/connect.js';
import { RunningTasks } from '../net/drain.js';
import type { ServerDialer } from './server-dialer.js';
import { readHeader, type HeaderError } from './header.js';
import { readNativeHeader } from './native-header.js';
import { Acceptor, nativeAccept, type NativeUpstream } from '../engine/splice/acceptor.js';
import { dialWith } from '../net/dial.js';
import { defaultSpliceEngine } from '../engine/forward.js';
import type { SpliceEngine } from '../engine/splice/engine.js';
import type { ForwardResult } from '../engine/contract.js';
import type { ResolvedClientOptions } from './options.js';
import { dataMac, encodeDataHello, parseDataReply } from './protocol.js';
import type { ClientConnectionRecord, TunnelClientEvents } from './client-events.js';

/** What a data connection needs of its session. */
export interface DataSession {
  id: Buffer;
  key: Buffer;
  channel: ControlChannel;
  /** Aborted when the session ends: data connections still waiting for START go with it. */
  abort: AbortController;
}

/** What a stream needs of a tunnel: its service. */
interface StreamTunnel {
  spec: { local: HostPort };
  status: { local: string };
}

const round = (ms: number) => Math.round(ms * 1000) / 1000;
/** For the 'error' events of a stream whose end forward() reports. */
function ignore(): void {}

export class DataConnections {
  readonly #o: ResolvedClientOptions;
  readonly #dialer: ServerDialer;
  readonly #tunnels: ReadonlyMap<string, StreamTunnel>;
  readonly #events: EventEmitter<TunnelClientEvents>;
  readonly #streams = new RunningTasks();
  #forward: ForwardOptions | undefined;
  /** The addon's connections, when streams are carried on it (see #native); made at the first. */
  #acceptor: Acceptor | undefined;
  readonly #nativePath: boolean;

  constructor(o: ResolvedClientOptions, dialer: ServerDialer, tunnels: ReadonlyMap<string, StreamTunnel>, events: EventEmitter<TunnelClientEvents>) {
    this.#o = o;
    this.#dialer = dialer;
    this.#tunnels = tunnels;
    this.#events = events;
    // Throws (ERR_SPLICE_UNAVAILABLE) when `native` was asked for and cannot be had.
    this.#nativePath = !dialer.tls && nativeAccept(o.dataPath, o.engine);
  }

  /** Streams running. */
  get size(): number {
    return this.#streams.size;
  }

  /** Gives the streams `graceMs` to finish, then aborts them; resolves once all have ended. */
  async drain(graceMs: number): Promise<void> {
    await this.#streams.close(graceMs);
    this.#acceptor?.close();
    this.#acceptor = undefined;
  }

  /**
   * Where streams run: the addon's connections and the engine's adopt() when the splice engine
   * carries them and the server is reached without TLS; else net.Socket and forward().
   */
  #native(): { acceptor: Acceptor; engine: SpliceEngine } | undefined {
    const o = this.#o;
    if (!this.#nativePath) return undefined;
    this.#acceptor ??= new Acceptor({ onConnection: (id, _host, _port, acceptor) => acceptor.destroy(id), logger: o.logger });
    return { acceptor: this.#acceptor, engine: o.spliceEngine ?? defaultSpliceEngine() };
  }

  /** One data connection for request `id`: dial, authenticate, wait for START, then carry one stream. */
  async open(session: DataSession, id: number): Promise<void> {
    const native = this.#native();
    if (native) return this.#openNative(session, id, native.acceptor, native.engine);
    const signal = session.abort.signal;
    let socket: net.Socket;
    try {
      socket = await this.#dialer.dial(this.#o.connectTimeout, signal);
    } catch (err) {
      return this.dialFailed(session, id, err);
    }
    socket.write(encodeDataHello(session.id, id, dataMac(session.key, session.id, id)));
    let reply;
    try {
      reply = await readHeader(socket, parseDataReply, { signal, maxBytes: 1024 });
    } catch (err) {
      socket.destroy();
      if (!signal.aborted) this.#o.logger?.debug({ request: id, code: (err as HeaderError).code }, 'data connection closed before START');
      return;
    }
    if (reply.status === 'error' || reply.type === 'error') {
      socket.destroy();
      return this.#refused(id, reply);
    }
    this.#serveStream(socket, reply.streamId, reply.tunnel, reply.client);
  }

  /** A stream the server opened on the mux connection: START first, then as a data connection's. */
  serveMuxStream(stream: Duplex): void {
    stream.on('error', ignore);
    // readHeader reads any Duplex: a mux stream pauses, resumes and unshifts as a socket does.
    readHeader(stream as net.Socket, parseDataReply, { maxBytes: 1024, timeoutMs: this.#o.handshakeTimeout }).then(
      (reply) => {
        if (reply.status === 'error' || reply.type === 'error') {
          stream.destroy();
          this.#o.logger?.warn({ code: reply.status === 'error' ? reply.code : reply.name, message: reply.message }, 'bad START on a mux stream');
          return;
        }
        this.#serveStream(stream, reply.streamId, reply.tunnel, reply.client);
      },
      (err: HeaderError) => {
        stream.destroy();
        this.#o.logger?.debug({ code: err.code }, 'mux stream closed before START');
      },
    );
  }

  #serveStream(data: Duplex, streamId: number, name: string, from: HostPort | null): void {
    this.#runStream(streamId, name, from, () => resetSocket(data), async (service, signal) => {
      let local: net.Socket;
      try {
        local = await connectTcp(service, this.#o.localConnectTimeout, signal);
      } catch (err) {
        throw new StreamFailure('connect-failed', err);
      }
      try {
        return await forward(data, local, this.#forwardOptions());
      } catch (err) {
        local.destroy();
        throw new StreamFailure('error', err);
      }
    });
  }

  /**
   * One stream after START: the tunnel's service reached and the stream carried by `carry` (which
   * throws a StreamFailure, `reset` then resetting the public client), reported once it ends.
   */
  #runStream(streamId: number, name: string, from: HostPort | null, reset: () => void, carry: (service: HostPort, signal: AbortSignal) => Promise<ForwardResult>): void {
    const started = performance.now();
    const tunnel = this.#tunnels.get(name);
    // Made only for a record or an event that someone takes.
    const base = () => ({ tunnel: name, local: tunnel?.status.local ?? '?', client: from ? formatHostPort(from) : '?', streamId });
    const fail = (reason: StreamFailure['reason'] | 'unknown-tunnel', code: string) => {
      // The public client sees a reset, as it would from the service itself.
      reset();
      if (this.#recording()) this.#report({ ...base(), engine: null, bytesUp: 0, bytesDown: 0, durationMs: round(performance.now() - started), reason, code });
    };
    if (!tunnel) {
      this.#o.logger?.error({ tunnel: name, streamId }, 'unknown tunnel in START');
      return fail('unknown-tunnel', 'ENOENT');
    }
    if (this.#events.listenerCount('connectionOpen') > 0) {
      const { client } = base();
      this.#events.emit('connectionOpen', { tunnel: name, client, streamId });
    }
    this.#streams.run((async () => {
      let result: ForwardResult;
      try {
        result = await carry(tunnel.spec.local, this.#streams.signal);
      } catch (err) {
        if (err instanceof StreamFailure) return fail(err.reason, err.code);
        return fail('error', (err as NodeJS.ErrnoException).code ?? 'EIO');
      }
      if (!this.#recording()) return;
      this.#report({
        ...base(),
        engine: result.engine,
        bytesUp: result.bytesAtoB,
        bytesDown: result.bytesBtoA,
        durationMs: round(performance.now() - started),
        reason: result.reason,
        ...(result.error ? { code: result.error.code } : {}),
      });
    })());
  }

  async #openNative(session: DataSession, id: number, acceptor: Acceptor, engine: SpliceEngine): Promise<void> {
    const signal = session.abort.signal;
    const server = this.#dialer.server;
    let data: NativeUpstream;
    try {
      data = await dialWith(acceptor.connector, server.host, server.port, { timeout: this.#o.connectTimeout, signal, notUpstream: true });
    } catch (err) {
      return this.dialFailed(session, id, err);
    }
    const written = acceptor.write(data.id, encodeDataHello(session.id, id, dataMac(session.key, session.id, id)));
    if (typeof written === 'string') {
      acceptor.destroy(data.id);
      this.#o.logger?.debug({ request: id, code: written }, 'data connection closed before START');
      return;
    }
    let reply;
    let rest: Buffer;
    try {
      ({ header: reply, rest } = await readNativeHeader(acceptor, data.id, parseDataReply, { signal, maxBytes: 1024 }));
    } catch (err) {
      if (!signal.aborted) this.#o.logger?.debug({ request: id, code: (err as HeaderError).code }, 'data connection closed before START');
      return;
    }
    if (reply.status === 'error' || reply.type === 'error') {
      acceptor.destroy(data.id);
      return this.#refused(id, reply);
    }
    this.#serveNativeStream(acceptor, engine, data.id, rest, reply.streamId, reply.tunnel, reply.client);
  }

  #serveNativeStream(acceptor: Acceptor, engine: SpliceEngine, dataId: number, rest: Buffer, streamId: number, name: string, from: HostPort | null): void {
    this.#runStream(streamId, name, from, () => acceptor.destroy(dataId, true), async (service, signal) => {
      let local: NativeUpstream;
      try {
        local = await dialWith(acceptor.connector, service.host, service.port, { timeout: this.#o.localConnectTimeout, signal });
      } catch (err) {
        throw new StreamFailure('connect-failed', err);
      }
      const dataEnd = acceptor.release(dataId);
      const localEnd = acceptor.release(local.id);
      if (!dataEnd || !localEnd) {
        // The public side went away while the service was dialled.
        if (dataEnd) fs.closeSync(dataEnd.fd);
        if (localEnd) fs.closeSync(localEnd.fd);
        throw new StreamFailure('error', { code: 'ECONNRESET' });
      }
      try {
        // What came after START goes to the service first; the hello is written (the reply proves it).
        return await engine.adopt(dataEnd.fd, localEnd.fd, rest.length > 0 ? rest : null, null, { idleTimeout: this.#o.idleTimeout, signal });
      } catch (err) {
        throw new StreamFailure('error', err);
      }
    });
  }

  /** The data (or mux) connection could not be made: the server hears it (unless the session is over). */
  dialFailed(session: DataSession, id: number, err: unknown): void {
    if (session.abort.signal.aborted) return;
    const code = (err as DialError).code ?? 'EIO';
    this.#o.logger?.warn({ request: id, code, message: (err as Error).message }, 'data connection failed');
    session.channel.send({ type: 'connect-failed', id, code: code.slice(0, 64) });
  }

  /** A reply that is no START: the server's refusal, or bytes that are no reply. */
  #refused(id: number, reply: Exclude<ReturnType<typeof parseDataReply>, { status: 'incomplete' } | { status: 'ok'; type: 'start' }>): void {
    if (reply.status === 'error') this.#o.logger?.warn({ request: id, code: reply.code, message: reply.message }, 'bad reply on a data connection');
    else this.#o.logger?.warn({ request: id, code: reply.name, message: reply.message }, 'data connection refused');
  }

  /** The same for every stream, so made once. */
  #forwardOptions(): ForwardOptions {
    const o = this.#o;
    return (this.#forward ??= { engine: o.engine, idleTimeout: o.idleTimeout, signal: this.#streams.signal, spliceEngine: o.spliceEngine });
  }

  /** Whether a stream's record goes anywhere: built only then. */
  #recording(): boolean {
    const logger = this.#o.logger;
    return this.#events.listenerCount('connectionClose') > 0 || (logger !== undefined && (typeof logger.isLevelEnabled !== 'function' || logger.isLevelEnabled('info')));
  }

  #report(record: ClientConnectionRecord): void {
    this.#o.logger?.info(record, 'connection closed');
    this.#events.emit('connectionClose', record);
  }
}

/** Why a stream could not be carried: its service refused (connect-failed), or anything else. */
class StreamFailure extends Error {
  readonly code: string;
  constructor(
    readonly reason: 'connect-failed' | 'error',
    cause: unknown,
  ) {
    const code = (cause as NodeJS.ErrnoException | undefined)?.code ?? 'EIO';
    super(code);
    this.code = code;
  }
}
