// The machinery every toxic stage shares: a queue of output pieces, each with the
// time it may leave, released in order by one timer. Toxics only decide *when*
// each piece goes (or that it never does); ordering, backpressure, end-of-stream
// and teardown live here once.
import { Transform, type TransformCallback } from 'node:stream';
import { performance } from 'node:perf_hooks';
import type { Rng } from './random.js';

/** How a toxic ends the whole connection; implemented by the relay. */
export interface Link {
  /** Abort both sides now (RST via SO_LINGER 0), dropping anything queued. */
  reset(): void;
  /**
   * Close both sides gracefully. The stage has already ended its own output, so
   * the relay should close once this direction's pipeline has drained: bytes
   * queued in later stages still arrive, as with Toxiproxy's chained stubs.
   */
  close(): void;
}

export interface StageOptions {
  /**
   * Bytes a pacing stage (bandwidth, slicer, stall...) may hold (queued pieces plus unread output)
   * before it stops accepting input: about a TCP window, so the sender feels the pace it is given.
   */
  maxHeldBytes?: number;
  /**
   * Bytes a latency stage may hold. Every chunk is delayed from its own arrival, so the stage holds
   * what arrives during one latency: enough room keeps the pipeline full (throughput is the
   * bandwidth toxic's business, not latency's), and the cap bounds memory when the reader is slow;
   * once it is full the stage stops taking input and TCP backpressure reaches the sender.
   */
  maxDelayedBytes?: number;
}

export const DEFAULT_MAX_HELD_BYTES = 256 * 1024;
export const DEFAULT_MAX_DELAYED_BYTES = 32 * 1024 * 1024;

export interface StageContext {
  rng: Rng;
  link: Link;
  toxicity: number;
  perChunk: boolean;
  options?: StageOptions | undefined;
}

interface Piece {
  due: number;
  data: Buffer;
}

export abstract class TimedStage extends Transform {
  protected readonly rng: Rng;
  protected readonly link: Link;
  protected readonly perChunk: boolean;
  private readonly toxicity: number;
  private readonly limit: number;
  private readonly queue: Piece[] = [];
  private held = 0;
  private lastDue = -Infinity;
  private timer: NodeJS.Timeout | undefined;
  private timerDue = Infinity;
  private readonly actions = new Set<NodeJS.Timeout>();
  private waiting: TransformCallback | undefined;
  private ending: { due: number; cb: TransformCallback } | undefined;
  private closing: (() => void) | undefined;
  private outputEnded = false;
  /** Set by a toxic that must swallow the FIN (reset_peer: the peer sees RST, not FIN). */
  protected holdEnd = false;
  private bypassed = false;

  /** `limit`: the bytes this stage may hold; by default the pacing stages' maxHeldBytes. */
  constructor(ctx: StageContext, limit = ctx.options?.maxHeldBytes ?? DEFAULT_MAX_HELD_BYTES) {
    super();
    this.rng = ctx.rng;
    this.link = ctx.link;
    this.toxicity = ctx.toxicity;
    this.perChunk = ctx.perChunk;
    this.limit = limit;
  }

  /** Bytes held now: queued pieces plus output not yet read by the next stage. */
  get heldBytes(): number {
    return this.held + this.readableLength;
  }

  /** Decide the fate of one input chunk, by calling emitAt zero or more times. */
  protected abstract accept(chunk: Buffer, now: number): void;

  /** Extra time the end of stream waits after the last byte (slow_close). */
  protected endDelay(): number {
    return 0;
  }

  /**
   * Whether this chunk is affected. Per connection the toxicity roll already
   * happened when the stage was built (a failed roll yields a PassThrough).
   */
  protected hit(): boolean {
    return !this.perChunk || this.rng.next() < this.toxicity;
  }

  /**
   * The toxic was removed from a live connection: what this stage holds leaves now, in order,
   * later input passes straight through, and pending actions (a reset, a close) are cancelled.
   * An output already ended (limit_data spent) stays ended.
   */
  bypass(): void {
    if (this.bypassed || this.destroyed) return;
    this.bypassed = true;
    this.holdEnd = false;
    for (const t of this.actions) clearTimeout(t);
    this.actions.clear();
    const now = performance.now();
    for (const piece of this.queue) piece.due = now;
    this.lastDue = now;
    if (this.ending) this.ending.due = now;
    this.pump();
  }

  /** Queue data to leave at `due` (performance.now() ms); never before anything queued earlier. */
  protected emitAt(data: Buffer, due: number): void {
    if (data.length === 0) return;
    this.lastDue = Math.max(due, this.lastDue);
    this.queue.push({ due: this.lastDue, data });
    this.held += data.length;
  }

  /** Run fn after ms; cancelled on destroy so a torn-down connection leaves no timers. */
  protected after(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.actions.delete(t);
      if (!this.destroyed) fn();
    }, ms);
    this.actions.add(t);
  }

  /** End this stage's output once queued data has left, then run then(); later input is dropped. */
  protected endOutput(then: () => void): void {
    if (this.closing || this.outputEnded) return;
    this.closing = then;
    this.pump();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, cb: TransformCallback): void {
    if (this.closing || this.outputEnded) {
      cb();
      return;
    }
    try {
      if (this.bypassed) this.emitAt(chunk, performance.now());
      else this.accept(chunk, performance.now());
    } catch (err) {
      cb(err as Error);
      return;
    }
    this.pump();
    // Take the next chunk now unless the cap is reached; otherwise the write
    // callback waits for pump() or _read() to make room.
    if (this.hasRoom()) cb();
    else this.waiting = cb;
  }

  override _flush(cb: TransformCallback): void {
    this.ending = { due: Math.max(performance.now() + (this.bypassed ? 0 : this.endDelay()), this.lastDue), cb };
    this.pump();
  }

  override _read(size: number): void {
    // The reader asked for more, so its buffer no longer counts against us
    // (readableLength still includes the bytes being read right now; waiting for
    // it to drop could deadlock, as _read is not called again until a push).
    // Then super._read hands Transform its own parked callback, if our cb()
    // just parked one because the readable side looked full.
    if (this.waiting && (this.outputEnded || this.held < this.limit)) {
      const cb = this.waiting;
      this.waiting = undefined;
      cb();
    }
    super._read(size);
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const t of this.actions) clearTimeout(t);
    this.actions.clear();
    this.queue.length = 0;
    this.held = 0;
    this.waiting = undefined;
    this.ending = undefined;
    cb(err);
  }

  private hasRoom(): boolean {
    return this.outputEnded || this.held + this.readableLength < this.limit;
  }

  private pump(): void {
    if (this.destroyed) return;
    const now = performance.now();
    const q = this.queue;
    while (q.length > 0 && q[0]!.due <= now) {
      const piece = q.shift()!;
      this.held -= piece.data.length;
      if (!this.outputEnded) this.push(piece.data);
    }
    if (q.length === 0 && this.closing && !this.outputEnded) {
      const then = this.closing;
      this.outputEnded = true;
      this.push(null);
      then();
    }
    if (q.length === 0 && this.ending && !this.holdEnd && this.ending.due <= now) {
      const cb = this.ending.cb;
      this.ending = undefined;
      cb();
    }
    this.arm(now);
    // Last: the callback may synchronously feed the next chunk, re-entering pump.
    this.release();
  }

  private arm(now: number): void {
    const next = this.queue.length > 0 ? this.queue[0]!.due : this.ending && !this.holdEnd ? this.ending.due : Infinity;
    if (next === this.timerDue && this.timer) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerDue = next;
    if (next === Infinity) return;
    // Timers may fire a little early against performance.now(); pump() then
    // re-arms for the rest, so nothing ever leaves before its due time.
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerDue = Infinity;
      this.pump();
    }, Math.max(0, Math.ceil(next - now)));
  }

  private release(): void {
    if (this.waiting && this.hasRoom()) {
      const cb = this.waiting;
      this.waiting = undefined;
      cb();
    }
  }
}
