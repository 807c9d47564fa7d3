// Control connections: login (hello, challenge, auth, welcome), one session per client id (a new
// login replaces the old session), the session's registrations, and its end: ports freed, waiting
// public clients reset, idle data connections closed.
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { ChannelClosed, ControlChannel, type ChannelEnd } from './channel.js';
import { clientProof, NONCE_LENGTH, safeEqual, serverProof, SESSION_ID_LENGTH, sessionKey, type ParsedControlMessage } from './protocol.js';
import { destroyConn, round, sessionInfo, tunnelInfo, tunnelLog, type ServerContext, type Session } from './server-context.js';
import type { SessionInfo, ServerTunnelInfo } from './server-events.js';
import type { Granted, PortAllocator, Refusal } from './server-ports.js';
import type { Streams } from './server-streams.js';

export class Sessions {
  readonly #ctx: ServerContext;
  readonly #ports: PortAllocator;
  readonly #streams: Streams;
  readonly #sessions = new Map<string, Session>();
  readonly #bySessionId = new Map<string, Session>();

  constructor(ctx: ServerContext, ports: PortAllocator, streams: Streams) {
    this.#ctx = ctx;
    this.#ports = ports;
    this.#streams = streams;
  }

  /** The session a data connection names, by its id in hex. */
  find(idText: string): Session | undefined {
    return this.#bySessionId.get(idText);
  }

  list(): SessionInfo[] {
    return [...this.#sessions.values()].map((s) => sessionInfo(s));
  }

  tunnels(): ServerTunnelInfo[] {
    return [...this.#sessions.values()].flatMap((s) => [...s.tunnels.values()].map((t) => tunnelInfo(t)));
  }

  /** Ends every session; resolves once their ports are free. */
  async closeAll(code: string, message: string): Promise<void> {
    await Promise.all([...this.#sessions.values()].map((s) => this.#closeSession(s, code, message)));
  }

  /**
   * Logs a control connection in, then serves its session until the connection ends.
   * `authenticated` runs once the session exists: the connection no longer counts as logging in.
   */
  async serveControl(socket: net.Socket, remote: string, authenticated: () => void): Promise<void> {
    const o = this.#ctx.o;
    const token = o.token;
    const channel = new ControlChannel(socket);
    const timeout = o.handshakeTimeout;
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
      const expected = clientProof(token, clientNonce, serverNonce, clientId);
      if (!safeEqual(Buffer.from(auth.proof, 'base64'), expected)) return this.#refuseLogin(channel, remote, 'auth-failed', 'the client does not know the token', clientId);
      if (this.#ctx.closing) return this.#refuseLogin(channel, remote, 'shutting-down', 'the server is shutting down', clientId);
      if (this.#sessions.size >= o.maxSessions && !this.#sessions.has(clientId)) {
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
        key: sessionKey(token, clientNonce, serverNonce, id),
        channel,
        remote,
        // A mux client's streams need no data connection, so no pool either.
        pool: hello.mux === true ? 0 : Math.min(hello.pool, o.maxPool),
        started: performance.now(),
        tunnels: new Map(),
        idle: [],
        waiting: [],
        requests: new Map(),
        batch: hello.batch === true,
        nextRequest: 1,
        mux: hello.mux === true ? { session: undefined, request: 0 } : undefined,
        closed: false,
        registering: Promise.resolve(),
      };
      this.#sessions.set(clientId, session);
      this.#bySessionId.set(session.idText, session);
      authenticated();
      channel.send({
        type: 'welcome',
        sessionId: id.toString('base64'),
        proof: serverProof(token, clientNonce, serverNonce, id).toString('base64'),
        heartbeatInterval: o.heartbeatInterval,
        heartbeatTimeout: o.heartbeatTimeout,
        pool: session.pool,
        ...(session.mux ? { mux: true } : {}),
      });
    } catch (err) {
      if (!(err instanceof ChannelClosed)) throw err;
      channel.destroy();
      this.#ctx.reject({ remote, kind: 'control', code: err.code, message: err.message, clientId });
      return;
    }
    channel.startHeartbeat(o.heartbeatInterval, o.heartbeatTimeout);
    const info = sessionInfo(session);
    o.logger?.info(info, 'session open');
    this.#ctx.events.emit('sessionOpen', info);
    channel.onMessage((message) => this.#onMessage(session, message));
    this.#streams.want(session);
    const end = await channel.closed;
    await this.#endSession(session, end);
  }

  #refuseLogin(channel: ControlChannel, remote: string, code: string, message: string, clientId?: string): void {
    channel.fail(code, message);
    this.#ctx.reject({ remote, kind: 'control', code, message, clientId });
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
        this.#ctx.o.logger?.warn({ clientId: session.clientId, request: message.id, code: message.code }, 'client could not open a data connection');
        return;
      default:
        session.channel.fail('unexpected-message', `a client does not send ${message.type} once logged in`);
    }
  }

  async #register(session: Session, wanted: { name: string; port: number }[]): Promise<void> {
    const results: (Granted | Refusal)[] = [];
    for (const { name, port } of wanted) {
      if (session.closed) return;
      const result = await this.#ports.open(session, name, port);
      if (!result.ok) {
        const refusal = { name, clientId: session.clientId, port, code: result.code, message: result.message };
        this.#ctx.o.logger?.warn({ tunnel: name, clientId: session.clientId, port, code: result.code, message: result.message }, 'tunnel refused');
        this.#ctx.events.emit('tunnelRefused', refusal);
      }
      results.push(result);
    }
    if (!session.closed) session.channel.send({ type: 'registered', tunnels: results });
  }

  #closeSession(session: Session, code: string, message: string): Promise<void> {
    session.channel.fail(code, message);
    return this.#endSession(session, session.channel.ended ?? { code, message, remote: false });
  }

  #endSession(session: Session, end: ChannelEnd): Promise<void> {
    session.done ??= (async () => {
      const o = this.#ctx.o;
      session.closed = true;
      if (this.#sessions.get(session.clientId) === session) this.#sessions.delete(session.clientId);
      this.#bySessionId.delete(session.idText);
      if (!session.channel.ended) session.channel.destroy(end.code, end.message);
      for (const request of session.requests.values()) clearTimeout(request.timer);
      session.requests.clear();
      for (const waiting of session.waiting.splice(0)) this.#streams.dropPublic(waiting, this.#ctx.closing ? 'shutdown' : 'session-closed');
      for (const idle of session.idle.splice(0)) {
        idle.release();
        destroyConn(idle.socket);
      }
      // GoAway: no new stream; those running go on, as a data connection's stream outlives its session.
      if (session.mux?.session) void session.mux.session.close();
      const reason = end.remote ? `client: ${end.code}` : end.code;
      await Promise.all(
        [...session.tunnels.values()].map(async (tunnel) => {
          await this.#ports.release(tunnel);
          o.logger?.info({ ...tunnelLog(tunnel), reason }, 'tunnel down');
          this.#ctx.events.emit('tunnelDown', { ...tunnelInfo(tunnel), reason });
        }),
      );
      session.tunnels.clear();
      const info = { ...sessionInfo(session), code: end.code, message: end.message, durationMs: round(performance.now() - session.started) };
      o.logger?.info({ ...info, remoteError: end.remote || undefined }, 'session closed');
      this.#ctx.events.emit('sessionClose', info);
    })();
    return session.done;
  }
}
