// A yamux session over one connection (net.Socket, TLS socket, any Duplex): frames in through the
// parser, routed to streams; frames out through one corked write per tick; pings, GoAway, limits.
//
// The session never stops reading its connection: each stream's bytes are bounded by the window
// it granted (more is a protocol error), so memory stays within windows × streams while one
// stalled stream never holds up the frames of another.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { FLAG, FRAME_TYPE, FrameParser, GO_AWAY_CODE, HEADER_SIZE, writeHeader, type FrameHeader, type FrameSink, type FrameType } from './frame.js';
import { MuxError } from './errors.js';
import { MuxStream, type StreamHost } from './stream.js';
import { parseMuxOptions, type MuxSessionOptions, type ResolvedMuxOptions } from './options.js';
import { PendingPings } from './pending-pings.js';

/** Past this many bytes queued on the connection, pings are not answered: a peer that sends pings and never reads cannot grow our memory. */
const PONG_QUEUE_LIMIT = 1024 * 1024;
/** How long a session closed for a protocol error waits for its GoAway to leave before destroying the connection. */
const GOAWAY_FLUSH_MS = 1000;
const MAX_STREAM_ID = 0xffffffff;

export interface MuxSessionEvents {
  /** A stream the peer opened. */
  stream: [stream: MuxStream];
  /** The peer sent GoAway: it accepts no new stream; ours continue. */
  goaway: [code: number];
  /** The session failed (emitted only when someone listens; 'close' always follows). */
  error: [err: MuxError | Error];
  /** The connection is closed and every stream is gone; `err` when it ended in failure. */
  close: [err?: Error];
}

export class MuxSession extends EventEmitter<MuxSessionEvents> implements StreamHost {
  readonly role: 'client' | 'server';
  private readonly options: ResolvedMuxOptions;
  private readonly streams = new Map<number, MuxStream>();
  private readonly parser: FrameParser;
  private nextStreamId: number;
  private corked = false;
  private drainWaiters: (() => void)[] = [];
  private readonly pings: PendingPings;
  private nextPingId = 1;
  private lastRtt: number | undefined;
  /** Reads from the connection so far: any of them proves the peer alive while a ping waits. */
  private chunksReceived = 0;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private goAwaySent = false;
  private remoteGoAway = false;
  private closed = false;
  private failure: Error | undefined;
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;

  constructor(
    private readonly socket: Duplex,
    options: MuxSessionOptions,
  ) {
    super();
    this.options = parseMuxOptions(options);
    this.role = this.options.role;
    this.nextStreamId = this.role === 'client' ? 1 : 2;
    this.parser = new FrameParser(this.options.maxWindow);
    this.pings = new PendingPings(this.options.keepaliveTimeout, () => this.chunksReceived);
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
    if (socket instanceof net.Socket) socket.setNoDelay(true);
    socket.on('data', this.onChunk);
    socket.on('end', this.onEnd);
    socket.on('error', this.onSocketError);
    socket.on('close', this.onSocketClose);
    socket.on('drain', this.onSocketDrain);
    if (socket.destroyed) {
      queueMicrotask(() => this.terminate(new MuxError('ERR_MUX_SESSION_CLOSED', 'the connection was already closed'), 'destroy'));
      return;
    }
    if (this.options.keepaliveInterval > 0) {
      this.keepaliveTimer = setInterval(() => this.keepalive(), this.options.keepaliveInterval);
      this.keepaliveTimer.unref();
    }
    // A first round trip, for the window auto-tuning and as the first keepalive: with keepalive on, a
    // peer that never answers it fails the session after keepaliveTimeout, not a whole interval later.
    this.ping().catch((err: Error) => {
      if (this.options.keepaliveInterval > 0) this.terminate(err, 'destroy');
    });
  }

  /** Whether frames can still be sent. */
  get open(): boolean {
    return !this.closed;
  }

  /** Streams open now (both directions). */
  get streamCount(): number {
    return this.streams.size;
  }

  /**
   * Opens a stream (SYN now; bytes may be written at once, within the initial 256 KiB window).
   * Throws MuxError when the session is closed or closing, the peer sent GoAway, or the stream
   * limit is reached.
   */
  openStream(): MuxStream {
    if (this.closed) throw new MuxError('ERR_MUX_SESSION_CLOSED', 'the mux session is closed', this.failure?.message);
    if (this.goAwaySent) throw new MuxError('ERR_MUX_GOING_AWAY', 'the mux session is closing: no new streams');
    if (this.remoteGoAway) throw new MuxError('ERR_MUX_GOING_AWAY', 'the peer sent GoAway: it accepts no new streams');
    if (this.streams.size >= this.options.maxStreams) {
      throw new MuxError('ERR_MUX_TOO_MANY_STREAMS', `the mux session has ${this.streams.size} streams open, its limit (maxStreams)`);
    }
    if (this.nextStreamId > MAX_STREAM_ID) throw new MuxError('ERR_MUX_STREAMS_EXHAUSTED', 'every stream id of this mux session has been used');
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    const stream = new MuxStream(this, id, this.options.maxWindow);
    this.streams.set(id, stream);
    this.sendFrame(FRAME_TYPE.WINDOW_UPDATE, FLAG.SYN, id, 0);
    return stream;
  }

  /**
   * Sends a ping; resolves with the round trip in ms. Rejects (ERR_MUX_KEEPALIVE_TIMEOUT) when
   * keepaliveTimeout passes with neither the answer nor any other byte from the peer: an answer
   * queued behind a window's worth of data is late, not lost, and a dead peer sends nothing.
   */
  ping(): Promise<number> {
    if (this.closed) return Promise.reject(new MuxError('ERR_MUX_SESSION_CLOSED', 'the mux session is closed'));
    const id = this.nextPingId;
    this.nextPingId = (this.nextPingId + 1) >>> 0 || 1;
    const answered = this.pings.wait(id);
    this.sendFrame(FRAME_TYPE.PING, FLAG.SYN, 0, id);
    return answered;
  }

  /**
   * Graceful close: GoAway, no new streams either way, the open ones finish; then the connection
   * is ended. Resolves when it is closed. destroy() ends it at once.
   */
  close(): Promise<void> {
    if (!this.closed && !this.goAwaySent) {
      this.goAwaySent = true;
      this.sendFrame(FRAME_TYPE.GO_AWAY, 0, 0, GO_AWAY_CODE.NORMAL);
      this.endIfIdle();
    }
    return this.closedPromise;
  }

  /** Closes at once: the connection is destroyed; open streams are destroyed with `err` (none: they just close). */
  destroy(err?: Error): void {
    this.terminate(err, 'destroy');
  }

  /** Resolves when the session is closed, however it ends. */
  whenClosed(): Promise<void> {
    return this.closedPromise;
  }

  // ---- StreamHost ----

  sendFrame(type: FrameType, flags: number, streamId: number, length: number, payload?: Buffer, onWritten?: (err?: Error | null) => void): boolean {
    if (this.closed) return false;
    if (!this.corked) {
      // Every frame of this tick leaves in one writev.
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    const header = Buffer.allocUnsafe(HEADER_SIZE);
    writeHeader(header, 0, type, flags, streamId, length);
    const ok = this.socket.write(header);
    return payload ? this.socket.write(payload, onWritten) : ok;
  }

  onDrain(fn: () => void): void {
    this.drainWaiters.push(fn);
  }

  forget(stream: MuxStream): void {
    if (this.streams.get(stream.id) === stream) {
      this.streams.delete(stream.id);
      if (this.goAwaySent) this.endIfIdle();
    }
  }

  rttMs(): number | undefined {
    return this.lastRtt;
  }

  // ---- connection events ----

  private readonly uncork = () => {
    this.corked = false;
    this.socket.uncork();
  };

  private readonly onSocketDrain = () => {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const fn of waiters) fn();
  };

  private readonly onChunk = (chunk: Buffer) => {
    if (this.closed) return;
    this.chunksReceived++;
    let failure;
    try {
      failure = this.parser.push(chunk, this.sink);
    } catch (err) {
      if (err instanceof MuxError && err.code === 'ERR_MUX_PROTOCOL') return this.protocolError(err);
      throw err;
    }
    if (failure) this.protocolError(new MuxError('ERR_MUX_PROTOCOL', `protocol error from the peer: ${failure.message}`, failure.error));
  };

  private readonly onEnd = () => {
    const clean = this.streams.size === 0 && (this.goAwaySent || this.remoteGoAway);
    // The peer ended the connection in order: a stream it had finished (FIN) keeps what it sent for its reader.
    this.terminate(clean ? undefined : new MuxError('ERR_MUX_SESSION_CLOSED', 'the connection ended while the mux session was open'), 'destroy', true);
  };

  private readonly onSocketError = (err: Error) => {
    this.terminate(new MuxError('ERR_MUX_SESSION_CLOSED', `the connection failed: ${err.message}`), 'destroy');
  };

  private readonly onSocketClose = () => {
    if (!this.closed) {
      const clean = this.streams.size === 0 && (this.goAwaySent || this.remoteGoAway);
      this.terminate(clean ? undefined : new MuxError('ERR_MUX_SESSION_CLOSED', 'the connection closed while the mux session was open'), 'destroy');
    }
    this.resolveClosed();
  };

  // ---- frames in ----

  private readonly sink: FrameSink = {
    onHeader: (h) => this.onHeader(h),
    onPayload: (h, piece) => {
      const stream = this.streams.get(h.streamId);
      // Unknown: a stream we reset or finished; its bytes in flight are dropped.
      if (stream) stream.receive(piece);
    },
    onDataEnd: (h) => {
      if (h.flags & FLAG.FIN) this.streams.get(h.streamId)?.receiveFin();
    },
  };

  private onHeader(h: FrameHeader): void {
    switch (h.type) {
      case FRAME_TYPE.PING:
        return this.onPing(h);
      case FRAME_TYPE.GO_AWAY:
        return this.onGoAway(h.length);
      default:
        return this.onStreamHeader(h);
    }
  }

  private onStreamHeader(h: FrameHeader): void {
    let stream = this.streams.get(h.streamId);
    if (h.flags & FLAG.SYN) {
      if (stream) throw protocolViolation(`stream ${h.streamId} opened twice`, 'ERR_MUX_DUPLICATE_STREAM');
      stream = this.acceptStream(h.streamId);
      if (!stream) return;
    }
    if (!stream) return; // a stream already reset or finished
    if (h.flags & FLAG.RST) return stream.receiveReset(!stream.acknowledged && this.isLocal(stream.id));
    if (h.flags & FLAG.ACK) stream.acknowledged = true;
    if (h.type === FRAME_TYPE.WINDOW_UPDATE) {
      stream.receiveWindowUpdate(h.length);
      if (h.flags & FLAG.FIN) stream.receiveFin();
    }
    // A Data frame's FIN applies after its payload (onDataEnd).
  }

  private acceptStream(id: number): MuxStream | undefined {
    // Ids need not arrive in order: hashicorp/yamux allocates them before its goroutines race to send the SYN.
    if (this.isLocal(id)) throw protocolViolation(`peer opened stream ${id}, an id of our side`, 'ERR_MUX_BAD_STREAM_ID');
    // Refused streams get RST: past the limit, while going away, or with nobody to take them.
    if (this.goAwaySent || this.streams.size >= this.options.maxStreams || this.listenerCount('stream') === 0) {
      this.sendFrame(FRAME_TYPE.WINDOW_UPDATE, FLAG.RST, id, 0);
      return undefined;
    }
    const stream = new MuxStream(this, id, this.options.maxWindow);
    stream.acknowledged = true;
    this.streams.set(id, stream);
    this.sendFrame(FRAME_TYPE.WINDOW_UPDATE, FLAG.ACK, id, 0);
    this.emit('stream', stream);
    return stream;
  }

  private onPing(h: FrameHeader): void {
    if (h.flags & FLAG.SYN) {
      if (this.socket.writableLength < PONG_QUEUE_LIMIT) this.sendFrame(FRAME_TYPE.PING, FLAG.ACK, 0, h.length);
      return;
    }
    if (!(h.flags & FLAG.ACK)) return;
    const rtt = this.pings.answer(h.length);
    if (rtt !== undefined) this.lastRtt = rtt;
  }

  private onGoAway(code: number): void {
    if (code === GO_AWAY_CODE.NORMAL) {
      this.remoteGoAway = true;
      this.emit('goaway', code);
      return;
    }
    const what = code === GO_AWAY_CODE.PROTOCOL_ERROR ? 'a protocol error' : code === GO_AWAY_CODE.INTERNAL_ERROR ? 'an internal error' : `error code ${code}`;
    this.terminate(new MuxError('ERR_MUX_PEER_ERROR', `the peer ended the mux session with ${what}`), 'destroy');
  }

  // ---- ending ----

  private keepalive(): void {
    if (this.pings.size > 0) return; // one outstanding at a time; its timeout does the failing
    this.ping().catch((err: Error) => this.terminate(err, 'destroy'));
  }

  private protocolError(err: MuxError): void {
    this.sendFrame(FRAME_TYPE.GO_AWAY, 0, 0, GO_AWAY_CODE.PROTOCOL_ERROR);
    this.terminate(err, 'flush-then-destroy');
  }

  private endIfIdle(): void {
    if (this.streams.size === 0 && !this.closed) this.terminate(undefined, 'end');
  }

  /**
   * Ends the session once: streams fail, timers stop. The connection is destroyed, or ended (what
   * is queued is sent first; the peer closes its side when it sees the end), or ended with a
   * deadline (after a protocol error the peer may not cooperate).
   */
  private terminate(err: Error | undefined, how: 'destroy' | 'end' | 'flush-then-destroy', peerEndedInOrder = false): void {
    if (this.closed) return;
    this.closed = true;
    this.failure = err;
    clearInterval(this.keepaliveTimer);
    this.pings.rejectAll(err ?? new MuxError('ERR_MUX_SESSION_CLOSED', 'the mux session closed'));
    // Without an error (only destroy() with none leaves streams open here) streams close without one, as HTTP/2's do.
    for (const stream of [...this.streams.values()]) {
      if (peerEndedInOrder) stream.sessionEnded(err);
      else stream.abort(err);
    }
    this.streams.clear();
    this.drainWaiters = [];
    if (this.corked) this.uncork();
    if (how === 'destroy' || this.socket.destroyed) {
      this.socket.destroy();
    } else {
      this.socket.end();
      if (how === 'flush-then-destroy') setTimeout(() => this.socket.destroy(), GOAWAY_FLUSH_MS).unref();
    }
    if (err && this.listenerCount('error') > 0) this.emit('error', err);
    const emitClose = () => this.emit('close', err);
    if (this.socket.closed) {
      this.resolveClosed();
      queueMicrotask(emitClose);
    } else {
      this.socket.once('close', emitClose);
    }
  }

  private isLocal(id: number): boolean {
    return (id % 2 === 1) === (this.role === 'client');
  }
}

function protocolViolation(message: string, detail: string): MuxError {
  return new MuxError('ERR_MUX_PROTOCOL', `protocol error from the peer: ${message}`, detail);
}

/** A yamux session over `socket`; `role` is 'client' on the side that dialled the connection. */
export function createMuxSession(socket: Duplex, options: MuxSessionOptions): MuxSession {
  return new MuxSession(socket, options);
}
