// A yamux session whose stream bytes move by splice() in the addon (native/mux_session.h): the
// session socket and every stream socket are handed over to it, and JS keeps the control plane:
// which streams to open or accept, keepalive pings, GoAway, the results.
//
// It speaks the same yamux as MuxSession (src/mux/session.ts), with the same defaults and errors;
// a stream here is a TCP socket carried whole, not a Duplex. Linux with the addon only:
// splicedMuxUnavailable() (spliced-binding.ts) says why not elsewhere.
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import os from 'node:os';
import { EVENT, nativeClass, splicedMuxUnavailable, type NativeMuxSession, type SplicedSessionCounts } from './spliced-binding.js';

export type { SplicedSessionCounts } from './spliced-binding.js';
import { giveBack, settle, socketFd, takeReadable, unsettled, whyNoFd } from '../engine/splice/takeover.js';
import { MuxError, type MuxErrorCode } from './errors.js';
import { parseMuxOptions, type MuxSessionOptions, type ResolvedMuxOptions } from './options.js';
import { PendingPings } from './pending-pings.js';

/** How a spliced stream ended. */
export type SplicedStreamEnd = 'finished' | 'reset' | 'refused' | 'error' | 'session' | 'aborted';

export interface SplicedStreamResult {
  /** Bytes read from the stream socket and sent on the session. */
  bytesUp: number;
  /** Bytes received on the session and written to the stream socket. */
  bytesDown: number;
  /** finished: FIN both ways; reset: the peer's RST; refused: the peer's RST before it accepted; error: the stream socket failed (RST sent); session: the session ended; aborted: abort()/refuse(). */
  reason: SplicedStreamEnd;
  /** The errno name of an 'error' (ECONNRESET, EPIPE...). */
  code?: string;
}

/** A stream the peer opened: accept() it with a connected socket, or refuse() it. */
export interface IncomingSplicedStream {
  readonly id: number;
  /** Hands `socket` (connected, allowHalfOpen) to the stream; resolves when the stream ends. `signal` resets it. */
  accept(socket: net.Socket, signal?: AbortSignal): Promise<SplicedStreamResult>;
  /** RST to the peer. */
  refuse(): void;
  /** Resolves when the stream ends, accepted or not (a peer's RST while the target connects). */
  readonly result: Promise<SplicedStreamResult>;
}

export interface SplicedMuxSessionOptions extends MuxSessionOptions {
  /** Largest size a stream's pipes grow to (bytes). Default 1 MiB. */
  maxPipeSize?: number;
}


const END_REASONS: SplicedStreamEnd[] = ['finished', 'reset', 'refused', 'error', 'session', 'aborted'];
const OPEN_REFUSALS: Record<string, [MuxErrorCode, string]> = {
  ERR_MUX_SESSION_CLOSED: ['ERR_MUX_SESSION_CLOSED', 'the mux session is closed'],
  ERR_MUX_GOING_AWAY: ['ERR_MUX_GOING_AWAY', 'the mux session is closing: no new streams'],
  ERR_MUX_GOING_AWAY_PEER: ['ERR_MUX_GOING_AWAY', 'the peer sent GoAway: it accepts no new streams'],
  ERR_MUX_TOO_MANY_STREAMS: ['ERR_MUX_TOO_MANY_STREAMS', 'the mux session has reached its limit of open streams (maxStreams)'],
  ERR_MUX_STREAMS_EXHAUSTED: ['ERR_MUX_STREAMS_EXHAUSTED', 'every stream id of this mux session has been used'],
  ERR_MUX_NO_PIPE: ['ERR_MUX_SESSION_CLOSED', 'no pipe for a new stream (out of fds)'],
};

const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([name, value]) => [value, name]));

function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

interface StreamEntry {
  resolve: (r: SplicedStreamResult) => void;
  result: Promise<SplicedStreamResult>;
}

export interface SplicedMuxSessionEvents {
  stream: [stream: IncomingSplicedStream];
  goaway: [code: number];
  error: [err: Error];
  close: [err?: Error];
}

export class SplicedMuxSession extends EventEmitter<SplicedMuxSessionEvents> {
  readonly role: 'client' | 'server';
  private readonly options: ResolvedMuxOptions;
  private readonly native: NativeMuxSession;
  private readonly streams = new Map<number, StreamEntry>();
  private readonly pings: PendingPings;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private goAwaySent = false;
  private remoteGoAway = false;
  private closed = false;
  private failure: Error | undefined;
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;

  /**
   * Takes `socket` (connected, nothing queued to write) over: what Node had read from it goes to
   * the session first; the socket is destroyed on a later tick (the session holds a dup).
   * Throws when spliced sessions are unavailable or the socket has no fd.
   */
  constructor(socket: net.Socket, options: SplicedMuxSessionOptions) {
    super();
    const { maxPipeSize, ...muxOptions } = options;
    this.options = parseMuxOptions(muxOptions);
    this.role = this.options.role;
    this.pings = new PendingPings(this.options.keepaliveTimeout, () => this.native.counts().reads);
    const NativeClass = nativeClass();
    if (!NativeClass) throw new Error(`spliced mux session: ${splicedMuxUnavailable()}`);
    const fd = takeableFd(socket);
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
    const head = takeReadable(socket);
    try {
      this.native = new NativeClass(
        fd,
        head,
        { client: this.role === 'client', maxStreams: this.options.maxStreams, maxWindow: this.options.maxWindow, maxPipeSize },
        this.onEvent,
      );
    } catch (err) {
      giveBack(socket, head);
      throw err;
    }
    setImmediate(destroySocket, socket);
    if (this.options.keepaliveInterval > 0) {
      this.keepaliveTimer = setInterval(() => this.keepalive(), this.options.keepaliveInterval);
      this.keepaliveTimer.unref();
    }
    // A first round trip for the window growth, and as the first keepalive (as MuxSession does).
    this.ping().catch((err: Error) => {
      if (this.options.keepaliveInterval > 0) this.fail(err);
    });
  }

  /** Whether new streams may still be opened or accepted. */
  get open(): boolean {
    return !this.closed;
  }

  /** Whether this side or the peer sent GoAway: no new streams. */
  get goingAway(): boolean {
    return this.goAwaySent || this.remoteGoAway;
  }

  get streamCount(): number {
    return this.streams.size;
  }

  /** Frame and window counters (zeros once closed). */
  counts(): SplicedSessionCounts {
    const { streams, dataFramesIn, dataFramesOut, largestWindow, overflowBytes } = this.native.counts();
    return { streams, dataFramesIn, dataFramesOut, largestWindow, overflowBytes };
  }

  /**
   * Opens a stream carrying `socket` (a connected net.Socket with allowHalfOpen; taken over).
   * Resolves when the stream ends. Rejects with MuxError (ERR_MUX_SESSION_CLOSED,
   * ERR_MUX_GOING_AWAY, ERR_MUX_TOO_MANY_STREAMS...) when no stream could be opened: the socket
   * is then still the caller's.
   */
  async openStream(socket: net.Socket, signal?: AbortSignal): Promise<SplicedStreamResult> {
    this.checkOpen();
    if (unsettled(socket)) await settle(socket);
    this.checkOpen();
    const fd = takeableFd(socket);
    const head = takeReadable(socket);
    let opened: number | string;
    try {
      opened = this.native.open(fd, head);
    } catch (err) {
      giveBack(socket, head);
      throw err;
    }
    if (typeof opened === 'string') {
      giveBack(socket, head);
      const [code, message] = OPEN_REFUSALS[opened] ?? ['ERR_MUX_SESSION_CLOSED', opened];
      throw new MuxError(code, message);
    }
    setImmediate(destroySocket, socket);
    const { result } = this.track(opened);
    if (signal) this.abortOn(signal, opened, result);
    return result;
  }

  /** Sends a ping; resolves with the round trip in ms (rejects as MuxSession.ping() does). */
  ping(): Promise<number> {
    if (this.closed) return Promise.reject(new MuxError('ERR_MUX_SESSION_CLOSED', 'the mux session is closed'));
    const id = this.native.ping();
    return this.pings.wait(id);
  }

  /** GoAway; the open streams finish; resolves once the connection is closed. */
  close(): Promise<void> {
    if (!this.closed && !this.goAwaySent) {
      this.goAwaySent = true;
      this.native.goAway();
    }
    return this.closedPromise;
  }

  /** Ends at once: every stream socket is reset, the connection closed. */
  destroy(err?: Error): void {
    if (this.closed) return;
    this.failure = err;
    this.native.destroy(err ? 'ERR_MUX_DESTROYED' : '', err?.message ?? '');
  }

  whenClosed(): Promise<void> {
    return this.closedPromise;
  }

  // ---- internals ----

  private checkOpen(): void {
    if (this.closed) throw new MuxError('ERR_MUX_SESSION_CLOSED', 'the mux session is closed', this.failure?.message);
    if (this.goAwaySent) throw new MuxError('ERR_MUX_GOING_AWAY', 'the mux session is closing: no new streams');
    if (this.remoteGoAway) throw new MuxError('ERR_MUX_GOING_AWAY', 'the peer sent GoAway: it accepts no new streams');
    if (this.streams.size >= this.options.maxStreams) {
      throw new MuxError('ERR_MUX_TOO_MANY_STREAMS', `the mux session has ${this.streams.size} streams open, its limit (maxStreams)`);
    }
  }

  private track(id: number): StreamEntry {
    let resolve!: (r: SplicedStreamResult) => void;
    const result = new Promise<SplicedStreamResult>((r) => (resolve = r));
    const entry = { resolve, result };
    this.streams.set(id, entry);
    return entry;
  }

  /** Resets stream `id` when `signal` aborts before it ends. */
  private abortOn(signal: AbortSignal, id: number, result: Promise<SplicedStreamResult>): void {
    if (signal.aborted) return this.native.abort(id);
    const onAbort = () => this.native.abort(id);
    signal.addEventListener('abort', onAbort, { once: true });
    void result.then(() => signal.removeEventListener('abort', onAbort));
  }

  private keepalive(): void {
    if (this.pings.size > 0) return;
    this.ping().catch((err: Error) => this.fail(err));
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.failure = err;
    this.native.destroy('ERR_MUX_KEEPALIVE_TIMEOUT', err.message);
  }

  private readonly onEvent = (kind: number, a: number | string, b?: number | string, c?: number, d?: number, e?: number): void => {
    switch (kind) {
      case EVENT.opened:
        return this.onOpened(a as number);
      case EVENT.streamClosed: {
        const entry = this.streams.get(a as number);
        if (!entry) return;
        this.streams.delete(a as number);
        const reason = END_REASONS[b as number] ?? 'error';
        const result: SplicedStreamResult = { bytesUp: d ?? 0, bytesDown: e ?? 0, reason };
        if (reason === 'error' && c) result.code = errnoName(c);
        entry.resolve(result);
        return;
      }
      case EVENT.goaway:
        this.remoteGoAway = true;
        this.emit('goaway', a as number);
        return;
      case EVENT.pong:
        this.pings.answer(a as number, b as number);
        return;
      case EVENT.closed:
        return this.onClosed(a as string, b as string);
    }
  };

  private onOpened(id: number): void {
    const entry = this.track(id);
    if (this.listenerCount('stream') === 0) {
      this.native.abort(id);
      return;
    }
    let decided = false;
    const incoming: IncomingSplicedStream = {
      id,
      result: entry.result,
      accept: (socket: net.Socket, signal?: AbortSignal) => {
        if (decided) throw new Error(`stream ${id} was already accepted or refused`);
        decided = true;
        const fd = socketFd(socket);
        if (!this.streams.has(id) || fd === null) {
          destroyReset(socket);
          if (fd !== null) this.native.abort(id);
          return entry.result;
        }
        const head = takeReadable(socket);
        if (!this.native.attach(id, fd, head)) {
          giveBack(socket, head);
          destroyReset(socket);
          return entry.result;
        }
        setImmediate(destroySocket, socket);
        if (signal) this.abortOn(signal, id, entry.result);
        return entry.result;
      },
      refuse: () => {
        if (decided) return;
        decided = true;
        this.native.abort(id);
      },
    };
    this.emit('stream', incoming);
  }

  private onClosed(code: string, message: string): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.keepaliveTimer);
    let err: Error | undefined;
    if (this.failure) err = this.failure;
    else if (code === 'ERR_MUX_DESTROYED') err = new Error(message);
    else if (code.startsWith('ERR_MUX_PROTOCOL:')) err = new MuxError('ERR_MUX_PROTOCOL', message, code.slice('ERR_MUX_PROTOCOL:'.length));
    else if (code) err = new MuxError(code as MuxErrorCode, message);
    this.failure = err;
    this.pings.rejectAll(err ?? new MuxError('ERR_MUX_SESSION_CLOSED', 'the mux session closed'));
    for (const entry of this.streams.values()) entry.resolve({ bytesUp: 0, bytesDown: 0, reason: 'session' });
    this.streams.clear();
    if (err && this.listenerCount('error') > 0) this.emit('error', err);
    this.resolveClosed();
    this.emit('close', err);
  }
}

function takeableFd(socket: net.Socket): number {
  const why = whyNoFd(socket);
  const fd = socketFd(socket);
  if (why || fd === null || socket.connecting) {
    throw Object.assign(new Error(`cannot splice this socket: ${why ?? 'it has no fd'}`), { code: 'ERR_SPLICE_NO_FD' });
  }
  return fd;
}

// Arguments, not closures: nothing kept for a stream's life holds its socket.
function destroySocket(socket: net.Socket): void {
  socket.destroy();
}

function destroyReset(socket: net.Socket): void {
  if (typeof socket.resetAndDestroy === 'function' && !socket.destroyed && !socket.connecting) socket.resetAndDestroy();
  else socket.destroy();
}
