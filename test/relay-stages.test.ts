import { performance } from 'node:perf_hooks';
import { PassThrough, Readable, type Transform } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { DEFAULT_STAGE_OPTIONS } from '../src/relay/relay.js';
import { DEFAULT_MAX_DELAYED_BYTES, DEFAULT_MAX_HELD_BYTES, type TimedStage } from '../src/relay/timed-stage.js';
import { MiB } from './helpers.js';
import { countTimers, makeStage, noise, sleep, spyLink, tagged, watch, writeSpaced } from './relay-helpers.js';

describe('toxicity', () => {
  it('0 gives a pass-through', async () => {
    const s = makeStage({ type: 'latency', toxicity: 0, attributes: { latency: 1000 } });
    expect(s).toBeInstanceOf(PassThrough);
    const w = watch(s);
    const t0 = performance.now();
    s.end(Buffer.from('quick'));
    await w.ended;
    expect(w.endAt() - t0).toBeLessThan(500); // the latency it would have added is 1000
  });

  it('perChunk rolls each chunk, reproducibly', async () => {
    const delayed = async () => {
      const s = makeStage({ type: 'latency', toxicity: 0.5, perChunk: true, attributes: { latency: 200 } }, { seed: 3 });
      const w = watch(s);
      // Spaced wider than the latency, so no chunk waits behind a delayed one.
      const sent = await writeSpaced(s, tagged(10), 250);
      s.end();
      await w.ended;
      return sent.map((t, i) => w.arrivalOf(i * 8) - t >= 200);
    };
    const a = await delayed();
    expect(a).toContain(true);
    expect(a).toContain(false);
    expect(await delayed()).toEqual(a);
  });
});

describe('teardown and backpressure', () => {
  it('destroy mid-delay leaves no timers behind', async () => {
    const base = countTimers();
    const link = spyLink();
    const lat = makeStage({ type: 'latency', attributes: { latency: 1000 } });
    const tmo = makeStage({ type: 'timeout', attributes: { timeout: 1000 } }, { link });
    lat.write(Buffer.from('x'));
    await sleep(10);
    expect(countTimers()).toBeGreaterThan(base);
    lat.destroy();
    tmo.destroy();
    await sleep(10);
    expect(countTimers()).toBeLessThanOrEqual(base);
    expect(link.closes).toHaveLength(0);
  });

  it('holds a bounded amount when the reader stops, then delivers everything', async () => {
    const total = 1 << 20;
    const data = noise(total);
    let produced = 0;
    const source = new Readable({
      read() {
        const n = Math.min(16384, total - produced);
        this.push(n > 0 ? data.subarray(produced, (produced += n)) : null);
      },
    });
    const s = makeStage({ type: 'latency', attributes: { latency: 20 } }, { options: { maxDelayedBytes: 64 * 1024 } });
    source.pipe(s);
    await sleep(200); // nobody reads s
    expect(produced).toBeLessThanOrEqual(192 * 1024);
    const w = watch(s);
    await w.ended;
    expect(w.bytes().equals(data)).toBe(true);
  });
});

describe('latency holds what one latency period brings, up to its cap', () => {
  const chunk = Buffer.alloc(64 * 1024, 1);
  /** Writes `total` bytes at once; a write is taken synchronously while the stage has room. */
  const flood = (s: Transform, total: number) => {
    for (let n = 0; n < total; n += chunk.length) s.write(chunk);
  };

  it('takes far more than 256 KiB per latency by default, and stops at 32 MiB', () => {
    const s = makeStage({ type: 'latency', attributes: { latency: 60_000 } }) as TimedStage;
    flood(s, 40 * MiB);
    // Nothing is due for a minute: all it took is held, the rest waits in its writable buffer.
    expect(s.heldBytes).toBeGreaterThanOrEqual(DEFAULT_MAX_DELAYED_BYTES);
    expect(s.heldBytes).toBeLessThan(DEFAULT_MAX_DELAYED_BYTES + chunk.length);
    expect(s.writableLength).toBeGreaterThanOrEqual(40 * MiB - s.heldBytes);
    s.destroy();
  });

  it('honours a smaller cap, and takes more as the reader frees room', async () => {
    const cap = MiB;
    const s = makeStage({ type: 'latency', attributes: { latency: 5 } }, { options: { maxDelayedBytes: cap } }) as TimedStage;
    flood(s, 4 * MiB);
    expect(s.heldBytes).toBeGreaterThanOrEqual(cap);
    expect(s.heldBytes).toBeLessThan(cap + chunk.length);
    s.end();
    let peak = 0;
    let got = 0;
    s.on('data', (d: Buffer) => {
      got += d.length;
      peak = Math.max(peak, s.heldBytes);
    });
    await new Promise((resolve) => s.on('end', resolve));
    expect(got).toBe(4 * MiB);
    expect(peak).toBeLessThan(cap + chunk.length);
  });

  it('bandwidth keeps the small pacing cap, so its sender feels the pace', () => {
    const s = makeStage({ type: 'bandwidth', attributes: { rate: 1 } }, { options: DEFAULT_STAGE_OPTIONS }) as TimedStage;
    flood(s, 4 * MiB);
    expect(s.heldBytes).toBeLessThan(DEFAULT_MAX_HELD_BYTES + chunk.length);
    s.destroy();
  });
});
