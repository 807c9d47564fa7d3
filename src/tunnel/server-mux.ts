// A session's mux connection, on the server: once authenticated it becomes a yamux session on
// which the server opens one stream per public client (the client opens none). Each stream starts
// with the same START header a data connection gets, so the client handles both alike.
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { createMuxSession, type MuxSession } from '../mux/session.js';
import { MUX_ACCEPTED } from './protocol.js';
import type { ServerContext, Session, SessionMux } from './server-context.js';

/** Streams open at once on one mux connection: as many public clients as may wait for a session. */
const MAX_MUX_STREAMS = 4096;

/**
 * Answers MUX on an authenticated mux connection and makes it the session's yamux session (the
 * server side: even stream ids). `onClose` runs when it ends, however it ends.
 */
export function acceptMux(ctx: ServerContext, session: Session & { mux: SessionMux }, socket: net.Socket, remote: string, onClose: () => void): MuxSession {
  const o = ctx.o;
  socket.write(MUX_ACCEPTED);
  // The client's pings and ours share the heartbeat's timing: a dead mux connection is noticed as a dead control connection would be.
  const mux = createMuxSession(socket, {
    role: 'server',
    maxStreams: MAX_MUX_STREAMS,
    keepaliveInterval: o.heartbeatInterval,
    keepaliveTimeout: o.heartbeatTimeout,
  });
  socket.resume();
  session.mux.session = mux;
  const log = { clientId: session.clientId, sessionId: session.idText, remote };
  o.logger?.info(log, 'mux connection open');
  mux.on('error', (err) => o.logger?.warn({ ...log, err: err.message }, 'mux connection failed'));
  mux.once('close', () => {
    if (session.mux.session === mux) session.mux.session = undefined;
    o.logger?.info(log, 'mux connection closed');
    onClose();
  });
  return mux;
}

/**
 * A stream for a public client on the session's mux connection: undefined while there is none
 * (the public client waits for the next), 'limit' when it holds all the streams it may.
 */
export function openMuxStream(mux: SessionMux): Duplex | 'limit' | undefined {
  const session = mux.session;
  if (!session?.open) return undefined;
  try {
    return session.openStream();
  } catch (err) {
    // GoAway from the client (it is closing the connection): the next mux connection takes the stream.
    if ((err as { code?: string }).code === 'ERR_MUX_GOING_AWAY' || (err as { code?: string }).code === 'ERR_MUX_SESSION_CLOSED') return undefined;
    return 'limit';
  }
}
