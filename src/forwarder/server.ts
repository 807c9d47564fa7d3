// A plain TCP forwarder: every connection accepted on the listen addresses is
// forwarded to one upstream. The client is not read until the upstream is
// connected, so its first bytes stay in the kernel and are spliced like the rest.
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import { formatHostPort, type HostPort } from '../net/host-port.js';
import { connectTcp, DEFAULT_CONNECT_TIMEOUT_MS } from '../net/connect.js';
import { defaultSpliceEngine, forward, type ForwardOptions } from '../engine/forward.js';
import { Acceptor, nativeAccept, type AcceptPath } from '../engine/splice/acceptor.js';
import { dialWith } from '../net/dial.js';
import { resetSocket } from '../engine/splice/takeover.js';
import { Listeners, listenChanges, type OpenListenFd } from '../net/listeners.js';
import { RunningTasks } from '../net/drain.js';
import { clientOf, headerToSend, ProxyHeaderError, readProxyHeader, type ProxyProtocolVersion } from '../net/proxy-header.js';
import type { ProxyHeader } from '../protocol/proxy-protocol.js';
import type { Logger } from '../logger.js';
import type { SpliceEngine } from '../engine/splice/engine.js';
import type { EngineChoice, EngineName, EndReason, ForwardResult } from '../engine/contract.js';

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
  /**
   * Who accepts: 'native' (the addon: accept, connect and the engine's adoption of both fds, no
   * net.Socket; Linux, not with engine 'js'), 'node' (net.Server), 'auto' (the default): native
   * where it can be.
   */
  accept?: AcceptPath;
  /**
   * Every connection starts with a PROXY protocol header (v1 or v2), whose source is the client
   * in records; one without a valid header within `proxyHeaderTimeout` is closed. Served on the
   * node accept path.
   */
  acceptProxyProtocol?: boolean;
  /** ms a connection has to send its PROXY header (default 10 s). */
  proxyHeaderTimeout?: number;
  /**
   * Writes a PROXY protocol header of this version to each upstream before any client byte: the
   * client and the address it reached (or what an accepted header said). Served on the node accept path.
   */
  sendProxyProtocol?: ProxyProtocolVersion;
  logger?: Logger;
}

export const DEFAULT_PROXY_HEADER_TIMEOUT_MS = 10_000;

/** What a connection did, reported once when it ends. */
export interface ConnectionRecord {
  client: string;
  upstream: string;
  engine: EngineName | null;
  bytesUp: number;
  bytesDown: number;
  durationMs: number;
  /** `proxy-header`: no valid PROXY header came (code: ERR_PROXY_HEADER, ETIMEDOUT, ECONNRESET). */
  reason: EndReason | 'connect-failed' | 'proxy-header';
  code?: string;
}

export class Forwarder extends EventEmitter<{ connection: [ConnectionRecord]; error: [Error] }> {
  #options: ForwarderOptions;
  readonly #listeners: Listeners;
  /** The pairs in flight; its one signal, aborted when a close's grace runs out, ends them all. */
  readonly #active = new RunningTasks();
  #upstream: string;
  #forward: ForwardOptions;
  #connectTimeout: number;
  readonly #native: boolean;
  #acceptor: Acceptor | undefined;
  #closing = false;

  constructor(options: ForwarderOptions) {
    super();
    if (options.listen.length === 0) throw new TypeError('at least one listen address is needed');
    this.#options = options;
    this.#upstream = formatHostPort(options.to);
    this.#connectTimeout = options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.#forward = { engine: options.engine, idleTimeout: options.idleTimeout, signal: this.#active.signal, spliceEngine: options.spliceEngine };
    // Clients are not read until the upstream is connected: their first bytes wait in the kernel and get spliced.
    this.#listeners = new Listeners((socket) => this.#active.run(this.#serve(socket)), { pauseOnConnect: true, listenFd: options.listenFd, logger: options.logger });
    this.#native = nativeAccept(proxyProtocolAccept(options), options.engine);
  }

  /** Binds every listen address; rejects (closing what was bound) if one fails. */
  async listen(): Promise<HostPort[]> {
    if (!this.#native) return this.#listeners.listen(this.#options.listen);
    // Held: a client is not read until its upstream is connected, as on the Node path.
    this.#acceptor = await Acceptor.open(this.#options.listen, {
      hold: true,
      onConnection: (id, host, port, acceptor) => this.#active.run(this.#serveNative(acceptor, id, host, port)),
      listenFd: this.#options.listenFd,
      logger: this.#options.logger,
    });
    return this.#acceptor.addresses();
  }

  /**
   * Serves connections accepted from now on with `next`'s upstream and timeouts; binds its new
   * listen addresses and stops accepting on the ones it no longer has (compared as given). Open
   * pairs go on as they began. A listen address that cannot be bound rejects and changes nothing.
   * The engine, accept path, listenFd and logger are the constructor's.
   */
  async reconfigure(next: Pick<ForwarderOptions, 'listen' | 'to' | 'idleTimeout' | 'connectTimeout'>): Promise<void> {
    if (next.listen.length === 0) throw new TypeError('at least one listen address is needed');
    const options: ForwarderOptions = { ...this.#options, listen: next.listen, to: next.to, idleTimeout: next.idleTimeout, connectTimeout: next.connectTimeout };
    const { added, removed } = listenChanges(this.#options.listen, options.listen);
    if (added.length > 0) {
      if (this.#acceptor) await this.#acceptor.listen(added, { listenFd: options.listenFd });
      else if (!this.#native) await this.#listeners.listen(added);
    }
    this.#options = options;
    this.#upstream = formatHostPort(options.to);
    this.#connectTimeout = options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.#forward = { ...this.#forward, idleTimeout: options.idleTimeout };
    for (const address of removed) (this.#acceptor ?? this.#listeners).unlisten(address);
  }

  /** Which accept path serves: 'native' (the addon's) or 'node' (net.Server). */
  get acceptPath(): 'native' | 'node' {
    return this.#native ? 'native' : 'node';
  }

  addresses(): HostPort[] {
    return this.#acceptor ? this.#acceptor.addresses() : this.#listeners.addresses();
  }

  get activeConnections(): number {
    return this.#active.size;
  }

  /** Stops accepting; pairs get `graceMs` to finish, then are aborted. */
  async close(graceMs = 0): Promise<void> {
    this.#closing = true;
    const closed = this.#listeners.close();
    this.#acceptor?.closeListeners();
    await this.#active.close(graceMs);
    // Connections still waiting for their upstream are closed with it.
    this.#acceptor?.close();
    await closed;
  }

  async #serve(client: net.Socket): Promise<void> {
    const started = performance.now();
    // Taken now: a reload changes them for connections accepted after it.
    const { to, upstream: upstreamName, forwardOptions, connectTimeout } = this.#current();
    // Read now, while the socket has it (it is closed once the engine takes the pair); printed only for a record.
    let host = client.remoteAddress;
    let port = client.remotePort;
    const peer = { address: host, port };
    const local = { address: client.localAddress, port: client.localPort };
    let result: ForwardResult | undefined;
    let code: string | undefined;
    let header: ProxyHeader | undefined;
    try {
      client.on('error', ignore); // a reset before the takeover is reported by forward()
      if (this.#closing) throw Object.assign(new Error('shutting down'), { code: 'ESHUTDOWN' });
      if (this.#options.acceptProxyProtocol) {
        header = await readProxyHeader(client, this.#options.proxyHeaderTimeout ?? DEFAULT_PROXY_HEADER_TIMEOUT_MS, this.#active.signal);
        ({ address: host, port } = clientOf(header, { address: host ?? '', port: port ?? 0 }));
      }
      const upstream = await connectTcp(to, connectTimeout, this.#active.signal);
      // Queued ahead of the pair: either engine sends it before the client's first byte.
      const send = this.#options.sendProxyProtocol;
      if (send) upstream.write(headerToSend(send, header, peer, local));
      result = await forward(client, upstream, forwardOptions);
      code = result.error?.code;
    } catch (err) {
      if (err instanceof ProxyHeaderError) {
        // Never guessed: a connection that does not say who it is for is not served.
        this.#options.logger?.debug({ client: formatHostPort({ host: host ?? '?', port: port ?? 0 }), reason: err.message }, 'no PROXY header');
        client.destroy();
        this.#report(upstreamName, started, host, port, undefined, err.code, 'proxy-header');
        return;
      }
      // The upstream could not be reached: the client learns it by a reset, as from the server itself.
      code = (err as NodeJS.ErrnoException).code ?? 'EIO';
      resetSocket(client);
    }
    this.#report(upstreamName, started, host, port, result, code);
  }

  /** The native path: no net.Socket; the addon connects, and the engine adopts both fds. */
  async #serveNative(acceptor: Acceptor, id: number, host: string, port: number): Promise<void> {
    const started = performance.now();
    const { to, upstream: upstreamName, forwardOptions, connectTimeout } = this.#current();
    let result: ForwardResult | undefined;
    let code: string | undefined;
    try {
      if (this.#closing) throw Object.assign(new Error('shutting down'), { code: 'ESHUTDOWN' });
      const upstream = await dialWith(acceptor.connector, to.host, to.port, { timeout: connectTimeout, signal: this.#active.signal });
      const server = acceptor.release(upstream.id);
      const client = acceptor.release(id);
      if (!server || !client) {
        if (server) closeFd(server.fd);
        if (client) closeFd(client.fd);
        throw Object.assign(new Error('connection closed'), { code: 'ECONNRESET' });
      }
      const engine = this.#options.spliceEngine ?? defaultSpliceEngine();
      result = await engine.adopt(client.fd, server.fd, null, null, forwardOptions);
      code = result.error?.code;
    } catch (err) {
      // The upstream could not be reached: the client learns it by a reset, as from the server itself.
      code = (err as NodeJS.ErrnoException).code ?? 'EIO';
      acceptor.destroy(id, true);
    }
    this.#report(upstreamName, started, host, port, result, code);
  }

  #current() {
    return { to: this.#options.to, upstream: this.#upstream, forwardOptions: this.#forward, connectTimeout: this.#connectTimeout };
  }

  #report(upstream: string, started: number, host: string | undefined, port: number | undefined, result: ForwardResult | undefined, code: string | undefined, failed: ConnectionRecord['reason'] = 'connect-failed'): void {
    const logger = this.#options.logger;
    const logs = logger !== undefined && (typeof logger.isLevelEnabled !== 'function' || logger.isLevelEnabled('info'));
    // Nobody reads the record: none is made.
    if (!logs && this.listenerCount('connection') === 0) return;
    const record: ConnectionRecord = {
      client: formatHostPort({ host: host ?? '?', port: port ?? 0 }),
      upstream,
      engine: result?.engine ?? null,
      bytesUp: result?.bytesAtoB ?? 0,
      bytesDown: result?.bytesBtoA ?? 0,
      durationMs: Math.round((performance.now() - started) * 1000) / 1000,
      reason: result?.reason ?? failed,
    };
    if (code !== undefined) record.code = code;
    logger?.info(record, 'connection closed');
    this.emit('connection', record);
  }
}

/**
 * The accept path with the PROXY protocol options: the node one, which has the local address a
 * client reached and reads a header with the rest of the stream put back for either engine.
 */
function proxyProtocolAccept(options: ForwarderOptions): AcceptPath | undefined {
  if (!options.acceptProxyProtocol && !options.sendProxyProtocol) return options.accept;
  if (options.accept === 'native') {
    throw Object.assign(new TypeError('the PROXY protocol options (--accept-proxy-protocol, --send-proxy-protocol) are served on the node accept path, not --accept native'), { code: 'ERR_INVALID_ARG_VALUE' });
  }
  return 'node';
}

function closeFd(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // already gone
  }
}

function ignore(): void {}
