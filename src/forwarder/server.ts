// A plain TCP forwarder: every connection accepted on the listen addresses is
// forwarded to one upstream. The client is not read until the upstream is
// connected, so its first bytes stay in the kernel and are spliced like the rest.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { formatHostPort, type HostPort } from '../net/host-port.js';
import { connectTcp, DEFAULT_CONNECT_TIMEOUT_MS } from '../net/connect.js';
import { forward } from '../engine/forward.js';
import { resetSocket } from '../engine/splice/takeover.js';
import { Listeners, type OpenListenFd } from '../net/listeners.js';
import { OpenSet } from '../net/drain.js';
import type { Logger } from '../logger.js';
import type { SpliceEngine } from '../engine/splice/engine.js';
import type { EngineChoice, EngineName, EndReason } from '../engine/contract.js';

export interface ForwarderOptions {
  listen: HostPort[];
  /** Listen on sockets this makes (SO_REUSEPORT ones, one per worker process) rather than Node's. */
  listenFd?: OpenListenFd;
  to: HostPort;
  engine?: EngineChoice;
  /** ms with no byte either way before a pair is closed; 0 = never. */
  idleTimeout?: number;
  /** ms to wait for the upstream to accept; the client is reset after that. */
  connectTimeout?: number;
  spliceEngine?: SpliceEngine;
  logger?: Logger;
}

/** What a connection did, reported once when it ends. */
export interface ConnectionRecord {
  client: string;
  upstream: string;
  engine: EngineName | null;
  bytesUp: number;
  bytesDown: number;
  durationMs: number;
  reason: EndReason | 'connect-failed';
  code?: string;
}

export class Forwarder extends EventEmitter<{ connection: [ConnectionRecord]; error: [Error] }> {
  readonly #options: ForwarderOptions;
  readonly #listeners: Listeners;
  readonly #active = new OpenSet<AbortController>();
  #closing = false;

  constructor(options: ForwarderOptions) {
    super();
    if (options.listen.length === 0) throw new TypeError('at least one listen address is needed');
    this.#options = options;
    // Clients are not read until the upstream is connected: their first bytes wait in the kernel and get spliced.
    this.#listeners = new Listeners((socket) => void this.#serve(socket), { pauseOnConnect: true, listenFd: options.listenFd, logger: options.logger });
  }

  /** Binds every listen address; rejects (closing what was bound) if one fails. */
  listen(): Promise<HostPort[]> {
    return this.#listeners.listen(this.#options.listen);
  }

  addresses(): HostPort[] {
    return this.#listeners.addresses();
  }

  get activeConnections(): number {
    return this.#active.size;
  }

  /** Stops accepting; pairs get `graceMs` to finish, then are aborted. */
  async close(graceMs = 0): Promise<void> {
    this.#closing = true;
    const closed = this.#listeners.close();
    await this.#active.drained(graceMs);
    for (const controller of this.#active) controller.abort();
    await this.#active.drained(Infinity);
    await closed;
  }

  async #serve(client: net.Socket): Promise<void> {
    const started = performance.now();
    const controller = new AbortController();
    this.#active.add(controller);
    const to = this.#options.to;
    const record: ConnectionRecord = {
      client: formatHostPort({ host: client.remoteAddress ?? '?', port: client.remotePort ?? 0 }),
      upstream: formatHostPort(to),
      engine: null,
      bytesUp: 0,
      bytesDown: 0,
      durationMs: 0,
      reason: 'connect-failed',
    };
    try {
      client.on('error', () => {});  // a reset before the takeover is reported by forward()
      if (this.#closing) throw Object.assign(new Error('shutting down'), { code: 'ESHUTDOWN' });
      const upstream = await connectTcp(to, this.#options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT_MS, controller.signal);
      const result = await forward(client, upstream, {
        engine: this.#options.engine,
        idleTimeout: this.#options.idleTimeout,
        signal: controller.signal,
        spliceEngine: this.#options.spliceEngine,
      });
      Object.assign(record, {
        engine: result.engine,
        bytesUp: result.bytesAtoB,
        bytesDown: result.bytesBtoA,
        reason: result.reason,
        code: result.error?.code,
      });
    } catch (err) {
      // The upstream could not be reached: the client learns it by a reset, as from the server itself.
      record.code = (err as NodeJS.ErrnoException).code ?? 'EIO';
      resetSocket(client);
    } finally {
      this.#active.delete(controller);
      record.durationMs = Math.round((performance.now() - started) * 1000) / 1000;
      this.#options.logger?.info(record, 'connection closed');
      this.emit('connection', record);
    }
  }
}
