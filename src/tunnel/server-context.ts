// What the parts of the tunnel server share: the options, the emitter their events go out on,
// whether close() has begun; a session and its tunnels as the server keeps them.
import type { EventEmitter } from 'node:events';
import type net from 'node:net';
import type { ControlChannel } from './channel.js';
import type { MuxSession } from '../mux/session.js';
import { resetSocket } from '../engine/splice/takeover.js';
import type { Logger } from '../logger.js';
import type { Acceptor } from '../engine/splice/acceptor.js';
import type { ResolvedServerOptions } from './options.js';
import type { RejectedInfo, ServerTunnelInfo, SessionInfo, TunnelServerEvents } from './server-events.js';

export interface ServerContext {
  readonly o: ResolvedServerOptions;
  /** The TunnelServer: every part emits its events there. */
  readonly events: EventEmitter<TunnelServerEvents>;
  /** True once close() has begun. */
  readonly closing: boolean;
  /** Logs and emits a connection that was turned away. */
  reject(info: RejectedInfo): void;
}

export interface PublicTunnel {
  name: string;
  host: string;
  port: number;
  /** host:port as records print it, made once. */
  address: string;
  session: Session;
  /** Its listener: a net.Server, or the addon's acceptor on the native data path. */
  server: net.Server | Acceptor;
  closed: boolean;
}

/**
 * A connection held in the addon's acceptor (the server's native data path): no net.Socket; its
 * fd stays the acceptor's until it is released to the splice engine.
 */
export interface NativeConn {
  acceptor: Acceptor;
  id: number;
  remoteAddress: string;
  remotePort: number;
}

/** A public client or a data connection: a net.Socket, or the acceptor's. */
export type Conn = net.Socket | NativeConn;

export function isNative(conn: Conn): conn is NativeConn {
  return 'acceptor' in conn;
}

/** A public client accepted while no data connection was there for it. */
export interface Waiting {
  socket: Conn;
  tunnel: PublicTunnel;
  accepted: number;
  timer: NodeJS.Timeout | undefined;
}

/** An authenticated data connection in the pool. */
export interface IdleData {
  socket: Conn;
  release: () => void;
}

/** One `connect` sent: `left` of its ids are still open, until `timer` expires them. */
export interface Request {
  timer: NodeJS.Timeout;
  left: number;
  /** A request for the session's mux connection, not for data connections. */
  mux?: true;
}

/** The mux connection of a session whose client said `mux` in hello: its streams replace data connections. */
export interface SessionMux {
  /** The yamux session on it, while it lives. */
  session: MuxSession | undefined;
  /** The id of the outstanding request for one, else 0. */
  request: number;
}

export interface Session {
  clientId: string;
  id: Buffer;
  idText: string;
  key: Buffer;
  channel: ControlChannel;
  remote: string;
  pool: number;
  started: number;
  tunnels: Map<string, PublicTunnel>;
  idle: IdleData[];
  waiting: Waiting[];
  /** Open requests by id: each batch (one `connect`) expires as a whole, its ids one by one as they are used. */
  requests: Map<number, Request>;
  /** The client reads `count` in connect (it said `batch` in hello). */
  batch: boolean;
  nextRequest: number;
  /** Set when the client takes its streams on a mux connection (then idle stays empty and pool 0). */
  mux: SessionMux | undefined;
  closed: boolean;
  done?: Promise<void>;
  registering: Promise<void>;
}

/** A peer told of an error gets this long to read it before its connection is destroyed. */
const LINGER_MS = 1000;

export const round = (ms: number) => Math.round(ms * 1000) / 1000;

export function sessionInfo(s: Session): SessionInfo {
  return { clientId: s.clientId, sessionId: s.idText, remote: s.remote, pool: s.pool, ...(s.mux ? { mux: true as const } : {}) };
}

export function tunnelInfo(t: PublicTunnel): ServerTunnelInfo {
  return { name: t.name, clientId: t.session.clientId, sessionId: t.session.idText, host: t.host, port: t.port };
}

/** A tunnel as log lines name it: `tunnel` like the connection records, and where it is published. */
export function tunnelLog(t: PublicTunnel) {
  return { tunnel: t.name, clientId: t.session.clientId, sessionId: t.session.idText, public: t.address };
}

/** Whether `logger` writes info lines (a logger without pino's isLevelEnabled is taken to). */
export function logsInfo(logger: Logger | undefined): boolean {
  return logger !== undefined && (typeof logger.isLevelEnabled !== 'function' || logger.isLevelEnabled('info'));
}

/** For the 'error' events of a socket whose end is learnt another way: one function for all of them. */
export function ignore(): void {}

/** Writes a last message, ends, and destroys the socket if the peer has not closed within a second. */
export function endWith(socket: Conn, message: Buffer): void {
  if (isNative(socket)) {
    const { acceptor, id } = socket;
    acceptor.end(id, message);
    setTimeout(() => acceptor.destroy(id), LINGER_MS).unref();
    return;
  }
  if (socket.destroyed) return;
  socket.on('error', ignore);
  socket.on('data', ignore);
  socket.on('end', () => socket.destroy());
  socket.resume();
  socket.end(message);
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
}

/** Closes a connection at once; `reset`: the peer sees a reset. */
export function destroyConn(conn: Conn, reset = false): void {
  if (isNative(conn)) conn.acceptor.destroy(conn.id, reset);
  else if (reset) resetSocket(conn);
  else conn.destroy();
}
