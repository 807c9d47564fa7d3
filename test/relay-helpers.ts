// Shared helpers for the relay fault-layer tests: pure streams, real timers.
import { performance } from 'node:perf_hooks';
import type { Readable, Transform } from 'node:stream';
import { createRng } from '../src/relay/random.js';
import { createToxicStage } from '../src/relay/stages.js';
import type { Link, StageOptions } from '../src/relay/timed-stage.js';
import { parseToxic, type ToxicInput } from '../src/relay/toxics.js';

// Timers fire late under load; upper bounds get slack.
export const SLACK = 60;

/**
 * How early a timer may seem to fire: Node schedules timers on a millisecond clock read once per
 * loop turn, so one can run up to 1 ms before performance.now() says its delay is up. Lower bounds
 * measured with performance.now() allow for it.
 */
export const EARLY = 1;

/** n chunks of `size` bytes, chunk i filled with i + 1, so order is visible in the output. */
export const tagged = (n: number, size = 8) => Array.from({ length: n }, (_, i) => Buffer.alloc(size, i + 1));

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface SpyLink extends Link {
  resets: number[];
  closes: number[];
  /** When reset() was first called: await it instead of sleeping past the expected time. */
  firstReset: Promise<number>;
  /** When close() was first called. */
  firstClose: Promise<number>;
}

export function spyLink(): SpyLink {
  const resets: number[] = [];
  const closes: number[] = [];
  let onReset!: (t: number) => void;
  let onClose!: (t: number) => void;
  const firstReset = new Promise<number>((resolve) => (onReset = resolve));
  const firstClose = new Promise<number>((resolve) => (onClose = resolve));
  return {
    resets,
    closes,
    firstReset,
    firstClose,
    reset: () => {
      resets.push(performance.now());
      onReset(resets[0]!);
    },
    close: () => {
      closes.push(performance.now());
      onClose(closes[0]!);
    },
  };
}

export function makeStage(input: ToxicInput, opts: { seed?: number; link?: Link; options?: StageOptions } = {}): Transform {
  const rng = createRng(opts.seed ?? 1).fork('test');
  return createToxicStage(parseToxic(input), rng, opts.link ?? spyLink(), opts.options);
}

/** Records every 'data' event with its arrival time, and when 'end' came. */
export function watch(s: Readable) {
  const events: { t: number; data: Buffer }[] = [];
  let endAt = -1;
  const ended = new Promise<number>((resolve, reject) => {
    s.on('end', () => resolve((endAt = performance.now())));
    s.on('error', reject);
  });
  s.on('data', (d: Buffer) => events.push({ t: performance.now(), data: d }));
  return {
    events,
    ended,
    endAt: () => endAt,
    bytes: () => Buffer.concat(events.map((e) => e.data)),
    /** Arrival time of the byte at offset `at` of the output. */
    arrivalOf(at: number): number {
      let pos = 0;
      for (const e of events) {
        if (at < pos + e.data.length) return e.t;
        pos += e.data.length;
      }
      return Infinity;
    },
  };
}

/** Writes chunks `gapMs` apart and returns the time each write was issued. */
export async function writeSpaced(s: Transform, chunks: Buffer[], gapMs: number): Promise<number[]> {
  const times: number[] = [];
  for (const [i, c] of chunks.entries()) {
    if (i > 0 && gapMs > 0) await sleep(gapMs);
    times.push(performance.now());
    s.write(c);
  }
  return times;
}

/** Deterministic pseudo-random bytes, so failures reproduce. */
export function noise(n: number, seed = 99): Buffer {
  const rng = createRng(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = rng.int(256);
  return b;
}

export function popcount(b: number): number {
  let n = 0;
  for (; b; b &= b - 1) n++;
  return n;
}

export function countTimers(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}
