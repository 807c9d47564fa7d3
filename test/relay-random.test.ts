import { describe, expect, it } from 'vitest';
import { createRng, randomSeed } from '../src/relay/random.js';

const take = (n: number, f: () => number) => Array.from({ length: n }, f);

describe('Rng', () => {
  it('repeats for the same seed and differs for another', () => {
    const a = createRng(1);
    const b = createRng(1);
    const c = createRng(2);
    const xs = take(100, () => a.uint32());
    expect(take(100, () => b.uint32())).toEqual(xs);
    expect(take(100, () => c.uint32())).not.toEqual(xs);
    expect(take(5, () => createRng('abc').next())).toEqual(take(5, () => createRng('abc').next()));
    expect(createRng(2 ** 40).uint32()).not.toBe(createRng(0).uint32()); // high seed bits count
  });

  it('forks by label, independent of what the parent or siblings consumed', () => {
    const fresh = createRng(9).fork('conn:3').fork('upstream');
    const expected = take(20, () => fresh.next());
    const base = createRng(9);
    take(1000, () => base.next());
    base.fork('conn:1').next();
    const late = base.fork('conn:3').fork('upstream');
    expect(take(20, () => late.next())).toEqual(expected);
    const other = createRng(9).fork('conn:4').fork('upstream');
    expect(take(20, () => other.next())).not.toEqual(expected);
    const swapped = createRng(9).fork('upstream').fork('conn:3');
    expect(take(20, () => swapped.next())).not.toEqual(expected);
  });

  it('next() is in [0, 1) and roughly uniform', () => {
    const r = createRng(3);
    const bins = new Array<number>(10).fill(0);
    let outside = 0;
    for (let i = 0; i < 100_000; i++) {
      const x = r.next();
      if (!(x >= 0 && x < 1)) outside++;
      else bins[Math.floor(x * 10)]!++;
    }
    expect(outside).toBe(0);
    // 10,000 expected per bin, sd ≈ 95: 6 sd either way.
    for (const n of bins) expect(Math.abs(n - 10_000)).toBeLessThan(600);
  });

  it('int(n) covers [0, n) and rejects bad n', () => {
    const r = createRng(4);
    const seen = new Set(take(2000, () => r.int(7)));
    expect([...seen].sort()).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(r.int(1)).toBe(0);
    expect(() => r.int(0)).toThrow(RangeError);
    expect(() => r.int(2.5)).toThrow(RangeError);
    expect(() => createRng(1.5)).toThrow(/safe integer/);
  });

  it('randomSeed() gives a usable safe integer', () => {
    const s = randomSeed();
    expect(Number.isSafeInteger(s) && s >= 0).toBe(true);
    expect(createRng(s).next()).toBeLessThan(1);
  });
});
