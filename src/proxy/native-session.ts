// A handshake over a connection of the addon's acceptor: no net.Socket. CONNECT ends with both
// fds adopted by the splice engine; the paths that need a stream (HTTP, BIND, UDP ASSOCIATE)
// get the client as a net.Socket (toClientSession), with what was read so far.
import fs from 'node:fs';
import type { Acceptor, AcceptedHandler, NativeUpstream } from '../engine/splice/acceptor.js';
import type { SpliceEngine } from '../engine/splice/engine.js';
import { socketOnFd } from '../engine/splice/results.js';
import type { ForwardResult } from '../engine/contract.js';
import { CLOSE_WAIT_MS, ClientSession, HandshakeSession, SessionClosed } from './session.js';

export class NativeSession extends HandshakeSession implements AcceptedHandler {
  #gone = false;
  #released = false;

  constructor(
    readonly acceptor: Acceptor,
    readonly id: number,
    readonly peerAddress: string,
    handshakeTimeoutMs: number,
  ) {
    super(handshakeTimeoutMs);
    acceptor.attach(id, this);
  }

  get remoteAddress(): string {
    return this.claimedClient ?? this.peerAddress;
  }

  get gone(): boolean {
    return this.#gone;
  }

  // AcceptedHandler: the acceptor's events for this connection.
  data(chunk: Buffer): void {
    this.received(chunk);
  }
  eof(): void {
    this.endReceived();
  }
  failed(): void {
    this.#gone = true;
    this.lost();
  }
  drained(): void {
    this.#gone = true;
  }

  write(reply: Buffer): void {
    if (this.#gone || this.#released) return;
    const written = this.acceptor.write(this.id, reply);
    if (typeof written === 'string') {
      this.acceptor.destroy(this.id);
      this.failed();
    }
  }

  /** Stops the deadline; reading stops when the fd is released. */
  detach(): Buffer {
    return this.finish();
  }

  close(reply?: Buffer): void {
    this.finish();
    if (this.#gone || this.#released) return;
    this.#released = true;
    const { acceptor, id } = this;
    acceptor.end(id, reply ?? null);
    // A client that never closes must not hold the fd open.
    setTimeout(() => acceptor.destroy(id), CLOSE_WAIT_MS).unref();
  }

  /** Closes at once (a refused connection, a shutdown). */
  destroy(): void {
    this.finish();
    if (this.#gone) return;
    this.#gone = true;
    this.acceptor.destroy(this.id);
    this.lost();
  }

  /**
   * The rest of the handshake over a net.Socket, with the bytes received and not yet consumed
   * and the same deadline. Throws when the client is gone, or Node cannot take the fd.
   */
  toClientSession(): ClientSession {
    const rest = this.finish();
    const released = this.#release();
    const socket = socketOnFd(released.fd);
    if (released.unsent) socket.write(released.unsent);
    const session = new ClientSession(socket, this.remainingMs, rest);
    if (this.claimedClient !== undefined) session.claimClient(this.claimedClient);
    return session;
  }

  /**
   * Hands the client and `upstream` to the engine: `optimistic` (read past the request) goes
   * to the upstream first, whatever of the replies is still queued to the client first; the
   * pair's result goes to `onEnd` (SpliceEngine.adoptThen).
   */
  splice(upstream: NativeUpstream, optimistic: Buffer, engine: SpliceEngine, options: { idleTimeout: number; signal: AbortSignal }, onEnd: (result: ForwardResult) => void): void {
    const server = this.acceptor.release(upstream.id);
    if (!server) throw Object.assign(new Error('upstream connection gone'), { code: 'ECONNRESET' });
    let client: { fd: number; unsent: Buffer | null };
    try {
      client = this.#release();
    } catch (err) {
      fs.closeSync(server.fd);
      throw err;
    }
    engine.adoptThen(client.fd, server.fd, optimistic.length > 0 ? optimistic : null, client.unsent, options, onEnd);
  }

  #release(): { fd: number; unsent: Buffer | null } {
    const released = this.#gone || this.#released ? null : this.acceptor.release(this.id);
    this.#released = true;
    if (!released) throw new SessionClosed('ECLOSED');
    return released;
  }
}
