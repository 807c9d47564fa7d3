// One Transform per toxic. Each class only decides when (and whether) bytes
// leave; TimedStage keeps order, bounds memory and handles end and teardown.
//
// Reproducibility: decisions tied to byte positions (bitflip, slicer cut points,
// stall offset) repeat exactly for the same seed and the same bytes, however TCP
// chunks them. Per-chunk decisions (jitter, perChunk rolls) repeat when the chunk
// boundaries repeat.
import { PassThrough, type Transform } from 'node:stream';
import type { Rng } from './random.js';
import { DEFAULT_MAX_DELAYED_BYTES, TimedStage, type Link, type StageContext, type StageOptions } from './timed-stage.js';
import type { Toxic, ToxicOf } from './toxics.js';

type Attrs<T extends Toxic['type']> = ToxicOf<T>['attributes'];

class LatencyStage extends TimedStage {
  constructor(ctx: StageContext, private readonly a: Attrs<'latency'>) {
    super(ctx, ctx.options?.maxDelayedBytes ?? DEFAULT_MAX_DELAYED_BYTES);
  }
  protected accept(chunk: Buffer, now: number): void {
    let delay = 0;
    if (this.hit()) {
      const j = this.a.jitter;
      delay = Math.max(0, this.a.latency + (j > 0 ? (this.rng.next() * 2 - 1) * j : 0));
    }
    // emitAt never lets a chunk overtake an earlier one, so a short jitter
    // draw waits for its predecessor (never beyond its own latency + jitter).
    this.emitAt(chunk, now + delay);
  }
}

class BandwidthStage extends TimedStage {
  private cursor = -Infinity;
  constructor(ctx: StageContext, private readonly a: Attrs<'bandwidth'>) {
    super(ctx);
  }
  protected accept(chunk: Buffer, now: number): void {
    const rate = this.a.rate; // KB/s with 1 KB = 1000 B is exactly bytes per ms
    if (rate <= 0 || !this.hit()) return this.emitAt(chunk, now);
    // Idle time earns no burst credit, as Toxiproxy. Pieces of 100 ms worth
    // (Toxiproxy's granularity) keep a slow link trickling rather than lurching.
    let t = Math.max(now, this.cursor);
    const piece = rate * 100;
    for (let off = 0; off < chunk.length; off += piece) {
      const part = chunk.subarray(off, off + piece);
      t += part.length / rate;
      this.emitAt(part, t);
    }
    this.cursor = t;
  }
}

class SlicerStage extends TimedStage {
  private offset = 0;
  private nextCut = -1;
  private lastPiece = -Infinity;
  constructor(ctx: StageContext, private readonly a: Attrs<'slicer'>) {
    super(ctx);
  }
  private size(): number {
    const v = this.a.size_variation;
    return Math.max(1, this.a.average_size + (v > 0 ? this.rng.int(2 * v + 1) - v : 0));
  }
  protected accept(chunk: Buffer, now: number): void {
    // Cut points live on the stream's byte offsets, not per chunk, so the same
    // seed slices the same bytes identically whatever the input chunking; a
    // piece is only cut short where an input chunk ends (data is never held
    // back waiting for more).
    if (this.nextCut < 0) this.nextCut = this.size();
    const end = this.offset + chunk.length;
    const cuts: number[] = [];
    while (this.nextCut < end) {
      cuts.push(this.nextCut - this.offset);
      this.nextCut += this.size();
    }
    this.offset = end;
    if (!this.hit()) return this.emitAt(chunk, now);
    const gap = this.a.delay / 1000;
    let start = 0;
    for (const cut of [...cuts, chunk.length]) {
      if (cut <= start) continue;
      // Toxiproxy sleeps `delay` after every piece, so the gap also separates
      // the last piece of one chunk from the first of the next.
      this.lastPiece = Math.max(now, this.lastPiece + gap);
      this.emitAt(chunk.subarray(start, cut), this.lastPiece);
      start = cut;
    }
  }
}

class LimitDataStage extends TimedStage {
  private passed = 0;
  constructor(ctx: StageContext, private readonly a: Attrs<'limit_data'>) {
    super(ctx);
  }
  protected accept(chunk: Buffer, now: number): void {
    const left = this.a.bytes - this.passed;
    const part = chunk.length > left ? chunk.subarray(0, left) : chunk;
    this.passed += part.length;
    this.emitAt(part, now);
    // As Toxiproxy: close as soon as the budget is spent, not at the next write.
    if (this.passed >= this.a.bytes) this.endOutput(() => this.link.close());
  }
}

class TimeoutStage extends TimedStage {
  private active = false;
  constructor(ctx: StageContext, private readonly a: Attrs<'timeout'>) {
    super(ctx);
    // Per connection the timer starts with the connection, as Toxiproxy's
    // Pipe does; per chunk it starts with the first chunk whose roll succeeds.
    if (!this.perChunk) this.activate();
  }
  private activate(): void {
    this.active = true;
    if (this.a.timeout > 0) this.after(this.a.timeout, () => this.endOutput(() => this.link.close()));
  }
  protected accept(chunk: Buffer, now: number): void {
    if (!this.active && this.hit()) this.activate();
    if (!this.active) this.emitAt(chunk, now);
    // Active: the data is dropped on the floor, as Toxiproxy.
  }
}

class ResetPeerStage extends TimedStage {
  private triggered = false;
  constructor(ctx: StageContext, private readonly a: Attrs<'reset_peer'>) {
    super(ctx);
  }
  protected accept(chunk: Buffer, now: number): void {
    // Toxiproxy arms the reset on the first data and forwards nothing after it;
    // the FIN is held too, so the peer's first sign of trouble is the RST.
    if (!this.triggered && this.hit()) {
      this.triggered = true;
      this.holdEnd = true;
      this.after(this.a.timeout, () => this.link.reset());
    }
    if (!this.triggered) this.emitAt(chunk, now);
  }
}

class SlowCloseStage extends TimedStage {
  constructor(ctx: StageContext, private readonly a: Attrs<'slow_close'>) {
    super(ctx);
  }
  protected accept(chunk: Buffer, now: number): void {
    this.emitAt(chunk, now);
  }
  protected override endDelay(): number {
    return this.a.delay;
  }
}

class BitflipStage extends TimedStage {
  private gap = -1; // bytes to skip before the next corrupted one
  constructor(ctx: StageContext, private readonly a: Attrs<'bitflip'>) {
    super(ctx);
  }
  // Geometric skip: the same distribution as one Bernoulli(rate) trial per byte,
  // but one random draw per corrupted byte instead of per byte.
  private draw(): number {
    const r = this.a.rate;
    if (r <= 0) return Infinity;
    if (r >= 1) return 0;
    return Math.floor(Math.log(1 - this.rng.next()) / Math.log(1 - r));
  }
  protected accept(chunk: Buffer, now: number): void {
    if (!this.hit()) return this.emitAt(chunk, now);
    if (this.gap < 0) this.gap = this.draw();
    let out = chunk;
    let i = this.gap;
    while (i < chunk.length) {
      if (out === chunk) out = Buffer.from(chunk); // the writer may reuse its buffer
      out[i] ^= 1 << this.rng.int(8);
      i += 1 + this.draw();
    }
    this.gap = i - chunk.length;
    this.emitAt(out, now);
  }
}

class StallStage extends TimedStage {
  private offset = 0;
  private fired = false;
  constructor(ctx: StageContext, private readonly a: Attrs<'stall'>) {
    super(ctx);
  }
  protected accept(chunk: Buffer, now: number): void {
    const k = Math.max(0, Math.min(chunk.length, this.a.after - this.offset));
    this.offset += chunk.length;
    this.emitAt(chunk.subarray(0, k), now);
    if (k === chunk.length) return;
    const stall = this.perChunk ? this.hit() : !this.fired;
    this.fired = true;
    // Later chunks queue behind this one (emitAt keeps order): delivery pauses.
    this.emitAt(chunk.subarray(k), stall ? now + this.a.duration : now);
  }
}

/**
 * The stage for one toxic on one connection and direction. `rng` should be that
 * toxic's own stream (relay.ts forks one per toxic name) so that its decisions don't
 * depend on other toxics or connections. When the per-connection toxicity roll
 * fails the result is a plain PassThrough.
 */
export function createToxicStage(toxic: Toxic, rng: Rng, link: Link, options?: StageOptions): Transform {
  const perChunk = toxic.perChunk === true;
  if (!perChunk && !(rng.next() < toxic.toxicity)) return new PassThrough();
  const ctx: StageContext = { rng, link, toxicity: toxic.toxicity, perChunk, options };
  switch (toxic.type) {
    case 'latency':
      return new LatencyStage(ctx, toxic.attributes);
    case 'bandwidth':
      return new BandwidthStage(ctx, toxic.attributes);
    case 'slicer':
      return new SlicerStage(ctx, toxic.attributes);
    case 'limit_data':
      return new LimitDataStage(ctx, toxic.attributes);
    case 'timeout':
      return new TimeoutStage(ctx, toxic.attributes);
    case 'reset_peer':
      return new ResetPeerStage(ctx, toxic.attributes);
    case 'slow_close':
      return new SlowCloseStage(ctx, toxic.attributes);
    case 'bitflip':
      return new BitflipStage(ctx, toxic.attributes);
    case 'stall':
      return new StallStage(ctx, toxic.attributes);
    case 'noop':
      return new PassThrough();
  }
}
