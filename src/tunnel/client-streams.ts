// The client's data connections: one dialled for each `connect` the server sends, authenticated
// with the session key, then waiting for START; START names the tunnel, and the data connection
// becomes one stream to the local service with forward(), reported once when it ends.
import type { EventEmitter } from 'node:events';
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

export class DataConnections {
  readonly #o: ResolvedClientOptions;
  readonly #dialer: ServerDialer;
  readonly #tunnels: ReadonlyMap<string, StreamTunnel>;
  readonly #events: EventEmitter<TunnelClientEvents>;
  readonly #streams = new RunningTasks();
  #forward: ForwardOptions | undefined;

  constructor(o: ResolvedClientOptions, dialer: ServerDialer, tunnels: ReadonlyMap<string, StreamTunnel>, events: EventEmitter<TunnelClientEvents>) {
    this.#o = o;
    this.#dialer = dialer;
    this.#tunnels = tunnels;
    this.#events = events;
  }

  /** Streams running. */
  get size(): number {
    return this.#streams.size;
  }

  /** Gives the streams `graceMs` to finish, then aborts them; resolves once all have ended. */
  async drain(graceMs: number): Promise<void> {
    await this.#streams.close(graceMs);
  }

  /** One data connection for request `id`: dial, authenticate, wait for START, then carry one stream. */
  async open(session: DataSession, id: number): Promise<void> {
    const signal = session.abort.signal;
    let socket: net.Socket;
    try {
      socket = await this.#dialer.dial(this.#o.connectTimeout, signal);
    } catch (err) {
      if (signal.aborted) return;
      const code = (err as DialError).code ?? 'EIO';
      this.#o.logger?.warn({ request: id, code, message: (err as Error).message }, 'data connection failed');
      session.channel.send({ type: 'connect-failed', id, code: code.slice(0, 64) });
      return;
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
    if (reply.status === 'error') {
      socket.destroy();
      this.#o.logger?.warn({ request: id, code: reply.code, message: reply.message }, 'bad reply on a data connection');
      return;
    }
    if (reply.type === 'error') {
      socket.destroy();
      this.#o.logger?.warn({ request: id, code: reply.name, message: reply.message }, 'data connection refused');
      return;
    }
    this.#serveStream(socket, reply.streamId, reply.tunnel, reply.client);
  }

  #serveStream(data: net.Socket, streamId: number, name: string, from: HostPort | null): void {
    const started = performance.now();
    const tunnel = this.#tunnels.get(name);
    // Made only for a record or an event that someone takes.
    const base = () => ({ tunnel: name, local: tunnel?.status.local ?? '?', client: from ? formatHostPort(from) : '?', streamId });
    const fail = (reason: 'connect-failed' | 'unknown-tunnel', code: string) => {
      // The public client sees a reset, as it would from the service itself.
      resetSocket(data);
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
      let local: net.Socket;
      try {
        local = await connectTcp(tunnel.spec.local, this.#o.localConnectTimeout, this.#streams.signal);
      } catch (err) {
        return fail('connect-failed', (err as NodeJS.ErrnoException).code ?? 'EIO');
      }
      try {
        const result = await forward(data, local, this.#forwardOptions());
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
      } catch (err) {
        resetSocket(data);
        local.destroy();
        if (this.#recording()) {
          this.#report({ ...base(), engine: null, bytesUp: 0, bytesDown: 0, durationMs: round(performance.now() - started), reason: 'error', code: (err as NodeJS.ErrnoException).code ?? 'EIO' });
        }
      }
    })());
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
