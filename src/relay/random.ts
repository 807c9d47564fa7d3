// Seeded randomness for fault injection. Every random decision the relay makes
// (toxicity rolls, jitter, slice sizes, bit flips) comes from an Rng so that
// `--seed N` reproduces a run. Math.random() must not be used in src/relay/.
import { randomBytes } from 'node:crypto';

const TWO_32 = 2 ** 32;
const TWO_53 = 2 ** 53;

// murmur3's finalizer: a cheap, well-tested 32-bit avalanche.
function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

// FNV-1a seeded by a key word, so that the same label under two parents hashes
// differently; mix32 hides FNV's weak low bits.
function hashLabel(label: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < label.length; i++) {
    h ^= label.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return mix32(h);
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/**
 * xoshiro128** keyed by 128 bits. The key never changes after construction:
 * fork() derives children from the key, not from the current state, so a child
 * stream is the same whatever the parent (or any sibling) has consumed. That is
 * what keeps faults reproducible when connections interleave differently.
 */
export class Rng {
  private readonly key: Uint32Array;
  private readonly s = new Uint32Array(4);

  private constructor(key: Uint32Array) {
    this.key = key;
    for (let i = 0; i < 4; i++) this.s[i] = mix32((key[i] + Math.imul(0x9e3779b9, i + 1)) >>> 0);
    // xoshiro's one forbidden state; unreachable in practice but cheap to rule out.
    if ((this.s[0] | this.s[1] | this.s[2] | this.s[3]) === 0) this.s[0] = 1;
  }

  /** A seed is a safe integer (what `--seed N` gives) or any string. */
  static fromSeed(seed: number | string): Rng {
    const key = new Uint32Array(4);
    if (typeof seed === 'number') {
      if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be a safe integer, got ${seed}`);
      const lo = seed >>> 0;
      const hi = Math.floor(seed / TWO_32) >>> 0;
      key.set([lo, hi, mix32(lo ^ 0x243f6a88), mix32(hi ^ 0x85a308d3)]);
    } else {
      for (let i = 0; i < 4; i++) key[i] = hashLabel(seed, Math.imul(0x9e3779b9, i + 1));
    }
    return new Rng(key);
  }

  /** An independent stream named by label, e.g. base.fork('conn:7').fork('upstream').fork('latency_upstream'). */
  fork(label: string): Rng {
    const k = this.key;
    const child = new Uint32Array(4);
    for (let i = 0; i < 4; i++) child[i] = mix32(k[i] ^ hashLabel(label, k[(i + 1) & 3] ^ i));
    return new Rng(child);
  }

  uint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 bits, so tiny probabilities (bitflip rates) are not quantised. */
  next(): number {
    const a = this.uint32() >>> 5;
    const b = this.uint32() >>> 6;
    return (a * 67108864 + b) / TWO_53;
  }

  /** Uniform integer in [0, n), unbiased (rejection sampling), for 1 <= n <= 2^32. */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_32) throw new RangeError(`int(n) needs 1 <= n <= 2^32, got ${n}`);
    const limit = TWO_32 - (TWO_32 % n);
    let x = this.uint32();
    while (x >= limit) x = this.uint32();
    return x % n;
  }
}

export function createRng(seed: number | string): Rng {
  return Rng.fromSeed(seed);
}

/** A fresh seed for runs without --seed; log it so the run can be replayed. */
export function randomSeed(): number {
  return randomBytes(6).readUIntBE(0, 6);
}
