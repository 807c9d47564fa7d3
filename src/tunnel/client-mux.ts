// The client's mux connection: dialled when the server asks for it (`connect` with `mux`),
// authenticated like a data connection, then a yamux session on which the server opens one stream
// per public client. Each stream goes to DataConnections, which carries it as it would a data
// connection. When the control session ends the mux connection is closed gracefully (GoAway: the
// streams running finish); when it is lost, the server asks for a new one.
import { onAbort } from '../net/abort.js';
import { createMuxSession, type MuxSession } from '../mux/session.js';
import type { ServerDialer } from './server-dialer.js';
import { readHeader, type HeaderError } from './header.js';
import { clientMux, type ResolvedClientOptions } from './options.js';
import { dataMac, encodeDataHello, parseMuxReply } from './protocol.js';
import type { DataConnections, DataSession } from './client-streams.js';

export class MuxConnections {
  readonly #o: ResolvedClientOptions;
  readonly #dialer: ServerDialer;
  readonly #streams: DataConnections;
  /** Every mux session not yet closed: one per control session, plus those still finishing their streams. */
  readonly #sessions = new Set<MuxSession>();

  constructor(o: ResolvedClientOptions, dialer: ServerDialer, streams: DataConnections) {
    this.#o = o;
    this.#dialer = dialer;
    this.#streams = streams;
  }

  /** TCP connections to the server that are mux sessions now. */
  get size(): number {
    return this.#sessions.size;
  }

  /** The mux connection for request `id`: dial, authenticate, read MUX, then serve its streams. */
  async open(session: DataSession, id: number): Promise<void> {
    const o = this.#o;
    const signal = session.abort.signal;
    let socket;
    try {
      socket = await this.#dialer.dial(o.connectTimeout, signal);
    } catch (err) {
      return this.#streams.dialFailed(session, id, err);
    }
    socket.write(encodeDataHello(session.id, id, dataMac(session.key, session.id, id, 'mux'), 'mux'));
    let reply;
    try {
      reply = await readHeader(socket, parseMuxReply, { signal, maxBytes: 1024, timeoutMs: o.handshakeTimeout });
    } catch (err) {
      socket.destroy();
      if (!signal.aborted) o.logger?.warn({ request: id, code: (err as HeaderError).code }, 'mux connection closed before its reply');
      return;
    }
    if (reply.status === 'error' || reply.type === 'error') {
      socket.destroy();
      const code = reply.status === 'error' ? reply.code : reply.name;
      o.logger?.warn({ request: id, code, message: reply.message }, 'mux connection refused');
      return;
    }
    // The connection was dialled here: the client role (odd ids), though only the server opens streams.
    const mux = createMuxSession(socket, { ...clientMux(o.mux), role: 'client' });
    socket.resume();
    this.#sessions.add(mux);
    o.logger?.info({ request: id }, 'mux connection open');
    mux.on('stream', (stream) => this.#streams.serveMuxStream(stream));
    mux.on('error', (err) => o.logger?.warn({ err: err.message }, 'mux connection failed'));
    const detach = onAbort(signal, () => void mux.close());
    if (signal.aborted) void mux.close();
    mux.once('close', () => {
      detach();
      this.#sessions.delete(mux);
      o.logger?.info({ request: id }, 'mux connection closed');
    });
  }

  /** Ends every mux connection at once (after the streams have been drained). */
  destroyAll(): void {
    for (const mux of this.#sessions) mux.destroy();
  }
}
