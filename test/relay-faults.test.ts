// Each toxic's effect as a client of the relay observes it, with bounds that hold on a noisy
// machine: lower bounds on time are exact (timers never fire early), upper bounds have slack.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { collectUntilEnd, connectTo, hashUntilEnd, patternBytes, sha256, startEchoServer, startServer, within, writeBuffer } from './helpers.js';
import { DEFAULT_MAX_DELAYED_BYTES } from '../src/relay/timed-stage.js';
import { startRelay } from './relay-path-helpers.js';
import { EARLY } from './relay-helpers.js';

/** Sends `data` from the upstream to one client of a relay with `toxics`; returns what the client got. */
async function downstreamThrough(toxics: Parameters<typeof startRelay>[1], data: Buffer, seed = 1): Promise<{ got: Buffer; ms: number }> {
  const server = await startServer((s) => s.resume());
  const relay = await startRelay(server.port, toxics, { seed });
  const client = await connectTo(relay.port);
  const upstream = await server.conns.nth(0);
  const started = performance.now();
  const got = collectUntilEnd(client);
  await writeBuffer(upstream, data, { end: true });
  const bytes = await within(got, 30_000, 'client end');
  const ms = performance.now() - started;
  client.end();
  return { got: bytes, ms };
}

function flippedBits(a: Buffer, b: Buffer): { bits: number; bytes: number } {
  let bits = 0;
  let bytes = 0;
  for (let i = 0; i < a.length; i++) {
    let x = a[i]! ^ b[i]!;
    if (x) bytes++;
    while (x) {
      bits += x & 1;
      x >>= 1;
    }
  }
  return { bits, bytes };
}

describe('toxic effects through the relay', () => {
  it('bandwidth: a 3 s transfer at 400 KB/s takes no less than 2.4 s', async () => {
    const data = patternBytes(1, 1_200_000);
    const { got, ms } = await downstreamThrough([{ type: 'bandwidth', stream: 'downstream', attributes: { rate: 400 } }], data);
    expect(got.equals(data)).toBe(true);
    expect(ms).toBeGreaterThanOrEqual(3000 * 0.8);
  });

  it('bitflip: flipped bits follow the rate, one bit per corrupted byte, and the same seed corrupts the same way', async () => {
    const data = patternBytes(2, 1_000_000);
    const toxic = [{ type: 'bitflip' as const, stream: 'downstream' as const, attributes: { rate: 0.001 } }];
    const first = await downstreamThrough(toxic, data, 42);
    const again = await downstreamThrough(toxic, data, 42);
    const other = await downstreamThrough(toxic, data, 43);
    expect(first.got.length).toBe(data.length);
    const { bits, bytes } = flippedBits(data, first.got);
    // Binomial(1e6, 1e-3): mean 1000, sd 31.6; ±6 sd.
    expect(bits).toBeGreaterThan(810);
    expect(bits).toBeLessThan(1190);
    expect(bytes).toBe(bits);
    expect(sha256(again.got)).toBe(sha256(first.got));
    expect(sha256(other.got)).not.toBe(sha256(first.got));
  });

  it('reset_peer: the client is reset the configured time after the first data', async () => {
    const server = await startEchoServer();
    const relay = await startRelay(server.port, [{ type: 'reset_peer', stream: 'upstream', attributes: { timeout: 200 } }]);
    const client = await connectTo(relay.port);
    client.on('data', () => {});
    const started = performance.now();
    client.write('hello');
    const err = await within(new Promise<NodeJS.ErrnoException>((r) => client.once('error', r)), 5000, 'reset');
    expect(err.code).toBe('ECONNRESET');
    expect(performance.now() - started).toBeGreaterThanOrEqual(195);
  });

  it('timeout: data stops and the connection closes after the timeout', async () => {
    const server = await startEchoServer();
    const relay = await startRelay(server.port, [{ type: 'timeout', stream: 'upstream', attributes: { timeout: 300 } }]);
    const client = await connectTo(relay.port);
    const started = performance.now();
    const got = collectUntilEnd(client);
    client.write('dropped');
    expect((await within(got, 5000, 'close')).length).toBe(0);
    expect(performance.now() - started).toBeGreaterThanOrEqual(295);
  });

  it('stall: delivery pauses for the duration after `after` bytes, then resumes with nothing lost', async () => {
    const data = patternBytes(4, 200_000);
    const { got, ms } = await downstreamThrough([{ type: 'stall', stream: 'downstream', attributes: { after: 100_000, duration: 400 } }], data);
    expect(got.equals(data)).toBe(true);
    expect(ms).toBeGreaterThanOrEqual(395);
  });

  it('slicer: the bytes arrive intact in small pieces', async () => {
    const server = await startEchoServer();
    // 1 ms between pieces: about 200 ms for the whole echo, so however late this process reads,
    // it cannot find them all coalesced into a few reads.
    const relay = await startRelay(server.port, [{ type: 'slicer', stream: 'downstream', attributes: { average_size: 10, size_variation: 5, delay: 1000 } }]);
    const client = await connectTo(relay.port);
    const sizes: number[] = [];
    client.on('data', (d: Buffer) => sizes.push(d.length));
    const text = patternBytes(5, 2000);
    client.write(text);
    const got = await within(readAll(client, text.length), 10_000, 'echo');
    expect(got.equals(text)).toBe(true);
    // Unsliced, 2000 bytes of echo come in one or two reads.
    expect(sizes.length).toBeGreaterThanOrEqual(10);
    client.end();
  });
});

function readAll(socket: net.Socket, n: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let have = 0;
  return new Promise((resolve) => {
    socket.on('data', (d: Buffer) => {
      parts.push(d);
      have += d.length;
      if (have >= n) resolve(Buffer.concat(parts));
    });
  });
}

describe('latency is latency, not a rate limit', () => {
  it('16 MiB behind 100 ms: every byte is late by the latency, and the bytes are not metered out per period', async () => {
    const latency = 100;
    const arrivals: { t: number; n: number }[] = [];
    const server = await startServer((s) => s.on('data', (d: Buffer) => arrivals.push({ t: performance.now(), n: d.length })));
    const relay = await startRelay(server.port, [{ type: 'latency', stream: 'upstream', attributes: { latency } }]);
    const client = await connectTo(relay.port);
    const data = patternBytes(6, 16 * 1024 * 1024);
    const upstream = await server.conns.nth(0);
    const got = collectUntilEnd(upstream);
    const sentAt = performance.now();
    await writeBuffer(client, data, { end: true });
    expect(sha256(await within(got, 60_000, 'upstream end'))).toBe(sha256(data));
    // Nothing can leave before it came in plus the latency.
    expect(arrivals[0]!.t - sentAt).toBeGreaterThanOrEqual(latency - EARLY);
    // A stage that held 256 KiB per latency period would let at most that much (plus a chunk or
    // two in flight) arrive within any one period; delaying each chunk on its own lets most of
    // the 16 MiB arrive within one.
    let most = 0;
    for (let i = 0, j = 0, sum = 0; i < arrivals.length; i++) {
      sum += arrivals[i]!.n;
      while (arrivals[i]!.t - arrivals[j]!.t > latency) sum -= arrivals[j++]!.n;
      most = Math.max(most, sum);
    }
    expect(most).toBeGreaterThan(4 * 1024 * 1024);
    client.end();
  });
});

describe('relay under load', () => {
  it.each([
    ['a 1 ms latency toxic', [{ type: 'latency', stream: 'downstream', attributes: { latency: 1 } }]],
    ['no toxic, on the user-space path', []],
  ] as const)('a fast server into a slow client (%s): what the relay holds stays bounded', async (_name, toxics) => {
    let written = 0;
    let stop = false;
    const server = await startServer((s) => {
      const chunk = Buffer.alloc(64 * 1024, 7);
      const pump = () => {
        while (!stop && s.write(chunk)) written += chunk.length;
        if (!stop) s.once('drain', () => { written += chunk.length; pump(); });
      };
      pump();
    });
    const relay = await startRelay(server.port, [...toxics], { engine: 'js' });
    const client = await connectTo(relay.port);
    client.pause();
    let received = 0;
    // Read 64 KiB every 20 ms: about 3 MB/s, far below what the server could send.
    const reader = setInterval(() => {
      let chunk: Buffer | null;
      let budget = 64 * 1024;
      while (budget > 0 && (chunk = client.read() as Buffer | null) !== null) {
        received += chunk.length;
        budget -= chunk.length;
      }
    }, 20);
    await new Promise((r) => setTimeout(r, 3000));
    const inFlight = written - received;
    clearInterval(reader);
    stop = true;
    client.destroy();
    // Kernel socket buffers on both legs (up to 48 MiB here) plus the latency stage's cap; an
    // unbounded relay would hold gigabytes.
    expect(received).toBeGreaterThan(0);
    expect(inFlight).toBeLessThan(48 * 1024 * 1024 + DEFAULT_MAX_DELAYED_BYTES);
  });

  it.each([
    ['splice', []],
    ['user-space', [{ type: 'latency', stream: 'downstream', attributes: { latency: 5 } }]],
  ] as const)('500 concurrent clients (%s): every byte echoed intact, fds back to baseline', async (_name, toxics) => {
    const fs = await import('node:fs');
    // The splice engine keeps a bounded pool of idle pipes for the next pairs: those are not leaks.
    const fdCount = () =>
      fs.readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return !fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith('pipe:');
        } catch {
          return false;
        }
      }).length;
    const server = await startEchoServer();
    const relay = await startRelay(server.port, [...toxics]);
    const baseline = fdCount();
    const clients = await Promise.all(
      Array.from({ length: 500 }, async (_, i) => {
        const client = await connectTo(relay.port);
        const data = patternBytes(100 + i, 16 * 1024 + i);
        const got = hashUntilEnd(client);
        await writeBuffer(client, data, { end: true });
        return { data, got, client };
      }),
    );
    for (const { data, got } of clients) {
      const received = await within(got, 60_000, 'echo');
      expect(received.sha).toBe(sha256(data));
    }
    for (const { client } of clients) client.destroy();
    await within(relay.records.nth(499), 30_000, 'all records');
    expect(relay.records.items.every((r) => r.reason === 'eof')).toBe(true);
    const deadline = Date.now() + 10_000;
    while (fdCount() > baseline && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(fdCount()).toBeLessThanOrEqual(baseline);
  });
});

