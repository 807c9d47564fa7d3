import { performance } from 'node:perf_hooks';
import { PassThrough, Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { composeStages, createDirectionStages } from '../src/relay/compose.js';
import { createRng } from '../src/relay/random.js';
import { parseToxic } from '../src/relay/toxics.js';
import { countTimers, makeStage, noise, SLACK, sleep, spyLink, tagged, watch, writeSpaced } from './relay-helpers.js';

describe('toxicity', () => {
  it('0 gives a pass-through', async () => {
    const s = makeStage({ type: 'latency', toxicity: 0, attributes: { latency: 1000 } });
    expect(s).toBeInstanceOf(PassThrough);
    const w = watch(s);
    const t0 = performance.now();
    s.end(Buffer.from('quick'));
    await w.ended;
    expect(w.endAt() - t0).toBeLessThan(SLACK);
  });

  it('perChunk rolls each chunk, reproducibly', async () => {
    const delayed = async () => {
      const s = makeStage({ type: 'latency', toxicity: 0.5, perChunk: true, attributes: { latency: 30 } }, { seed: 3 });
      const w = watch(s);
      // Spaced wider than the latency, so no chunk waits behind a delayed one.
      const sent = await writeSpaced(s, tagged(10), 45);
      s.end();
      await w.ended;
      return sent.map((t, i) => w.arrivalOf(i * 8) - t >= 30);
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
    const s = makeStage({ type: 'latency', attributes: { latency: 20 } });
    source.pipe(s);
    await sleep(200); // nobody reads s
    expect(produced).toBeLessThanOrEqual(192 * 1024);
    const w = watch(s);
    await w.ended;
    expect(w.bytes().equals(data)).toBe(true);
  });
});

describe('composeStages', () => {
  const toxics = [
    parseToxic({ type: 'latency', stream: 'upstream', attributes: { latency: 50 } }),
    parseToxic({ type: 'slicer', stream: 'upstream', attributes: { average_size: 500, size_variation: 100 } }),
    parseToxic({ type: 'bitflip', stream: 'downstream', attributes: { rate: 0.5 } }),
  ];

  it('builds the stages of one direction, in order, and pipes them', async () => {
    const stages = createDirectionStages(toxics, 'upstream', createRng(5).fork('conn:0').fork('upstream'), spyLink());
    expect(stages).toHaveLength(2);
    const chain = composeStages(stages);
    const w = watch(chain.readable);
    const data = noise(20_000);
    const t0 = performance.now();
    chain.writable.end(data);
    await w.ended;
    expect(w.bytes().equals(data)).toBe(true); // the downstream bitflip is not in this chain
    expect(w.events[0]!.t - t0).toBeGreaterThanOrEqual(50);
    expect(Math.max(...w.events.map((e) => e.data.length))).toBeLessThanOrEqual(600);
  });

  it('gives each toxic its own random stream, so one toxic does not shift another', async () => {
    const jitter = parseToxic({ type: 'latency', attributes: { latency: 5, jitter: 5 } });
    const run = async (list: typeof toxics) => {
      const chain = composeStages(createDirectionStages(list, 'downstream', createRng(5).fork('conn:0'), spyLink()));
      const w = watch(chain.readable);
      for (const c of tagged(8, 512)) chain.writable.write(c);
      chain.writable.end();
      await w.ended;
      return w.bytes();
    };
    const alone = await run([toxics[2]!]);
    const behindJitter = await run([jitter, toxics[2]!]);
    expect(alone.equals(Buffer.concat(tagged(8, 512)))).toBe(false);
    expect(behindJitter.equals(alone)).toBe(true);
  });

  it('destroy tears down every stage and its timers', async () => {
    const base = countTimers();
    const stages = createDirectionStages(toxics, 'upstream', createRng(5), spyLink());
    const chain = composeStages(stages);
    chain.writable.write(Buffer.alloc(100));
    await sleep(10);
    chain.destroy();
    await sleep(10);
    expect(stages.every((s) => s.destroyed)).toBe(true);
    expect(countTimers()).toBeLessThanOrEqual(base);
  });
});
