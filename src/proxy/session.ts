// One client connection during its handshake: reads through a parser until a
// whole message has arrived (a handshake may come byte by byte, or coalesced
// with the next message and the first payload bytes), writes replies, and
// knows how to close. Over a net.Socket (or a mux stream) here; over the
// addon's acceptor in native-session.ts.
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { ProtocolError } from '../protocol/reader.js';

export type ParseResult<T> = { status: 'incomplete' } | ({ status: 'ok'; consumed: number } & T) | ProtocolError;

/** The client went away, sent garbage past a cap, or the handshake timed out. */
export class SessionClosed extends Error {
  constructor(readonly code: 'ECLOSED' | 'ETIMEDOUT' | 'EOVERSIZE') {
    super(code === 'ECLOSED' ? 'client closed during the handshake' : code === 'ETIMEDOUT' ? 'handshake timed out' : 'handshake too large');
    this.name = 'SessionClosed';
  }
}

const MAX_BUFFERED = 64 * 1024;
/** How long a closed handshake waits for the client to close too. */
export const CLOSE_WAIT_MS = 2000;
const EMPTY = Buffer.alloc(0);
const ignore = () => {};

/**
 * What every handshake reads through, whatever carries the client: the bytes received so far,
 * fed to a parser until a whole message has arrived, the handshake's deadline, and the reasons
 * a read fails. Subclasses deliver bytes (received), the FIN (endReceived) and the loss of the
 * client (lost), and do the writing and closing.
 */
export abstract class HandshakeSession {
  #buffered: Buffer = EMPTY;
  #waiting: (() => void) | undefined;
  #failure: SessionClosed | undefined;
  // A FIN after a whole request is a half-close, not a failure (ncat sends its input
  // and shuts down): it only fails a read that still needs bytes.
  #ended = false;
  readonly #timer: NodeJS.Timeout;
  readonly #deadline: number;
  #claimedClient: string | undefined;

  /** `initial`: bytes already read from the client by someone else. */
  constructor(handshakeTimeoutMs: number, initial?: Buffer) {
    if (initial && initial.length > 0) this.#buffered = initial;
    this.#deadline = performance.now() + handshakeTimeoutMs;
    this.#timer = setTimeout(() => this.#fail(new SessionClosed('ETIMEDOUT')), handshakeTimeoutMs);
  }

  /** The client's address, for the rules: the one a PROXY header named, else the peer's. */
  abstract readonly remoteAddress: string | undefined;

  /**
   * The client the rules see from now on, when it is not the peer of what carries the bytes: the
   * one a PROXY protocol header named, or the peer of the connection that carries a mux stream.
   */
  claimClient(address: string): void {
    this.#claimedClient = address;
  }

  /** The address claimClient() set, if any. */
  get claimedClient(): string | undefined {
    return this.#claimedClient;
  }
  /** Whether the client has gone (closed, failed): nothing more can be written to it. */
  abstract readonly gone: boolean;
  abstract write(reply: Buffer): void;
  /**
   * Writes the final reply (if any), then FIN, then closes once the client has closed too.
   * Input is drained meanwhile: closing with unread bytes sends an RST, which can destroy the
   * reply before the client reads it.
   */
  abstract close(reply?: Buffer): void;
  /** Closes at once (a bug of ours, a shutdown). */
  abstract destroy(): void;
  /**
   * Ends the handshake: stops reading and returns the bytes read past the last message
   * (optimistic data), which the caller must send on first.
   */
  abstract detach(): Buffer;

  /** The first byte, without consuming it. */
  async peek(): Promise<number> {
    while (this.#buffered.length === 0) await this.#more();
    return this.#buffered[0];
  }

  /**
   * Feeds the buffered bytes to `parse` until it has a whole message; returns it and
   * consumes its bytes. A protocol error is returned, not thrown: the caller replies.
   */
  async read<T>(parse: (buf: Buffer) => ParseResult<T>): Promise<({ status: 'ok'; consumed: number } & T) | ProtocolError> {
    for (;;) {
      const result = parse(this.#buffered);
      if (result.status === 'ok') {
        this.#buffered = this.#buffered.subarray(result.consumed);
        return result;
      }
      if (result.status === 'error') return result;
      await this.#more();
    }
  }

  /** ms left of the handshake's deadline. */
  protected get remainingMs(): number {
    return Math.max(1, Math.ceil(this.#deadline - performance.now()));
  }

  protected received(chunk: Buffer): void {
    this.#buffered = this.#buffered.length === 0 ? chunk : Buffer.concat([this.#buffered, chunk]);
    if (this.#buffered.length > MAX_BUFFERED) this.#fail(new SessionClosed('EOVERSIZE'));
    this.#wake();
  }

  protected endReceived(): void {
    this.#ended = true;
    this.#wake();
  }

  protected lost(): void {
    this.#fail(new SessionClosed('ECLOSED'));
  }

  /** Stops the deadline and hands over what was received and not consumed. */
  protected finish(): Buffer {
    clearTimeout(this.#timer);
    const rest = this.#buffered;
    this.#buffered = EMPTY;
    return rest;
  }

  #fail(reason: SessionClosed): void {
    this.#failure ??= reason;
    this.#wake();
  }

  #wake(): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.();
  }

  async #more(): Promise<void> {
    if (this.#failure) throw this.#failure;
    if (this.#ended) throw new SessionClosed('ECLOSED');
    await new Promise<void>((resolve) => (this.#waiting = resolve));
    if (this.#failure) throw this.#failure;
  }
}

/**
 * A handshake over a net.Socket, or over a Duplex with no address of its own (a mux stream, whose
 * client is then claimed: claimClient()).
 */
export class ClientSession<S extends Duplex = net.Socket> extends HandshakeSession {
  readonly #onData = (chunk: Buffer) => this.received(chunk);
  readonly #onEnd = () => this.endReceived();
  readonly #onClose = () => this.lost();

  /** `initial`: bytes already read from the socket by someone else (http's CONNECT head). */
  constructor(readonly socket: S, handshakeTimeoutMs: number, initial?: Buffer) {
    super(handshakeTimeoutMs, initial);
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onClose);
    socket.on('error', this.#onClose);
    socket.resume();
  }

  get remoteAddress(): string | undefined {
    return this.claimedClient ?? (this.socket as { remoteAddress?: string }).remoteAddress;
  }

  get gone(): boolean {
    return this.socket.destroyed;
  }

  write(reply: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(reply);
  }

  /** The rest is not unshifted: after a FIN the socket's stream has ended and refuses it. */
  detach(): Buffer {
    this.#stop();
    // forward() takes the socket's errors over; until it does, none may go unhandled.
    this.socket.on('error', ignore);
    this.socket.pause();
    return this.finish();
  }

  close(reply?: Buffer): void {
    this.#stop();
    this.finish();
    const socket = this.socket;
    if (socket.destroyed) return;
    socket.on('error', ignore);
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    socket.on('data', ignore);
    socket.on('end', () => socket.destroy());
    socket.resume();
    socket.end(reply ?? EMPTY);
    // A client that never closes must not hold the socket open.
    setTimeout(() => socket.destroy(), CLOSE_WAIT_MS).unref();
  }

  destroy(): void {
    this.#stop();
    this.finish();
    this.socket.destroy();
  }

  #stop(): void {
    this.socket.off('data', this.#onData);
    this.socket.off('end', this.#onEnd);
    this.socket.off('close', this.#onClose);
    this.socket.off('error', this.#onClose);
  }
}
