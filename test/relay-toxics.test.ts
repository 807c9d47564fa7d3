import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { within } from './helpers.js';
import { EARLY, makeStage, noise, popcount, sleep, spyLink, tagged, watch, writeSpaced } from './relay-helpers.js';

describe('latency', () => {
  it('delays every chunk by at least the latency, in order', async () => {
    const s = makeStage({ type: 'latency', attributes: { latency: 100 } });
    const w = watch(s);
    const chunks = tagged(5);
    const sent = await writeSpaced(s, chunks, 15);
    s.end();
    await w.ended;
    expect(w.bytes()).toEqual(Buffer.concat(chunks));
    sent.forEach((t, i) => {
      const delay = w.arrivalOf(i * 8) - t;
      expect(delay).toBeGreaterThanOrEqual(100 - EARLY);
      // Each chunk is delayed once, not once per chunk before it: 5 chunks would pile up to 500.
      expect(delay).toBeLessThan(400);
    });
  });

  it('keeps jitter within latency ± jitter and never reorders', async () => {
    const s = makeStage({ type: 'latency', attributes: { latency: 100, jitter: 40 } }, { seed: 7 });
    const w = watch(s);
    const chunks = tagged(20);
    const sent = await writeSpaced(s, chunks, 3);
    s.end();
    await w.ended;
    expect(w.bytes()).toEqual(Buffer.concat(chunks));
    const delays = sent.map((t, i) => w.arrivalOf(i * 8) - t);
    for (const d of delays) {
      expect(d).toBeGreaterThanOrEqual(60);
    }
    expect(Math.max(...delays) - Math.min(...delays)).toBeGreaterThan(10);
  });
});

describe('bandwidth', () => {
  it('sends 256 KiB at 128 KB/s in no less than 1.6 s', async () => {
    const data = noise(256 * 1024);
    const chunks = Array.from({ length: 16 }, (_, i) => data.subarray(i * 16384, (i + 1) * 16384));
    const s = makeStage({ type: 'bandwidth', attributes: { rate: 128 } });
    const w = watch(s);
    const start = performance.now();
    Readable.from(chunks).pipe(s);
    await w.ended;
    const seconds = (w.endAt() - start) / 1000;
    expect(seconds).toBeGreaterThanOrEqual(1.6);
    expect(seconds).toBeLessThanOrEqual(20);
    expect(w.bytes().equals(data)).toBe(true);
  }, 30_000);
});

describe('slicer', () => {
  it('cuts into average ± variation pieces with the content intact', async () => {
    const data = noise(10_000);
    const s = makeStage({ type: 'slicer', attributes: { average_size: 100, size_variation: 20 } });
    const w = watch(s);
    s.end(data);
    await w.ended;
    expect(w.bytes().equals(data)).toBe(true);
    const sizes = w.events.map((e) => e.data.length);
    expect(sizes.length).toBeGreaterThan(70);
    for (const n of sizes.slice(0, -1)) {
      expect(n).toBeGreaterThanOrEqual(80);
      expect(n).toBeLessThanOrEqual(120);
    }
    expect(sizes.at(-1)).toBeLessThanOrEqual(120);
    expect(new Set(sizes).size).toBeGreaterThan(5);
  });

  it('spaces pieces by delay (µs)', async () => {
    const s = makeStage({ type: 'slicer', attributes: { average_size: 100, delay: 5000 } });
    const w = watch(s);
    const start = performance.now();
    s.end(Buffer.alloc(1000, 1));
    await w.ended;
    expect(w.events).toHaveLength(10);
    expect(w.events.at(-1)!.t - start).toBeGreaterThanOrEqual(45 - EARLY);
  });
});

describe('limit_data', () => {
  it('passes exactly N bytes, ends, and calls link.close() once', async () => {
    const link = spyLink();
    const s = makeStage({ type: 'limit_data', attributes: { bytes: 1000 } }, { link });
    const w = watch(s);
    for (const c of tagged(3, 400)) s.write(c);
    await w.ended;
    s.write(Buffer.alloc(400)); // accepted and dropped, no error
    await new Promise(setImmediate);
    expect(w.bytes()).toEqual(Buffer.concat(tagged(3, 400)).subarray(0, 1000));
    expect(link.closes).toHaveLength(1);
    expect(link.resets).toHaveLength(0);
  });

  it('closes as soon as the budget is spent, without waiting for more data', async () => {
    const link = spyLink();
    const s = makeStage({ type: 'limit_data', attributes: { bytes: 800 } }, { link });
    const w = watch(s);
    s.write(Buffer.alloc(400));
    s.write(Buffer.alloc(400));
    await w.ended;
    expect(w.bytes()).toHaveLength(800);
    expect(link.closes).toHaveLength(1);
  });
});

describe('timeout', () => {
  it('with 0 drops everything and never closes', async () => {
    const link = spyLink();
    const s = makeStage({ type: 'timeout', attributes: { timeout: 0 } }, { link });
    const w = watch(s);
    await writeSpaced(s, tagged(3), 50);
    await sleep(300);
    expect(w.events).toHaveLength(0);
    expect(link.closes).toHaveLength(0);
    expect(link.resets).toHaveLength(0);
    s.destroy();
  });

  it('closes after the timeout, forwarding nothing', async () => {
    const link = spyLink();
    const start = performance.now();
    const s = makeStage({ type: 'timeout', attributes: { timeout: 150 } }, { link });
    const w = watch(s);
    s.write(Buffer.from('dropped'));
    await w.ended;
    expect(w.events).toHaveLength(0);
    expect(link.closes).toHaveLength(1);
    expect(link.closes[0]! - start).toBeGreaterThanOrEqual(150 - EARLY);
  });
});

describe('reset_peer', () => {
  it('resets T after the first data, forwarding neither data nor FIN', async () => {
    const link = spyLink();
    const s = makeStage({ type: 'reset_peer', attributes: { timeout: 150 } }, { link });
    const w = watch(s);
    const t0 = performance.now();
    s.end(Buffer.from('hello'));
    await within(link.firstReset, 5000, 'reset');
    expect(link.resets).toHaveLength(1);
    expect(link.resets[0]! - t0).toBeGreaterThanOrEqual(150 - EARLY);
    expect(w.events).toHaveLength(0);
    expect(w.endAt()).toBe(-1);
    expect(link.closes).toHaveLength(0);
    s.destroy();
  });
});

describe('slow_close', () => {
  it('passes data at once but delays the end by delay', async () => {
    const s = makeStage({ type: 'slow_close', attributes: { delay: 1000 } });
    const w = watch(s);
    s.write(Buffer.from('bye'));
    const endCalled = performance.now();
    s.end();
    await w.ended;
    expect(w.events[0]!.t - endCalled).toBeLessThan(500);
    expect(w.endAt() - endCalled).toBeGreaterThanOrEqual(1000 - EARLY);
  });
});

describe('bitflip', () => {
  const MiB = 1 << 20;
  const corrupt = async (seed: number, data: Buffer, chunk = 64 * 1024) => {
    const s = makeStage({ type: 'bitflip', attributes: { rate: 0.01 } }, { seed });
    const w = watch(s);
    for (let i = 0; i < data.length; i += chunk) s.write(data.subarray(i, i + chunk));
    s.end();
    await w.ended;
    return w.bytes();
  };

  it('flips one bit in a fraction rate of bytes, within 5 standard deviations', async () => {
    const data = noise(MiB);
    const copy = Buffer.from(data);
    const out = await corrupt(1, data);
    expect(data.equals(copy)).toBe(true); // the input buffer is never modified
    let flipped = 0;
    let multi = 0;
    for (let i = 0; i < MiB; i++) {
      const bits = popcount(out[i]! ^ data[i]!);
      if (bits > 1) multi++;
      flipped += bits;
    }
    expect(multi).toBe(0);
    const r = 0.01;
    const mean = r * MiB;
    const sd = Math.sqrt(MiB * r * (1 - r));
    expect(Math.abs(flipped - mean)).toBeLessThan(5 * sd);
  });

  it('gives identical output for the same seed whatever the chunking, and not for another seed', async () => {
    const data = noise(256 * 1024);
    const a = await corrupt(42, data);
    const b = await corrupt(42, data, 1000);
    const c = await corrupt(43, data);
    expect(a.equals(b)).toBe(true);
    expect(a.equals(c)).toBe(false);
  });
});

describe('stall', () => {
  it('pauses delivery for duration after `after` bytes, then resumes intact', async () => {
    const s = makeStage({ type: 'stall', attributes: { after: 1500, duration: 1000 } });
    const w = watch(s);
    const chunks = tagged(3, 1000);
    const sent = await writeSpaced(s, chunks, 10);
    s.end();
    await w.ended;
    expect(w.bytes()).toEqual(Buffer.concat(chunks));
    expect(w.arrivalOf(1499) - sent[1]!).toBeLessThan(500);
    expect(w.arrivalOf(1500) - sent[1]!).toBeGreaterThanOrEqual(1000 - EARLY);
    expect(w.arrivalOf(2000)).toBeGreaterThanOrEqual(w.arrivalOf(1500)); // queued behind the stall
  });
});
