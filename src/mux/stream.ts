// One yamux stream as a Node Duplex: its two windows, its half-closes and its reset.
//
// Receive side: the peer may send `recvCredit` more bytes. Arriving payload waits in `queue` until
// the reader asks (_read); credit is given back only for bytes handed to the reader, so a reader
// that stops stalls its own stream and nothing else, and the stream holds at most its window
// plus the readable high-water mark. More payload than the credit is the peer's protocol error.
//
// Send side: a write goes out as Data frames of at most `sendWindow` bytes (views of the written
// chunk); what the window does not allow waits, with its callback, for a WindowUpdate, which is
// the backpressure the writer sees. A full connection (the session's write returned false) holds
// the callback until it drains.
import { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { FLAG, FRAME_TYPE, INITIAL_WINDOW, type FrameType } from './frame.js';
import { MuxError } from './errors.js';

/** What a stream needs from its session. */
export interface StreamHost {
  /**
   * Writes one frame; false when the connection's buffer is full (wait for onDrain). `onWritten`
   * runs once the connection has written the payload (the writer may then reuse its buffer).
   */
  sendFrame(type: FrameType, flags: number, streamId: number, length: number, payload?: Buffer, onWritten?: (err?: Error | null) => void): boolean;
  /** Calls `fn` once when the connection's buffer has drained. */
  onDrain(fn: () => void): void;
  /** The stream's protocol life is over (FIN both ways, or reset): frames for its id are ignored from now on. */
  forget(stream: MuxStream): void;
  /** The last measured round-trip time in ms, if any. */
  rttMs(): number | undefined;
  /** Whether frames can still be sent. */
  readonly open: boolean;
}

/** The largest Data frame sent: streams sharing a connection take turns at this grain. */
export const MAX_DATA_FRAME = 64 * 1024;

const READABLE_HIGH_WATER_MARK = 64 * 1024;
/** A WindowUpdate is sent once this fraction of the window has been read (1/4). */
const UPDATE_FRACTION = 4;
/** Where small received pieces are copied to, so they pin no read buffer of the connection. */
const SPARE_BLOCK = 16 * 1024;

export class MuxStream extends Duplex {
  // Receive side.
  private readonly queue: Buffer[] = [];
  private queuedBytes = 0;
  private recvCredit = INITIAL_WINDOW;
  private spare: Buffer | undefined;
  private spareUsed = 0;
  private recvWindow = INITIAL_WINDOW;
  private lastUpdateAt = 0;
  private wantRead = false;
  private draining = false;
  private remoteFin = false;
  private endPushed = false;

  // Send side.
  private sendWindow = INITIAL_WINDOW;
  private pendingChunk: Buffer | undefined;
  private pendingCallback: ((err?: Error | null) => void) | undefined;
  private waitingForDrain = false;
  private localFin = false;

  /** The peer accepted it (ACK), or the peer opened it. A RST before that is a refusal. */
  acknowledged = false;

  /** Reset sent or received, or the session ended: nothing more goes on the wire for this stream. */
  private done = false;
  /** The session ended in order after the peer's FIN: writes fail with this; reading goes on. */
  private orphaned: Error | undefined;

  constructor(
    private readonly host: StreamHost,
    /** The yamux stream id: odd when the client side opened it, even for the server side. */
    readonly id: number,
    private readonly maxWindow: number,
  ) {
    super({ readableHighWaterMark: READABLE_HIGH_WATER_MARK, allowHalfOpen: true, decodeStrings: true });
  }

  /** Bytes received and not yet read: waiting for credit to be given back, plus Node's readable buffer. */
  get receiveBuffered(): number {
    return this.queuedBytes + this.readableLength;
  }

  /** The receive window this stream grants now (it grows from 256 KiB up to the session's maximum). */
  get receiveWindow(): number {
    return this.recvWindow;
  }

  // ---- from the session ----

  /** Payload for this stream. Throws MuxError (the session's protocol error) past the credit given. */
  receive(piece: Buffer): void {
    if (piece.length > this.recvCredit) {
      throw new MuxError('ERR_MUX_PROTOCOL', `stream ${this.id}: peer sent past its window (${this.recvCredit} bytes left)`, 'ERR_MUX_WINDOW_EXCEEDED');
    }
    this.recvCredit -= piece.length;
    if (this.destroyed || this.remoteFin) return; // reset by us, or data after FIN: drop it
    // A small piece is a view that keeps the connection's whole read buffer (64 KiB) alive: a
    // peer sending tiny frames to a stalled stream would pin 64 KiB per byte of window. Copied,
    // what a stream holds stays within twice its bytes.
    if (piece.length * 2 < piece.buffer.byteLength) piece = this.compact(piece);
    this.queue.push(piece);
    this.queuedBytes += piece.length;
    if (this.wantRead) this.drainQueue();
  }

  /** The peer's FIN: our readable side ends once what came before it is read. */
  receiveFin(): void {
    if (this.remoteFin) return;
    this.remoteFin = true;
    this.drainQueue();
    this.forgetIfFinished();
  }

  /** The peer's RST, or a refusal of our SYN. */
  receiveReset(refused: boolean): void {
    if (this.done) return;
    this.done = true;
    this.host.forget(this);
    this.destroy(
      refused
        ? new MuxError('ECONNREFUSED', `stream ${this.id} refused by the peer`)
        : new MuxError('ECONNRESET', `stream ${this.id} reset by the peer`),
    );
  }

  receiveWindowUpdate(delta: number): void {
    this.sendWindow += delta;
    if (this.pendingChunk && !this.waitingForDrain) this.flush();
  }

  /** The session is gone: fail without sending anything. */
  abort(err: Error | undefined): void {
    this.done = true;
    this.destroy(err);
  }

  /**
   * The peer ended the connection in order (a clean EOF). A stream it had finished (FIN) still
   * hands its reader every byte that came before the FIN, as a TCP socket does after its peer
   * closed; only writing fails from now on. Any other stream fails as with abort().
   */
  sessionEnded(err: Error | undefined): void {
    if (!this.remoteFin || this.pendingChunk || this.destroyed) return this.abort(err);
    this.done = true;
    this.orphaned = err ?? new MuxError('ERR_MUX_SESSION_CLOSED', `stream ${this.id}: the mux session is closed`);
  }

  // ---- Duplex ----

  override _read(): void {
    this.wantRead = true;
    this.drainQueue();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.orphaned) return callback(this.orphaned);
    if (chunk.length === 0) return callback();
    this.pendingChunk = chunk;
    this.pendingCallback = callback;
    this.flush();
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (!this.done && this.host.open) {
      this.localFin = true;
      this.host.sendFrame(FRAME_TYPE.WINDOW_UPDATE, FLAG.FIN, this.id, 0);
      this.forgetIfFinished();
    }
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    // Anything short of FIN both ways is a reset, as a TCP socket closed with a direction still open.
    if (!this.done && !(this.localFin && this.remoteFin)) {
      this.done = true;
      if (this.host.open) this.host.sendFrame(FRAME_TYPE.WINDOW_UPDATE, FLAG.RST, this.id, 0);
    }
    this.host.forget(this);
    this.queue.length = 0;
    this.queuedBytes = 0;
    const pending = this.pendingCallback;
    this.pendingChunk = undefined;
    this.pendingCallback = undefined;
    callback(err);
    if (pending) pending(err ?? new MuxError('ERR_MUX_SESSION_CLOSED', `stream ${this.id} destroyed`));
  }

  // ---- internals ----

  private flush(): void {
    if (this.done || !this.host.open) return;
    let chunk = this.pendingChunk;
    while (chunk && chunk.length > 0 && this.sendWindow > 0 && !this.waitingForDrain) {
      const n = Math.min(chunk.length, this.sendWindow, MAX_DATA_FRAME);
      const last = n === chunk.length;
      const piece = last ? chunk : chunk.subarray(0, n);
      chunk = last ? undefined : chunk.subarray(n);
      this.sendWindow -= n;
      // The write's callback waits until the connection has written the chunk's last frame: the
      // frames are views of the writer's buffer, which it may reuse after the callback.
      const callback = this.pendingCallback;
      const onWritten = last && callback ? () => this.writeDone(callback) : undefined;
      if (!this.host.sendFrame(FRAME_TYPE.DATA, 0, this.id, n, piece, onWritten)) {
        this.waitingForDrain = true;
        this.host.onDrain(() => {
          this.waitingForDrain = false;
          this.flush();
        });
      }
    }
    this.pendingChunk = chunk;
  }

  private writeDone(callback: (err?: Error | null) => void): void {
    // Not when _destroy already failed it.
    if (this.pendingCallback !== callback) return;
    this.pendingCallback = undefined;
    callback();
  }

  /** `piece` copied into this stream's own spare block (small pieces) or its own buffer. */
  private compact(piece: Buffer): Buffer {
    if (piece.length >= SPARE_BLOCK / 2) {
      // Not Buffer.from(piece): that copies element by element; this is one memcpy into memory left unfilled.
      const own = Buffer.allocUnsafeSlow(piece.length);
      piece.copy(own);
      return own;
    }
    if (!this.spare || this.spareUsed + piece.length > this.spare.length) {
      this.spare = Buffer.allocUnsafeSlow(SPARE_BLOCK);
      this.spareUsed = 0;
    }
    const at = this.spareUsed;
    piece.copy(this.spare, at);
    this.spareUsed += piece.length;
    return this.spare.subarray(at, at + piece.length);
  }

  private drainQueue(): void {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.wantRead && this.queue.length > 0) {
        const chunk = this.queue.shift()!;
        this.queuedBytes -= chunk.length;
        this.wantRead = this.push(chunk);
      }
      if (this.queue.length === 0 && this.remoteFin && !this.endPushed) {
        this.endPushed = true;
        this.push(null);
      }
    } finally {
      this.draining = false;
    }
    this.giveCredit();
  }

  /**
   * Sends a WindowUpdate once a quarter of the window has been read. hashicorp/yamux waits for
   * half; a quarter keeps the sender's credit between three quarters and all of the window, not
   * between a half and all, which is a quarter more throughput where the window is the limit (a
   * long round trip), for one 12-byte frame more per window.
   *
   * The window doubles (up to the maximum) when the reader keeps up with it: when what was read
   * since the last update came at more than the window per 8 round trips. Then the window, not
   * the reader, limits the stream (the auto-tuning of HTTP/2 and QUIC implementations and of
   * libp2p's yamux). With an update every quarter window, a stream at a long round trip grows
   * through several doublings per round trip instead of one. How fast it grows does not change
   * what it may hold: never more than the maximum window, and only after its reader kept up.
   */
  private giveCredit(): void {
    if (this.done || this.remoteFin || !this.host.open) return;
    let delta = this.recvWindow - this.queuedBytes - this.recvCredit;
    if (delta < this.recvWindow / UPDATE_FRACTION) return;
    const now = performance.now();
    const rtt = this.host.rttMs();
    const keptUp = this.lastUpdateAt > 0 && rtt !== undefined && (now - this.lastUpdateAt) * this.recvWindow < delta * 8 * rtt;
    if (this.recvWindow < this.maxWindow && keptUp) {
      const grown = Math.min(this.recvWindow * 2, this.maxWindow);
      delta += grown - this.recvWindow;
      this.recvWindow = grown;
    }
    this.lastUpdateAt = now;
    this.recvCredit += delta;
    this.host.sendFrame(FRAME_TYPE.WINDOW_UPDATE, 0, this.id, delta);
  }

  private forgetIfFinished(): void {
    if (this.localFin && this.remoteFin && !this.done) {
      this.done = true;
      this.host.forget(this);
    }
  }
}
