// `splicer tunnel client`: logs in to a tunnel server, registers the services it publishes, and
// opens a data connection whenever the server asks for one; each carries one public connection to
// the local service with forward() (with `mux`, one mux connection carries them all as streams).
// It never gives up: a lost or refused server is retried with exponential backoff, and every
// tunnel is registered again on each new session.
import { randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter, setMaxListeners } from 'node:events';
import { createRequire } from 'node:module';
import { formatHostPort } from '../net/host-port.js';
import { ChannelClosed, ControlChannel, type ChannelEnd } from './channel.js';
import { DialError } from '../net/connect.js';
import { ServerDialer } from './server-dialer.js';
import { clientTls, parseOptions, TunnelClientOptionsSchema, type ResolvedClientOptions, type TunnelClientOptions } from './options.js';
import { clientProof, encodePreamble, NONCE_LENGTH, safeEqual, serverProof, sessionKey, type MessageOf, type ParsedControlMessage } from './protocol.js';
import type { ClientTunnelStatus, TunnelClientEvents } from './client-events.js';
import { DataConnections, type DataSession } from './client-streams.js';
import { MuxConnections } from './client-mux.js';

const SOFTWARE = `splicer/${(createRequire(import.meta.url)('../../package.json') as { version: string }).version}`;

export type { ClientConnectionRecord, ClientTunnelState, ClientTunnelStatus, TunnelClientEvents } from './client-events.js';

interface Session extends DataSession {
  idText: string;
  started: number;
  retryTimer?: NodeJS.Timeout;
  retryDelay: number;
}

interface Tunnel {
  spec: ResolvedClientOptions['tunnels'][number];
  status: ClientTunnelStatus;
}

class LoginError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const round = (ms: number) => Math.round(ms * 1000) / 1000;
const WILDCARDS = new Set(['0.0.0.0', '::', '']);

export class TunnelClient extends EventEmitter<TunnelClientEvents> {
  readonly #o: ResolvedClientOptions;
  readonly #dialer: ServerDialer;
  readonly clientId: string;
  readonly #tunnels = new Map<string, Tunnel>();
  readonly #stop = new AbortController();
  readonly #data: DataConnections;
  readonly #mux: MuxConnections;
  #session: Session | undefined;
  #loop: Promise<void> | undefined;
  #closing = false;
  #readyWaiters: Array<() => void> = [];

  constructor(options: TunnelClientOptions) {
    super();
    this.#o = parseOptions(TunnelClientOptionsSchema, options, 'tunnel client');
    this.#dialer = new ServerDialer(this.#o.server, clientTls(this.#o.tls));
    this.clientId = this.#o.clientId ?? randomUUID();
    for (const spec of this.#o.tunnels) {
      this.#tunnels.set(spec.name, { spec, status: { name: spec.name, local: formatHostPort(spec.local), remotePort: spec.remotePort, state: 'pending' } });
    }
    this.#data = new DataConnections(this.#o, this.#dialer, this.#tunnels, this);
    this.#mux = new MuxConnections(this.#o, this.#dialer, this.#data);
    setMaxListeners(0, this.#stop.signal);
  }

  /** Starts connecting (and reconnecting, until close()). */
  start(): this {
    this.#loop ??= this.#run();
    return this;
  }

  get connected(): boolean {
    return this.#session !== undefined;
  }

  get activeConnections(): number {
    return this.#data.size;
  }

  tunnels(): ClientTunnelStatus[] {
    return [...this.#tunnels.values()].map((t) => ({ ...t.status }));
  }

  /** Resolves the next time every tunnel is up (at once if they are); rejects after `timeoutMs`. */
  ready(timeoutMs = 30_000): Promise<ClientTunnelStatus[]> {
    const allUp = () => [...this.#tunnels.values()].every((t) => t.status.state === 'up');
    if (allUp()) return Promise.resolve(this.tunnels());
    return new Promise((resolve, reject) => {
      const waiter = () => {
        if (!allUp()) return;
        clearTimeout(timer);
        this.#readyWaiters = this.#readyWaiters.filter((w) => w !== waiter);
        resolve(this.tunnels());
      };
      const timer = setTimeout(() => {
        this.#readyWaiters = this.#readyWaiters.filter((w) => w !== waiter);
        const states = this.tunnels().map((t) => `${t.name}: ${t.state}${t.error ? ` (${t.error.code})` : ''}`);
        reject(new Error(`tunnels not up within ${timeoutMs} ms: ${states.join(', ')}`));
      }, timeoutMs);
      this.#readyWaiters.push(waiter);
    });
  }

  /** Logs out, stops reconnecting, gives streams `graceMs` to finish, then aborts them. */
  async close(graceMs = 0): Promise<void> {
    this.#closing = true;
    this.#stop.abort();
    this.#session?.channel.fail('shutting-down', 'the client is shutting down');
    await this.#loop;
    await this.#data.drain(graceMs);
    this.#mux.destroyAll();
  }

  // -------------------------------------------------------------------------------------------

  async #run(): Promise<void> {
    const { initialDelay, maxDelay, stableAfter } = this.#o.reconnect;
    let attempt = 0;
    while (!this.#closing) {
      let end: (ChannelEnd & { durationMs: number }) | undefined;
      let failure: { code: string; message: string } | undefined;
      try {
        end = await this.#runSession();
      } catch (err) {
        // Anything else is a bug, but a client that stays up and says so beats one that exits.
        const known = err instanceof DialError || err instanceof LoginError || err instanceof ChannelClosed;
        if (!known) this.#o.logger?.error({ err: (err as Error).message }, 'session failed');
        failure = { code: known ? err.code : ((err as NodeJS.ErrnoException).code ?? 'internal-error'), message: (err as Error).message };
      }
      if (this.#closing) break;
      if (end && end.durationMs >= stableAfter) attempt = 0;
      let delay = Math.min(maxDelay, initialDelay * 2 ** Math.min(attempt, 30));
      // Two live clients with one id would take turns replacing each other: the one replaced waits longest.
      if (end?.remote && end.code === 'replaced') delay = maxDelay;
      delay = Math.round(delay * (0.8 + Math.random() * 0.4));
      attempt++;
      if (failure) {
        this.#o.logger?.warn({ server: formatHostPort(this.#o.server), ...failure, attempt, retryInMs: delay }, 'connect failed');
        this.emit('connectFailed', { ...failure, attempt, delayMs: delay });
      } else {
        this.#o.logger?.info({ server: formatHostPort(this.#o.server), attempt, retryInMs: delay }, 'reconnecting');
      }
      await sleep(delay, this.#stop.signal);
    }
  }

  /** One session: login, register, serve until the control connection ends. Resolves with why it ended. */
  async #runSession(): Promise<ChannelEnd & { durationMs: number }> {
    const o = this.#o;
    const token = o.token;
    const socket = await this.#dialer.dial(o.connectTimeout, this.#stop.signal);
    socket.write(encodePreamble('control'));
    const channel = new ControlChannel(socket);
    const onStop = () => channel.fail('shutting-down', 'the client is shutting down');
    this.#stop.signal.addEventListener('abort', onStop, { once: true });
    let session: Session;
    try {
      const clientNonce = randomBytes(NONCE_LENGTH);
      const mux = o.mux !== false;
      channel.send({ type: 'hello', nonce: clientNonce.toString('base64'), clientId: this.clientId, pool: o.pool, software: SOFTWARE, batch: true, ...(mux ? { mux } : {}) });
      const challenge = await this.#expect(channel, 'challenge');
      const serverNonce = Buffer.from(challenge.nonce, 'base64');
      channel.send({ type: 'auth', proof: clientProof(token, clientNonce, serverNonce, this.clientId).toString('base64') });
      const welcome = await this.#expect(channel, 'welcome');
      const id = Buffer.from(welcome.sessionId, 'base64');
      // The server proves it knows the token too before it learns which services are here.
      if (!safeEqual(Buffer.from(welcome.proof, 'base64'), serverProof(token, clientNonce, serverNonce, id))) {
        channel.fail('auth-failed', 'the server does not know the token');
        throw new LoginError('server-auth-failed', 'the server does not know the token (wrong token, or not the server you meant)');
      }
      session = {
        id,
        idText: id.toString('hex'),
        key: sessionKey(token, clientNonce, serverNonce, id),
        channel,
        started: performance.now(),
        abort: new AbortController(),
        retryDelay: o.reconnect.initialDelay,
      };
      setMaxListeners(0, session.abort.signal);
      channel.startHeartbeat(welcome.heartbeatInterval, welcome.heartbeatTimeout);
      this.#session = session;
      // A server that does not speak mux ignores the field and asks for data connections, which work as ever.
      if (mux && welcome.mux !== true) o.logger?.warn('the server does not take a mux connection: each stream gets a data connection');
      const info = { sessionId: session.idText, server: formatHostPort(o.server), pool: welcome.pool, ...(welcome.mux === true ? { mux: true } : {}) };
      o.logger?.info({ ...info, clientId: this.clientId }, 'connected');
      this.emit('connected', info);
      channel.onMessage((message) => this.#onMessage(session, message));
      channel.send({ type: 'register', tunnels: o.tunnels.map((t) => ({ name: t.name, port: t.remotePort })) });
    } catch (err) {
      this.#stop.signal.removeEventListener('abort', onStop);
      channel.destroy();
      if (err instanceof ChannelClosed) throw new LoginError(err.code, err.remote ? `the server said: ${err.message}` : err.message);
      throw err;
    }
    const end = await channel.closed;
    this.#stop.signal.removeEventListener('abort', onStop);
    const durationMs = round(performance.now() - session.started);
    this.#session = undefined;
    clearTimeout(session.retryTimer);
    session.abort.abort();
    for (const tunnel of this.#tunnels.values()) {
      const wasUp = tunnel.status.state === 'up';
      tunnel.status = { name: tunnel.status.name, local: tunnel.status.local, remotePort: tunnel.status.remotePort, state: 'pending' };
      if (wasUp) {
        const reason = end.remote ? `server: ${end.code}` : end.code;
        this.#o.logger?.info({ tunnel: tunnel.spec.name, reason }, 'tunnel down');
        this.emit('tunnelDown', { name: tunnel.spec.name, reason });
      }
    }
    this.#o.logger?.[this.#closing ? 'info' : 'warn']({ sessionId: session.idText, code: end.code, message: end.message, remoteError: end.remote || undefined, durationMs }, 'disconnected');
    this.emit('disconnected', { ...end, durationMs });
    return { ...end, durationMs };
  }

  async #expect<T extends ParsedControlMessage['type']>(channel: ControlChannel, type: T): Promise<MessageOf<T>> {
    const message = await channel.next(this.#o.handshakeTimeout);
    if (message.type !== type) {
      channel.fail('unexpected-message', `expected ${type}, got ${message.type}`);
      throw new LoginError('unexpected-message', `the server sent ${message.type} where ${type} was due`);
    }
    return message as MessageOf<T>;
  }

  #onMessage(session: Session, message: ParsedControlMessage): void {
    switch (message.type) {
      case 'registered':
        return this.#onRegistered(session, message);
      case 'connect':
        if (message.mux === true) {
          this.#mux.open(session, message.id).catch((err: Error) => this.#o.logger?.error({ request: message.id, err: err.message }, 'mux connection failed'));
          return;
        }
        // Ids id … id + count − 1: one data connection each.
        for (let id = message.id, last = message.id + (message.count ?? 1) - 1; id <= last; id++) {
          this.#data.open(session, id).catch((err: Error) => this.#o.logger?.error({ request: id, err: err.message }, 'data connection failed'));
        }
        return;
      default:
        session.channel.fail('unexpected-message', `a server does not send ${message.type} after welcome`);
    }
  }

  #onRegistered(session: Session, message: MessageOf<'registered'>): void {
    const retry: Tunnel[] = [];
    for (const result of message.tunnels) {
      const tunnel = this.#tunnels.get(result.name);
      if (!tunnel) continue;
      if (result.ok) {
        // A server publishing on every address names none: the client's way to it is the best guess.
        const remote = { host: WILDCARDS.has(result.host) ? this.#o.server.host : result.host, port: result.port };
        tunnel.status = { ...tunnel.status, state: 'up', remote, error: undefined };
        this.#o.logger?.info({ tunnel: result.name, local: tunnel.status.local, remote: formatHostPort(remote) }, 'tunnel up');
        this.emit('tunnelUp', { name: result.name, local: tunnel.status.local, remote });
      } else {
        tunnel.status = { ...tunnel.status, state: 'refused', remote: undefined, error: { code: result.code, message: result.message } };
        this.#o.logger?.error({ tunnel: result.name, code: result.code, message: result.message }, 'tunnel refused');
        this.emit('tunnelRefused', { name: result.name, code: result.code, message: result.message });
        // A taken port may come free (a stale client times out); anything else will not change by asking again.
        if (result.code === 'port-in-use' || result.code === 'no-free-port') retry.push(tunnel);
      }
    }
    if (retry.length > 0 && !session.abort.signal.aborted) {
      const delay = session.retryDelay;
      session.retryDelay = Math.min(this.#o.reconnect.maxDelay, delay * 2);
      session.retryTimer = setTimeout(() => {
        session.channel.send({ type: 'register', tunnels: retry.map((t) => ({ name: t.spec.name, port: t.spec.remotePort })) });
      }, delay);
    }
    for (const waiter of [...this.#readyWaiters]) waiter();
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

export function createTunnelClient(options: TunnelClientOptions): TunnelClient {
  return new TunnelClient(options);
}
