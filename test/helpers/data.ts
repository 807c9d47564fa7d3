// Test data and its checks: seeded streams written in random sizes, and what a reader received,
// hashed or collected.
import type net from 'node:net';
import { createHash, type Hash } from 'node:crypto';

export const KiB = 1024;
export const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------
// Data: seeded, cheap to generate, random write sizes.

/** xorshift32: fast, seeded, good enough for sizes and test data. */
export function prng(seed: number): () => number {
  let x = (seed ^ 0x9e3779b9) >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

const BLOCK = (() => {
  const next = prng(12345);
  const block = Buffer.allocUnsafe(MiB);
  for (let i = 0; i < MiB; i += 4) block.writeUInt32LE(Math.floor(next() * 0x1_0000_0000), i);
  return block;
})();

/** Where a segment's (seed, segment number) stamp lies: its first 8 bytes. */
const STAMP = 8;

/**
 * A byte stream of `total` bytes: 1 MiB segments, each the random block rotated by an offset that
 * depends on the seed and the segment number, with (seed, segment) stamped at its start, so a lost,
 * repeated or reordered segment changes the hash.
 *
 * Every stream reads the one shared block through views instead of building its segments: a fresh
 * 1 MiB per segment and stream held the event loop for most of a second when 200 writers started
 * at once. Only a chunk that holds the stamp or wraps around the block's end is copied.
 */
export class PatternSource {
  private segmentNo = -1;
  private rotation = 0;
  private readonly stamp = Buffer.alloc(STAMP);
  private pos = MiB;
  private produced = 0;

  constructor(
    private readonly seed: number,
    readonly total: number,
  ) {}

  get remaining(): number {
    return this.total - this.produced;
  }

  /**
   * Up to `max` bytes, or null at the end. The chunk may be a view of the block every stream
   * shares: hand it to write(), never write into it.
   */
  next(max: number): Buffer | null {
    if (this.remaining <= 0) return null;
    if (this.pos >= MiB) this.newSegment();
    const n = Math.min(max, MiB - this.pos, this.remaining);
    const chunk = this.bytes(this.pos, n);
    this.pos += n;
    this.produced += n;
    return chunk;
  }

  private newSegment(): void {
    this.segmentNo++;
    const rot = (Math.imul(this.seed + 1, 2654435761) + Math.imul(this.segmentNo, 40503)) >>> 0;
    this.rotation = rot % MiB;
    this.stamp.writeUInt32LE(this.seed >>> 0, 0);
    this.stamp.writeUInt32LE(this.segmentNo, 4);
    this.pos = 0;
  }

  /** Bytes [from, from + n) of the current segment, whose byte i is BLOCK[(rotation + i) % MiB] past the stamp. */
  private bytes(from: number, n: number): Buffer {
    const start = (this.rotation + from) % MiB;
    if (from >= STAMP && start + n <= MiB) return BLOCK.subarray(start, start + n);
    const chunk = Buffer.allocUnsafe(n);
    const first = Math.min(n, MiB - start);
    BLOCK.copy(chunk, 0, start, start + first);
    BLOCK.copy(chunk, first, 0, n - first);
    if (from < STAMP) this.stamp.copy(chunk, 0, from, Math.min(STAMP, from + n));
    return chunk;
  }
}

/** The whole stream a PatternSource(seed, total) produces, as one Buffer (for small sizes). */
export function patternBytes(seed: number, total: number): Buffer {
  const src = new PatternSource(seed, total);
  const parts: Buffer[] = [];
  for (let c = src.next(total); c; c = src.next(total)) parts.push(c);
  return Buffer.concat(parts);
}

export const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

/** Write sizes between 1 B and 256 KiB, log-uniform (many small writes, some large ones). */
export function randomWriteSize(next: () => number): number {
  return Math.max(1, Math.floor(Math.exp(next() * Math.log(256 * KiB + 1))));
}

export interface Sent {
  bytes: number;
  sha: string;
}

/** Resolves on 'drain'; rejects if the socket closes or errors first. */
function drained(socket: net.Socket): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      socket.off('error', onError);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(new Error('socket closed while writing'));
    const onError = (err: Error) => done(err);
    socket.on('drain', onDrain);
    socket.on('close', onClose);
    socket.on('error', onError);
  });
}

/**
 * Writes `total` bytes from PatternSource(seed) in random sizes (1 B .. 256 KiB), waiting for 'drain'
 * whenever write() says so; then end()s unless `end: false`. Returns what was written and its hash.
 * `stop()` in options ends the loop early (for endless sources).
 */
export async function writeRandom(
  socket: net.Socket,
  seed: number,
  total: number,
  opts: { end?: boolean; stop?: () => boolean; onWrite?: (n: number) => void } = {},
): Promise<Sent> {
  const src = new PatternSource(seed, total);
  const sizes = prng(seed ^ 0x5bd1e995);
  const hash = createHash('sha256');
  let bytes = 0;
  for (;;) {
    if (opts.stop?.()) break;
    if (socket.destroyed || socket.writableEnded) throw new Error('socket gone while writing');
    const chunk = src.next(randomWriteSize(sizes));
    if (!chunk) break;
    hash.update(chunk);
    bytes += chunk.length;
    opts.onWrite?.(chunk.length);
    if (!socket.write(chunk)) await drained(socket);
  }
  if (opts.end !== false) socket.end();
  return { bytes, sha: hash.digest('hex') };
}

/** Writes `data` in random slices (1 B .. 256 KiB), respecting backpressure; end()s unless `end: false`. */
export async function writeBuffer(socket: net.Socket, data: Buffer, opts: { end?: boolean; seed?: number } = {}): Promise<void> {
  const sizes = prng(opts.seed ?? data.length);
  for (let pos = 0; pos < data.length; ) {
    if (socket.destroyed || socket.writableEnded) throw new Error('socket gone while writing');
    const n = Math.min(randomWriteSize(sizes), data.length - pos);
    const ok = socket.write(data.subarray(pos, pos + n));
    pos += n;
    if (!ok) await drained(socket);
  }
  if (opts.end !== false) socket.end();
}

export interface Received {
  bytes: number;
  sha: string;
}

/**
 * A promise a test may await late (after other awaits that can throw): its rejection is marked
 * handled so a test that already failed does not also report an unhandled rejection.
 */
function awaitedLater<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/** Hashes everything the socket delivers (resuming it); resolves at 'end', rejects on error or close without 'end'. */
export function hashUntilEnd(socket: net.Socket): Promise<Received> {
  const hash: Hash = createHash('sha256');
  let bytes = 0;
  const p = new Promise<Received>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      hash.update(chunk);
    });
    socket.once('end', () => resolve({ bytes, sha: hash.digest('hex') }));
    socket.once('error', (err) => reject(err));
    socket.once('close', () => reject(new Error(`closed without 'end' after ${bytes} bytes`)));
  });
  socket.resume(); // a 'data' listener does not restart a socket that was explicitly paused
  return awaitedLater(p);
}

/** Collects everything until 'end' (small transfers only), resuming the socket. */
export function collectUntilEnd(socket: net.Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  const p = new Promise<Buffer>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => parts.push(chunk));
    socket.once('end', () => resolve(Buffer.concat(parts)));
    socket.once('error', (err) => reject(err));
    socket.once('close', () => reject(new Error(`closed without 'end' after ${Buffer.concat(parts).length} bytes`)));
  });
  socket.resume();
  return awaitedLater(p);
}

/** Resolves once `n` bytes have arrived; returns them and leaves the socket paused (extra bytes unshifted). */
export function readBytes(socket: net.Socket, n: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let got = 0;
  return new Promise<Buffer>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      parts.push(chunk);
      got += chunk.length;
      if (got >= n) {
        cleanup();
        const all = Buffer.concat(parts);
        if (all.length > n) socket.unshift(all.subarray(n));
        resolve(all.subarray(0, n));
      }
    };
    const onEnd = () => {
      cleanup();
      reject(new Error(`'end' after ${got} of ${n} bytes`));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onError);
      socket.pause();
    };
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', onError);
    socket.resume();
  });
}
