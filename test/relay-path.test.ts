// The relay's data path on real sockets: integrity, early bytes, an unreachable upstream, each
// toxic's observable effect, and toxics added and removed on live connections.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { parseToxic, type ToxicInput } from '../src/relay/toxics.js';
import { createRelay } from '../src/index.js';
import type { RelayConnectionRecord } from '../src/relay/relay.js';
import { autoEngine, modes, startRelay } from './relay-path-helpers.js';
import {
  collectUntilEnd,
  connectTo,
  hashUntilEnd,
  HOST,
  MiB,
  onCleanup,
  patternBytes,
  portsOf,
  readBytes,
  sha256,
  startEchoServer,
  startHashServer,
  startServer,
  waitFor,
  within,
  writeBuffer,
} from './helpers.js';
import { closedPort } from './proxy-helpers.js';



describe.each(modes)('relay data path (engine %s)', (mode) => {
  it('carries 8 MiB each way byte-exact and reports the engine it used', async () => {
    const server = await startHashServer({ replyBytes: 8 * MiB, when: 'connect' });
    const relay = await startRelay(server.port, [], { engine: mode });
    const client = await connectTo(relay.port);
    const data = patternBytes(3, 8 * MiB);
    const got = hashUntilEnd(client);
    await writeBuffer(client, data, { end: true });
    const conn = await server.records.nth(0);
    expect((await conn.received).sha).toBe(sha256(data));
    expect((await got).sha).toBe((await conn.sent).sha);
    const record = await relay.records.nth(0);
    expect(record.reason).toBe('eof');
    expect(record.engine).toBe(mode === 'js' ? 'js' : autoEngine);
    expect(record.bytesUp).toBe(8 * MiB);
    expect(record.bytesDown).toBe(8 * MiB);
  });

  it('delivers bytes the client sent before the upstream accepted, first', async () => {
    // The upstream accepts only after a delay: the client has already written and half-closed.
    const held: net.Socket[] = [];
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => held.push(s));
    await new Promise<void>((r) => server.listen(0, HOST, r));
    onCleanup(() => server.close());
    const port = (server.address() as net.AddressInfo).port;
    const relay = await startRelay(port, [], { engine: mode });
    const client = await connectTo(relay.port);
    client.end(Buffer.from('early bytes'));
    await waitFor(() => held.length === 1, 5000);
    const upstream = held[0]!;
    const got = await within(collectUntilEnd(upstream), 5000, 'upstream end');
    expect(got.toString()).toBe('early bytes');
    upstream.end();
  });

  it('resets the client when the upstream refuses', async () => {
    const relay = await startRelay(await closedPort(), [], { engine: mode });
    const client = await connectTo(relay.port);
    const error = await within(new Promise<NodeJS.ErrnoException>((resolve) => client.once('error', resolve)), 5000, 'reset');
    expect(error.code).toBe('ECONNRESET');
    const record = await relay.records.nth(0);
    expect(record.reason).toBe('connect-failed');
    expect(record.code).toBe('ECONNREFUSED');
  });

  it('passes a half-close through and keeps the other direction open', async () => {
    const server = await startEchoServer();
    const relay = await startRelay(server.port, [], { engine: mode });
    const client = await connectTo(relay.port);
    const got = collectUntilEnd(client);
    client.end(Buffer.from('ping'));
    expect((await within(got, 5000, 'echo end')).toString()).toBe('ping');
    expect((await relay.records.nth(0)).reason).toBe('eof');
  });
});

describe('toxics on the relay', () => {
  it('latency: the round trip takes at least the configured time each way', async () => {
    const server = await startEchoServer();
    const relay = await startRelay(server.port, [
      { type: 'latency', stream: 'upstream', attributes: { latency: 150 } },
      { type: 'latency', stream: 'downstream', attributes: { latency: 100 } },
    ]);
    const client = await connectTo(relay.port);
    const started = performance.now();
    client.write('x');
    await readBytes(client, 1);
    expect(performance.now() - started).toBeGreaterThanOrEqual(250);
    client.end();
  });

  it('limit_data: closes after exactly N bytes', async () => {
    const server = await startServer((s) => s.resume());
    const relay = await startRelay(server.port, [{ type: 'limit_data', stream: 'downstream', attributes: { bytes: 12345 } }]);
    const client = await connectTo(relay.port);
    const upstream = await server.conns.nth(0);
    upstream.write(patternBytes(9, 100_000));
    const got = await within(collectUntilEnd(client), 5000, 'client end');
    expect(got.length).toBe(12345);
    expect(got.equals(patternBytes(9, 100_000).subarray(0, 12345))).toBe(true);
  });

  it('slow_close: the FIN comes the configured delay after the data', async () => {
    const server = await startServer((s) => s.resume());
    const relay = await startRelay(server.port, [{ type: 'slow_close', stream: 'downstream', attributes: { delay: 300 } }]);
    const client = await connectTo(relay.port);
    const upstream = await server.conns.nth(0);
    let dataAt = 0;
    client.on('data', () => (dataAt = performance.now()));
    const ended = new Promise<number>((r) => client.once('end', () => r(performance.now())));
    upstream.end('bye');
    const endAt = await within(ended, 5000, 'end');
    expect(endAt - dataAt).toBeGreaterThanOrEqual(290);
    client.end();
  });

  it('gives each toxic its own random stream: a jittery latency added in front leaves the bit flips as they were', async () => {
    const data = patternBytes(4, 256 * 1024);
    const bitflip = { type: 'bitflip', stream: 'downstream', attributes: { rate: 0.01 } } as const;
    const through = async (toxics: ToxicInput[]) => {
      const server = await startServer((s) => s.end(data));
      const relay = await startRelay(server.port, toxics, { engine: 'js', seed: 5 });
      const client = await connectTo(relay.port);
      const got = await within(collectUntilEnd(client), 10_000, 'client end');
      client.end();
      return got;
    };
    const alone = await through([bitflip]);
    const behindJitter = await through([{ type: 'latency', stream: 'downstream', attributes: { latency: 5, jitter: 5 } }, bitflip]);
    expect(alone.length).toBe(data.length);
    expect(alone.equals(data)).toBe(false);
    expect(behindJitter.equals(alone)).toBe(true);
  });

  it.each(modes)('a toxic added to a live connection applies without dropping it, and its removal lets bytes flow on (engine %s)', async (mode) => {
    const server = await startEchoServer();
    const relay = await startRelay(server.port, [], { engine: mode });
    const client = await connectTo(relay.port);
    const echo = async (text: string) => {
      const started = performance.now();
      client.write(text);
      const got = await readBytes(client, text.length);
      expect(got.toString()).toBe(text);
      return performance.now() - started;
    };
    await echo('before');
    relay.listener.setToxics([parseToxic({ type: 'latency', stream: 'downstream', attributes: { latency: 400 } })]);
    expect(await echo('during')).toBeGreaterThanOrEqual(400);
    relay.listener.setToxics([]);
    // Only has to tell no delay (a loopback echo, a millisecond or so) from the 400 ms toxic.
    expect(await echo('after')).toBeLessThan(400);
    client.end();
    const record = await within(relay.records.nth(0), 5000, 'record');
    expect(record.reason).toBe('eof');
    expect(record.engine).toBe(mode === 'js' || autoEngine === 'js' ? 'js' : 'splice+js');
  });
});

describe('Relay connection records', () => {
  it('carry the same bytes whether or not anyone takes the records, count connections either way, and name the client once taken', async () => {
    const server = await startHashServer({ replyBytes: 24 * 1024, when: 'connect' });
    const relay = await createRelay({ relays: [{ name: 'r', listen: `${HOST}:0`, upstream: `${HOST}:${server.port}` }], seed: 7 });
    onCleanup(() => void relay.close());
    const port = relay.address('r').port;
    const exchange = async (seed: number, bytes: number) => {
      const client = await connectTo(port);
      const index = server.records.items.length;
      const data = patternBytes(seed, bytes);
      const got = hashUntilEnd(client);
      await writeBuffer(client, data, { end: true });
      const conn = await server.records.nth(index);
      expect((await conn.received).sha).toBe(sha256(data));
      expect((await got).sha).toBe((await conn.sent).sha);
      return client;
    };
    for (let i = 0; i < 3; i++) await exchange(40 + i, 10_000 + i);
    expect(await waitFor(() => relay.activeConnections === 0, 5000)).toBe(true);

    const records: RelayConnectionRecord[] = [];
    relay.on('connection', (r) => records.push(r));
    const clients = [];
    for (let i = 0; i < 2; i++) clients.push(await exchange(50 + i, 20_000 + i));
    expect(await waitFor(() => records.length === 2, 5000)).toBe(true);
    for (const [i, r] of records.entries()) {
      expect(r).toMatchObject({ relay: 'r', client: `${HOST}:${portsOf(clients[i]!)!.local}`, upstream: `${HOST}:${server.port}`, bytesUp: 20_000 + i, bytesDown: 24 * 1024, reason: 'eof' });
    }
    expect(relay.activeConnections).toBe(0);
  });

  it('closing the relay ends its open connections (aborted) and reports them', async () => {
    const server = await startServer(() => {});
    const relay = await createRelay({ relays: [{ name: 'r', listen: `${HOST}:0`, upstream: `${HOST}:${server.port}` }], seed: 7 });
    const records: RelayConnectionRecord[] = [];
    relay.on('connection', (r) => records.push(r));
    const clients = await Promise.all([connectTo(relay.address('r').port), connectTo(relay.address('r').port)]);
    for (const c of clients) c.on('error', () => {});
    expect(await waitFor(() => relay.activeConnections === 2 && server.conns.items.length === 2, 5000)).toBe(true);
    await within(relay.close(), 5000, 'relay close');
    expect(records.map((r) => r.reason)).toEqual(['aborted', 'aborted']);
    expect(relay.activeConnections).toBe(0);
  });
});
