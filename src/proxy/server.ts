// `splicer proxy`: one listener for SOCKS4, SOCKS4a, SOCKS5 and HTTP; the first
// byte of a connection says which protocol it speaks.
import { EventEmitter, setMaxListeners } from 'node:events';
import type net from 'node:net';
import { formatHostPort, type HostPort } from '../net/host-port.js';
import { Listeners, listenChanges } from '../net/listeners.js';
import { drain } from '../net/drain.js';
import { detectProtocol } from '../protocol/detect.js';
import { parseProxyHeader } from '../protocol/proxy-protocol.js';
import { parseConnectHead } from '../protocol/http.js';
import { ClientSession, SessionClosed, type HandshakeSession } from './session.js';
import { NativeSession } from './native-session.js';
import { Acceptor, nativeAccept } from '../engine/splice/acceptor.js';
import { serveSocks4, serveSocks5 } from './socks.js';
import { SplicedHandover, type Handover } from './connect-step.js';
import { muxListenChanges, type MuxListenAddress } from './mux-address.js';
import type { MuxListeners, StreamPeer } from './mux-listener.js';
import type { Duplex } from 'node:stream';
import { checkProxyOptions } from './exposure.js';
import { onSocket, servedWith, type Served } from './served.js';
import type { ProxyConnectionRecord, ProxyLimits, ProxyOptions, ProxyTimeouts } from './options.js';

export { ExposureError, openProxyRisk, protectsHost } from './exposure.js';

const ignore = () => {};

/**
 * A connection counted against the limits. `clientIp`: the key it holds in the per-client count;
 * null until a PROXY header has named the client (then it is counted).
 */
interface Admission {
  record: ProxyConnectionRecord;
  started: number;
  clientIp: string | null;
}

export class ProxyServer extends EventEmitter<{ connection: [ProxyConnectionRecord] }> {
  #options: ProxyOptions;
  #timeouts: ProxyTimeouts;
  #limits: ProxyLimits;
  readonly #listeners: Listeners;
  /** Whether the native accept path serves (ProxyOptions.accept); the listeners are unused then. */
  readonly #native: boolean;
  /** The native path's, made by listen(). */
  #acceptor: Acceptor | undefined;
  /** Client sockets not yet closed; a pair handed to the splice engine leaves it when Node's socket closes. */
  readonly #sockets = new Set<net.Socket>();
  /** Connections being served, closed sockets of live pairs included: what the limits count. */
  #open = 0;
  readonly #perClient = new Map<string, number>();
  /** Called at each connection's end while close() waits for them (the connections are counted by #open). */
  readonly #onEnd = new Set<() => void>();
  readonly #shutdown = new AbortController();
  /** What a handshake starting now is served with; replaced whole by reconfigure(). */
  #forSockets: Served;
  #forStreams: Served;
  /** The mux://, mux+tls:// listeners and their sessions; made when the first mux address is bound. */
  #mux: MuxListeners | undefined;

  constructor(options: ProxyOptions) {
    super();
    checkProxyOptions(options);
    this.#options = options;
    // Every open connection listens on the shutdown signal: that many listeners is the design, not a leak.
    setMaxListeners(0, this.#shutdown.signal);
    this.#listeners = new Listeners((socket) => this.#accept(socket), { listenFd: options.listenFd, logger: options.logger });
    this.#native = nativeAccept(options.accept, options.engine);
    ({ timeouts: this.#timeouts, limits: this.#limits, forSockets: this.#forSockets, forStreams: this.#forStreams } = servedWith(options, this.#shutdown.signal));
  }

  /**
   * Serves connections accepted from now on with `next`'s users, rules, limits, timeouts, host
   * protection and UDP address; binds its new listen addresses and stops accepting on the ones it
   * no longer has (compared as given). Open connections, on any address, go on as they began.
   * Checked before anything changes: an open proxy or an address that cannot be bound rejects,
   * and the server runs on as it was. The engine, accept path, listenFd, lookup, logger, and the
   * mux sessions' options and TLS files are the constructor's. Mux listen addresses are added and
   * removed as plain ones are; the sessions of a removed one go on.
   */
  async reconfigure(next: Omit<ProxyOptions, 'engine' | 'spliceEngine' | 'accept' | 'listenFd' | 'lookup' | 'logger' | 'mux' | 'tls'>): Promise<void> {
    const { engine, spliceEngine, accept, listenFd, lookup, logger, mux, tls } = this.#options;
    const options: ProxyOptions = { ...next, engine, spliceEngine, accept, listenFd, lookup, logger, mux, tls };
    checkProxyOptions(options);
    const contexts = servedWith(options, this.#shutdown.signal);
    const { added, removed } = listenChanges(this.#options.listen, options.listen);
    const muxChanges = muxListenChanges(this.#options.muxListen ?? [], options.muxListen ?? []);
    if (added.length > 0) await this.#listenPlain(added);
    try {
      await this.#muxListen(muxChanges.added);
    } catch (err) {
      for (const address of added) (this.#acceptor ?? this.#listeners).unlisten(address);
      throw err;
    }
    this.#options = options;
    ({ timeouts: this.#timeouts, limits: this.#limits, forSockets: this.#forSockets, forStreams: this.#forStreams } = contexts);
    for (const address of removed) (this.#acceptor ?? this.#listeners).unlisten(address);
    for (const address of muxChanges.removed) this.#mux?.unlisten(address);
  }

  /**
   * Binds mux addresses. The listeners' module (the yamux session, zod with it) is loaded on first
   * need: a proxy with none starts with fewer files open.
   */
  async #muxListen(addresses: MuxListenAddress[]): Promise<void> {
    if (addresses.length === 0) return;
    if (!this.#mux) {
      const { MuxListeners } = await import('./mux-listener.js');
      this.#mux ??= new MuxListeners((stream, peer, streamId) => this.#acceptStream(stream, peer, streamId), {
        mux: this.#options.mux,
        tls: this.#options.tls,
        handshakeTimeout: this.#timeouts.handshake,
        limits: () => this.#limits,
        logger: this.#options.logger,
      });
    }
    await this.#mux.listen(addresses);
  }

  /** Binds plain addresses on the accept path in use (the native acceptor made on first need). */
  async #listenPlain(addresses: HostPort[]): Promise<void> {
    if (!this.#native) {
      await this.#listeners.listen(addresses);
      return;
    }
    if (this.#acceptor) {
      await this.#acceptor.listen(addresses, { listenFd: this.#options.listenFd });
      return;
    }
    this.#acceptor = await Acceptor.open(addresses, {
      onConnection: (id, host, port, acceptor) => this.#acceptNative(acceptor, id, host, port),
      listenFd: this.#options.listenFd,
      logger: this.#options.logger,
    });
  }

  /**
   * Binds every listen address, mux ones included; rejects (closing what was bound) if one fails.
   * Resolves with the plain addresses bound (muxAddresses() has the others).
   */
  async listen(): Promise<HostPort[]> {
    const plain = this.#options.listen;
    if (plain.length > 0) await this.#listenPlain(plain);
    try {
      await this.#muxListen(this.#options.muxListen ?? []);
    } catch (err) {
      for (const address of plain) (this.#acceptor ?? this.#listeners).unlisten(address);
      throw err;
    }
    return this.addresses();
  }

  /** Which accept path serves: 'native' (the addon's) or 'node' (net.Server). */
  get acceptPath(): 'native' | 'node' {
    return this.#native ? 'native' : 'node';
  }

  /** Whether destinations on this host are refused unless a rule names them (ProxyOptions.protectHost). */
  get protectsHost(): boolean {
    return this.#forSockets.socks.isHostAddress !== undefined;
  }

  addresses(): HostPort[] {
    return this.#acceptor ? this.#acceptor.addresses() : this.#listeners.addresses();
  }

  /** The mux listeners' bound addresses. */
  muxAddresses(): MuxListenAddress[] {
    return this.#mux?.addresses() ?? [];
  }

  /** Mux sessions open now. */
  get muxSessions(): number {
    return this.#mux?.sessions ?? 0;
  }

  get activeConnections(): number {
    return this.#open;
  }

  /** Stops accepting (GoAway on mux sessions: no new streams); connections and streams get `graceMs` to finish, then are ended. */
  async close(graceMs = 0): Promise<void> {
    // Settles only once every accepted socket is gone: awaited last, or open connections would hold close() past the grace.
    const closed = Promise.all([this.#listeners.close(), this.#mux?.goAway()]);
    this.#acceptor?.closeListeners();
    await this.#ended(graceMs);
    this.#shutdown.abort();
    for (const socket of this.#sockets) socket.destroy();
    this.#mux?.destroy();
    // Every handshake still on the native path is failed; adopted pairs end with the signal.
    this.#acceptor?.close();
    await this.#ended();
    await closed;
  }

  /** Resolves true once every connection has ended (reported), or false once `graceMs` has passed with some left; no grace: waits. */
  #ended(graceMs?: number): Promise<boolean> {
    const onChange = (changed: () => void) => {
      this.#onEnd.add(changed);
      return () => this.#onEnd.delete(changed);
    };
    if (graceMs !== undefined) return drain(() => this.#open, graceMs, onChange);
    if (this.#open === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const stop = onChange(() => {
        if (this.#open > 0) return;
        stop();
        resolve(true);
      });
    });
  }

  #accept(socket: net.Socket): void {
    const clientIp = socket.remoteAddress ?? '';
    const admitted = this.#admit(clientIp, socket.remotePort ?? 0);
    if (!admitted) {
      socket.on('error', ignore);
      socket.destroy();
      return;
    }
    this.#sockets.add(socket);
    // The splice engine destroys Node's socket once it holds the fds: the set must not keep it alive for the pair's life.
    socket.once('close', () => this.#sockets.delete(socket));
    this.#track(this.#serve(new ClientSession(socket, this.#timeouts.handshake), admitted, this.#forSockets), admitted);
  }

  /** A stream of a mux session, served as a connection from the session's peer; or (no id) a tls:// client. */
  #acceptStream(stream: Duplex, peer: StreamPeer, streamId?: number): void {
    stream.on('error', ignore);
    const admitted = this.#admit(peer.host, peer.port, streamId);
    if (!admitted) {
      // RST: the peer sees its stream refused, as a TCP client sees its connection closed.
      stream.destroy();
      return;
    }
    const session = new ClientSession(stream, this.#timeouts.handshake);
    session.claimClient(peer.host);
    this.#track(this.#serve(session, admitted, this.#forStreams), admitted);
  }

  #acceptNative(acceptor: Acceptor, id: number, clientIp: string, clientPort: number): void {
    const admitted = this.#admit(clientIp, clientPort);
    if (!admitted) {
      acceptor.destroy(id);
      return;
    }
    const session = new NativeSession(acceptor, id, clientIp, this.#timeouts.handshake);
    this.#track(this.#serve(session, admitted, this.#forSockets), admitted);
  }

  /**
   * The connection's record, counted against the limits; null (reported as `limit`) past them.
   * With a PROXY header to come, the per-client limit waits for the client it names.
   */
  #admit(clientIp: string, clientPort: number, muxStream?: number): Admission | null {
    const record: ProxyConnectionRecord = {
      client: formatHostPort({ host: clientIp || '?', port: clientPort }),
      ...(muxStream === undefined ? {} : { muxStream }),
      protocol: 'unknown',
      bytesUp: 0,
      bytesDown: 0,
      durationMs: 0,
      outcome: 'open',
    };
    const started = performance.now();
    const knownClient = !this.#options.acceptProxyProtocol;
    const fromClient = knownClient ? (this.#perClient.get(clientIp) ?? 0) : 0;
    if (this.#open >= this.#limits.connections || fromClient >= this.#limits.perClient) {
      record.outcome = 'limit';
      this.#report(record, started);
      return null;
    }
    this.#open++;
    if (knownClient) this.#perClient.set(clientIp, fromClient + 1);
    return { record, started, clientIp: knownClient ? clientIp : null };
  }

  // Apart from #accept, so that the closure kept until the pair ends holds no socket. What a pair's
  // life keeps of the connection is `end` (its admission) and, on the native path, the engine's
  // entry: no promise.
  #track(serving: Promise<Handover | void>, admission: Admission): void {
    serving.then(
      (handed) => this.#handedOver(handed, admission),
      (err: unknown) => this.#failedThenEnd(err, admission),
    );
  }

  // Apart from #track: `end`'s context, kept for the pair's life, holds the admission and nothing else.
  #handedOver(handed: Handover | void, admission: Admission): void {
    if (!handed) return this.#end(admission);
    const end = () => this.#end(admission);
    if (handed instanceof SplicedHandover) handed.onEnd(end);
    else handed.forwarding.then(end, (err: unknown) => this.#failedThenEnd(err, admission));
  }

  #failedThenEnd(err: unknown, admission: Admission): void {
    this.#failed(err, admission.record);
    this.#end(admission);
  }

  #end(admission: Admission): void {
    this.#open--;
    const clientIp = admission.clientIp;
    if (clientIp !== null) {
      const left = (this.#perClient.get(clientIp) ?? 1) - 1;
      if (left > 0) this.#perClient.set(clientIp, left);
      else this.#perClient.delete(clientIp);
    }
    this.#report(admission.record, admission.started);
    // Called at every connection's end: no copy when nothing waits.
    if (this.#onEnd.size > 0) for (const changed of [...this.#onEnd]) changed();
  }

  /**
   * The PROXY header every connection starts with (ProxyOptions.acceptProxyProtocol): the client
   * it names becomes the session's for the rules, the record's, and the per-client limit's.
   * False when the connection was closed instead (no valid header, or the client past its limit).
   */
  async #acceptProxyHeader(session: HandshakeSession, admission: Admission): Promise<boolean> {
    const { record } = admission;
    const parsed = await session.read(parseProxyHeader);
    if (parsed.status === 'error') {
      // Never guessed: a connection that does not say who it is for is not served.
      record.outcome = 'bad-proxy-header';
      this.#options.logger?.debug({ client: record.client, reason: parsed.message }, 'no PROXY header');
      session.close();
      return false;
    }
    const header = parsed.header;
    if (header.command === 'proxy') {
      session.claimClient(header.source.address);
      record.client = formatHostPort({ host: header.source.address, port: header.source.port });
    }
    const clientIp = session.remoteAddress ?? '';
    const fromClient = this.#perClient.get(clientIp) ?? 0;
    if (fromClient >= this.#limits.perClient) {
      record.outcome = 'limit';
      session.close();
      return false;
    }
    this.#perClient.set(clientIp, fromClient + 1);
    admission.clientIp = clientIp;
    return true;
  }

  /**
   * The handshake; once the engine holds the pair, the handover, whose frames are then done: what
   * the pair's life keeps is the record and what hears the pair's end (see #track).
   */
  async #serve(session: HandshakeSession, admission: Admission, served: Served): Promise<Handover | void> {
    const { record } = admission;
    try {
      if (this.#options.acceptProxyProtocol && !(await this.#acceptProxyHeader(session, admission))) return;
      return await this.#handshake(session, record, served);
    } catch (err) {
      if (err instanceof SessionClosed) {
        record.outcome = err.code === 'ETIMEDOUT' ? 'handshake-timeout' : err.code === 'EOVERSIZE' ? 'bad-request' : 'client-closed';
        session.close();
        return;
      }
      this.#failed(err, record);
      session.destroy();
    }
  }

  async #handshake(session: HandshakeSession, record: ProxyConnectionRecord, { socks, http }: Served): Promise<Handover | void> {
    const protocol = detectProtocol(await session.peek());
    switch (protocol) {
      case 'socks4':
        return serveSocks4(session, socks, record);
      case 'socks5':
        return serveSocks5(session, socks, record);
      case 'http': {
        // A plain CONNECT stays on the native path; any other request goes to Node's HTTP parser.
        if (session instanceof NativeSession) {
          record.protocol = 'http';
          const parsed = await session.read(parseConnectHead);
          if (parsed.status === 'ok' && parsed.head) return http.serveConnect(session, parsed.head, record);
        }
        const onNode = onSocket(session);
        return http.serve(onNode.socket, onNode.detach(), record, onNode.claimedClient);
      }
      default:
        // TLS on a plain port, or bytes of no protocol served here: nothing to reply in a language it speaks.
        record.outcome = 'bad-request';
        return session.close();
    }
  }

  /** A bug of ours must cost one connection, not the process. */
  #failed(err: unknown, record: ProxyConnectionRecord): void {
    record.outcome = 'internal-error';
    this.#options.logger?.error({ err }, 'connection failed');
  }

  #report(record: ProxyConnectionRecord, started: number): void {
    record.durationMs = Math.round((performance.now() - started) * 1000) / 1000;
    const logger = this.#options.logger;
    if (logger?.isLevelEnabled('info')) logger.info(record, 'connection closed');
    this.emit('connection', record);
  }
}

export function createProxyServer(options: ProxyOptions): ProxyServer {
  return new ProxyServer(options);
}
