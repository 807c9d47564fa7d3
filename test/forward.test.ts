// forward(a, b) end to end over loopback: one suite, run against both engines.
import { describe, it, expect, afterEach, afterAll, beforeAll } from 'vitest';
import net from 'node:net';
import http from 'node:http';
import tls from 'node:tls';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { forward, engines, SpliceEngine, type EngineName, type ForwardOptions, type ForwardResult } from '../src/index.js';
import * as h from './helpers.js';
import { KiB, MiB } from './helpers.js';
import { hasTool, nativeDisabled, needsSplice, needsTool, spliceSkipReason, testEngines } from './policy.js';

// On Linux the splice suite always runs: a missing addon fails it (and the availability test below).
const ENGINES: readonly EngineName[] = testEngines;

afterEach(h.closeAll);

describe('engines()', () => {
  it('reports the splice engine available on Linux', (ctx) => {
    needsSplice(ctx);
    const report = engines();
    if (!report.splice.available) console.error(`splice engine NOT available: ${report.splice.reason}`);
    expect(report.splice.available, `splice engine not available: ${report.splice.reason}`).toBe(true);
  });

  it('reports the js engine available', () => {
    expect(engines().js.available).toBe(true);
  });

  it.runIf(nativeDisabled)('says splice is off, and why, when the addon is disabled', () => {
    expect(engines().splice).toEqual({ available: false, reason: 'disabled by SPLICER_DISABLE_NATIVE=1' });
  });
});

// The splice engine twice: its loop on a thread of its own, and on the JS thread (threads: 0).
const VARIANTS = ENGINES.flatMap((engine): { engine: EngineName; threads: number; label: string }[] =>
  engine === 'splice'
    ? [
        { engine, threads: 1, label: 'splice' },
        { engine, threads: 0, label: 'splice, its loop on the JS thread' },
      ]
    : [{ engine, threads: 1, label: engine }],
);

describe.each(VARIANTS)('forward() with engine $label', ({ engine, threads }) => {
  // Made before any test takes an fd baseline; the default engine serves threads 1.
  let onJsThread: SpliceEngine | undefined;
  beforeAll(() => {
    if (threads === 0) onJsThread = new SpliceEngine({ threads: 0 });
  });
  afterAll(() => onJsThread?.close());
  const opts = (extra: ForwardOptions = {}): ForwardOptions => ({ engine, spliceEngine: onJsThread, ...extra });
  /** A dedicated SpliceEngine for the splice variant (closed in teardown), none for js. */
  const dedicatedEngine = (): SpliceEngine | undefined => {
    if (engine !== 'splice') return undefined;
    const e = new SpliceEngine({ threads });
    h.onCleanup(() => void e.close());
    return e;
  };

  describe('data integrity', () => {
    it('moves 256 MiB each way at once with random write sizes, SHA-256 identical', async () => {
      const SIZE = 256 * MiB;
      const srv = await h.startHashServer({ replyBytes: SIZE, when: 'connect' });
      const fwd = await h.startForwarder(srv, opts());
      const client = await h.connectTo(fwd.port);
      const clientGot = h.hashUntilEnd(client);
      const clientSent = h.writeRandom(client, 1, SIZE);
      const rec = await srv.records.nth(0);

      const [sent, got, serverGot, serverSent] = await Promise.all([clientSent, clientGot, rec.received, rec.sent]);
      expect(sent.bytes).toBe(SIZE);
      expect(serverGot).toEqual(sent);
      expect(got).toEqual(serverSent);

      const result = await fwd.result(0);
      expect(result).toMatchObject({ engine, reason: 'eof', bytesAtoB: SIZE, bytesBtoA: SIZE });
      expect(result.error).toBeUndefined();
    }, 300_000);

    /** N concurrent pairs, 256 KiB .. 1 MiB each way; what went wrong, pair by pair. */
    async function concurrentPairs(N: number, extra: ForwardOptions = {}): Promise<string[]> {
      const sizeFor = (seed: number) => 256 * KiB + Math.floor(h.prng(seed)() * 768 * KiB);
      const srv = await h.startHashServer({ replyBytes: (i) => sizeFor(5000 + i), when: 'connect' });
      const fwd = await h.startForwarder(srv, opts(extra));
      const clients = await Promise.all(Array.from({ length: N }, () => h.connectTo(fwd.port)));

      const problems: string[] = [];
      await Promise.all(
        clients.map(async (client, i) => {
          const [sent, got] = await Promise.all([h.writeRandom(client, 100 + i, sizeFor(100 + i)), h.hashUntilEnd(client)]);
          const pair = await fwd.pairOf(client);
          const rec = await srv.records.find((r) => r.remotePort === pair.upstreamPort, `server side of pair #${pair.index}`);
          const [serverGot, serverSent] = await Promise.all([rec.received, rec.sent]);
          const result = await fwd.resultOf(client);
          if (serverGot.sha !== sent.sha || serverGot.bytes !== sent.bytes) problems.push(`client ${i}: a->b ${serverGot.bytes}/${sent.bytes} bytes, hash ${serverGot.sha === sent.sha ? 'ok' : 'differs'}`);
          if (got.sha !== serverSent.sha || got.bytes !== serverSent.bytes) problems.push(`client ${i}: b->a ${got.bytes}/${serverSent.bytes} bytes, hash ${got.sha === serverSent.sha ? 'ok' : 'differs'}`);
          if (result.engine !== engine || result.reason !== 'eof' || result.bytesAtoB !== sent.bytes || result.bytesBtoA !== serverSent.bytes) {
            problems.push(`client ${i}: result ${JSON.stringify({ ...result, error: result.error?.message })}, expected ${engine}/eof ${sent.bytes}/${serverSent.bytes}`);
          }
        }),
      );
      return problems;
    }

    it('moves 200 concurrent pairs (256 KiB .. 1 MiB each way), every one intact', async () => {
      expect(await concurrentPairs(200)).toEqual([]);
    }, 180_000);

    it.runIf(engine === 'splice')('falls back to read/write when the pipe pool is exhausted, bytes intact', async () => {
      const spliceEngine = new SpliceEngine({ maxPipes: 1 });
      h.onCleanup(() => void spliceEngine.close());
      // A pair whose reader does not read holds the one pipe, full, for as long as it lives.
      const src = await h.startSourceServer(64 * MiB);
      const stuckFwd = await h.startForwarder(src, opts({ spliceEngine }));
      const stuck = await h.connectTo(stuckFwd.port);
      stuck.pause();
      expect(await h.waitFor(() => spliceEngine.stats().pipesInUse === 1, 10_000), 'the stuck pair holds the pipe').toBe(true);

      const problems = await concurrentPairs(20, { spliceEngine });
      expect(problems).toEqual([]);
      expect(spliceEngine.stats().readWriteFallbacks, 'pairs that fell back to read/write').toBeGreaterThanOrEqual(20);
      stuck.destroy();
      expect(await stuckFwd.resultOf(stuck)).toMatchObject({ engine: 'splice' });
      expect(spliceEngine.stats()).toMatchObject({ pairs: 0, pipesInUse: 0, bytesBuffered: 0, readWritePairs: 0 });
    }, 180_000);
  });

  describe('bytes Node had already read', () => {
    it.each(['untouched', 'paused'] as const)('are delivered first and in order, both ways (socket %s before forward)', async (mode) => {
      const first = h.patternBytes(11, 64 * KiB);
      const rest = h.patternBytes(12, 4 * MiB);
      const srv = await h.startHashServer({ replyBytes: 8 * MiB, when: 'connect' });

      let clientRestGate!: () => void;
      const clientMayContinue = new Promise<void>((resolve) => (clientRestGate = resolve));
      const seenBuffered = { client: 0, upstream: 0 };
      const fwd = await h.startForwarder(srv, opts(), {
        beforeForward: async (client, upstream) => {
          try {
            // (Pausing before the first read would keep Node from reading at all: wait for data first.)
            const ok = await h.waitFor(() => client.readableLength > 0 && upstream.readableLength > 0, 10_000);
            if (!ok) throw new Error('test setup: no data buffered in Node before forward()');
            if (mode === 'paused') {
              client.pause();
              upstream.pause();
              await h.sleep(50);
            }
            seenBuffered.client = client.readableLength;
            seenBuffered.upstream = upstream.readableLength;
          } finally {
            clientRestGate();
          }
        },
      });

      const client = await h.connectTo(fwd.port);
      const clientGot = h.hashUntilEnd(client);
      client.write(first);
      await clientMayContinue;
      await h.writeBuffer(client, rest);

      const rec = await srv.records.nth(0);
      const [serverGot, serverSent, got] = await Promise.all([rec.received, rec.sent, clientGot]);
      expect(seenBuffered.client).toBeGreaterThan(0);
      expect(seenBuffered.upstream).toBeGreaterThan(0);
      expect(serverGot).toEqual({ bytes: first.length + rest.length, sha: h.sha256(Buffer.concat([first, rest])) });
      expect(got).toEqual(serverSent);
      const result = await fwd.result(0);
      expect(result).toMatchObject({ engine, reason: 'eof', bytesAtoB: first.length + rest.length, bytesBtoA: 8 * MiB });
    });

    it('a greeting and FIN that arrived before forward() reach the client, then the client can still send', async () => {
      const greeting = h.patternBytes(13, 1000);
      let serverGot!: Promise<Buffer>;
      const srv = await h.startServer((socket) => {
        serverGot = h.collectUntilEnd(socket);
        socket.end(greeting);
      });
      const fwd = await h.startForwarder(srv, opts(), {
        beforeForward: async (_client, upstream) => {
          await h.waitFor(() => upstream.readableLength >= greeting.length, 10_000);
          // and the FIN behind it (no public flag says a paused socket has read its EOF)
          await h.waitFor(() => (upstream as unknown as { _readableState: { ended: boolean } })._readableState.ended, 10_000);
        },
      });
      const client = await h.connectTo(fwd.port);
      expect(await h.collectUntilEnd(client)).toEqual(greeting);
      client.end('bye');
      await srv.conns.nth(0);
      expect((await serverGot).toString()).toBe('bye');
      expect(await fwd.result(0)).toMatchObject({ engine, reason: 'eof', bytesAtoB: 3, bytesBtoA: greeting.length });
    });

    it('works for an HTTP CONNECT proxy: 200 reply written, head passed on, then forward()', async () => {
      const echo = await h.startEchoServer();
      const RESPONSE = 'HTTP/1.1 200 Connection Established\r\n\r\n';
      let headLength = -1;
      let result!: Promise<ForwardResult>;
      const proxy = http.createServer();
      proxy.on('connect', (_req: http.IncomingMessage, clientSocket: net.Socket, head: Buffer) => {
        h.track(clientSocket);
        clientSocket.on('error', () => {});
        headLength = head.length;
        clientSocket.write(RESPONSE);
        const upstream = h.track(net.connect({ host: h.HOST, port: echo.port, allowHalfOpen: true }));
        upstream.on('error', () => {});
        upstream.once('connect', () => {
          upstream.write(head);
          result = forward(clientSocket, upstream, opts());
          result.catch(() => {});
        });
      });
      const proxyPort = await h.listen(proxy);

      const payload1 = h.patternBytes(21, 100 * KiB);
      const payload2 = h.patternBytes(22, 2 * MiB);
      const client = await h.connectTo(proxyPort);
      const got = h.hashUntilEnd(client);
      client.write(Buffer.concat([Buffer.from(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: 127.0.0.1:${echo.port}\r\n\r\n`), payload1]));
      await h.writeBuffer(client, payload2);

      const expected = Buffer.concat([Buffer.from(RESPONSE), payload1, payload2]);
      expect(await got).toEqual({ bytes: expected.length, sha: h.sha256(expected) });
      expect(headLength).toBeGreaterThan(0);
      const r = await h.within(result, 30_000, 'forward() to settle');
      expect(r).toMatchObject({
        engine,
        reason: 'eof',
        bytesAtoB: payload1.length + payload2.length - headLength,
        bytesBtoA: payload1.length + payload2.length,
      });
    });
  });

  /** A client and the server socket it reaches through the forwarder, with one byte each way moved. */
  async function establishedPair(options: ForwardOptions) {
    const srv = await h.startServer();
    const fwd = await h.startForwarder(srv, options);
    const client = await h.connectTo(fwd.port);
    const server = await srv.conns.nth(0);
    const wc = h.watch(client);
    const ws = h.watch(server);
    client.write('x');
    expect((await h.readBytes(server, 1)).toString()).toBe('x');
    server.write('y');
    expect((await h.readBytes(client, 1)).toString()).toBe('y');
    client.resume();
    server.resume();
    return { fwd, client, server, wc, ws };
  }

  describe('half-close', () => {
    it('client ends first: the server replies after the FIN, the client gets all of it, then end', async () => {
      const srv = await h.startHashServer({ replyBytes: 3 * MiB, when: 'end' });
      const fwd = await h.startForwarder(srv, opts());
      const client = await h.connectTo(fwd.port);
      const w = h.watch(client);
      const got = h.hashUntilEnd(client);
      const sent = await h.writeRandom(client, 31, 2 * MiB);
      const rec = await srv.records.nth(0);
      expect(await rec.received).toEqual(sent);
      expect(await got).toEqual(await rec.sent);
      expect(w.state.ended).toBe(true);
      expect((await w.closed).errorCode).toBeUndefined();
      expect(await fwd.result(0)).toMatchObject({ engine, reason: 'eof', bytesAtoB: 2 * MiB, bytesBtoA: 3 * MiB });
    });

    it('server ends first: the client keeps sending after the FIN, the server gets all of it', async () => {
      const srv = await h.startHashServer({ replyBytes: 1 * MiB, when: 'connect' });
      const fwd = await h.startForwarder(srv, opts());
      const client = await h.connectTo(fwd.port);
      const w = h.watch(client);
      const got = await h.hashUntilEnd(client); // the server's FIN has arrived
      const rec = await srv.records.nth(0);
      expect(got).toEqual(await rec.sent);
      const sent = await h.writeRandom(client, 41, 3 * MiB);
      expect(await rec.received).toEqual(sent);
      expect((await w.closed).errorCode).toBeUndefined();
      expect(await fwd.result(0)).toMatchObject({ engine, reason: 'eof', bytesAtoB: 3 * MiB, bytesBtoA: 1 * MiB });
    });

    it('both end at the same moment: each gets the other last byte and end, result eof', async () => {
      // The pair is running before the race.
      const { fwd, client, server, wc, ws } = await establishedPair(opts());
      const clientGot = h.collectUntilEnd(client);
      const serverGot = h.collectUntilEnd(server);
      client.end('c');
      server.end('s');
      expect((await clientGot).toString()).toBe('s');
      expect((await serverGot).toString()).toBe('c');
      expect((await wc.closed).errorCode).toBeUndefined();
      expect((await ws.closed).errorCode).toBeUndefined();
      expect(await fwd.result(0)).toMatchObject({ engine, reason: 'eof', bytesAtoB: 2, bytesBtoA: 2 });
    });
  });

  describe('reset, abort, idle timeout', () => {

    it('a reset by the server reaches the client as ECONNRESET; reason reset, side b', async () => {
      const { fwd, client, server, wc } = await establishedPair(opts());
      server.resetAndDestroy();
      const seen = await h.within(wc.finished, 10_000, 'client to close');
      expect(seen).toMatchObject({ errorCode: 'ECONNRESET', ended: false });
      expect(client.destroyed).toBe(true);
      const result = await fwd.result(0);
      expect(result).toMatchObject({ engine, reason: 'reset' });
      expect(result.error?.side).toBe('b');
      expect(['ECONNRESET', 'EPIPE']).toContain(result.error?.code);
    });

    it('a reset by the client reaches the server as ECONNRESET; reason reset, side a', async () => {
      const { fwd, client, ws } = await establishedPair(opts());
      client.resetAndDestroy();
      const seen = await h.within(ws.finished, 10_000, 'server socket to close');
      expect(seen).toMatchObject({ errorCode: 'ECONNRESET', ended: false });
      expect((await ws.closed).hadError).toBe(true);
      const result = await fwd.result(0);
      expect(result).toMatchObject({ engine, reason: 'reset' });
      expect(result.error?.side).toBe('a');
      expect(['ECONNRESET', 'EPIPE']).toContain(result.error?.code);
    });

    it('abort via AbortSignal resets both peers; reason aborted', async () => {
      const ac = new AbortController();
      const { fwd, wc, ws } = await establishedPair(opts({ signal: ac.signal }));
      ac.abort();
      const [c, s] = await h.within(Promise.all([wc.finished, ws.finished]), 10_000, 'both peers to close');
      expect(c).toMatchObject({ errorCode: 'ECONNRESET', ended: false });
      expect(s).toMatchObject({ errorCode: 'ECONNRESET', ended: false });
      expect(await fwd.result(0)).toMatchObject({ engine, reason: 'aborted' });
    });

    it('pairs sharing one signal: aborting it resets those still open, not one that ended before', async () => {
      const ac = new AbortController();
      const srv = await h.startServer();
      const fwd = await h.startForwarder(srv, opts({ signal: ac.signal }));
      const open = async (n: number) => {
        const client = await h.connectTo(fwd.port);
        const server = await srv.conns.nth(n);
        client.write('x');
        expect((await h.readBytes(server, 1)).toString()).toBe('x');
        server.write('y');
        expect((await h.readBytes(client, 1)).toString()).toBe('y');
        client.resume();
        server.resume();
        return { client, server, wc: h.watch(client), ws: h.watch(server) };
      };
      const first = await open(0);
      const second = await open(1);
      first.client.end();
      first.server.end();
      expect(await h.within(fwd.resultOf(first.client), 10_000, 'the first pair to end')).toMatchObject({ engine, reason: 'eof' });
      const third = await open(2);
      ac.abort();
      for (const pair of [second, third]) {
        const [c, s] = await h.within(Promise.all([pair.wc.finished, pair.ws.finished]), 10_000, 'both peers to close');
        expect(c).toMatchObject({ errorCode: 'ECONNRESET', ended: false });
        expect(s).toMatchObject({ errorCode: 'ECONNRESET', ended: false });
        expect(await fwd.resultOf(pair.client)).toMatchObject({ engine, reason: 'aborted' });
      }
      expect(await fwd.resultOf(first.client)).toMatchObject({ engine, reason: 'eof' });
    });

    it('idle timeout closes both peers with a FIN; reason timeout, durationMs >= idleTimeout', async () => {
      const IDLE = 300;
      const { fwd, client, server, wc, ws } = await establishedPair(opts({ idleTimeout: IDLE }));
      await h.within(Promise.all([wc.ended, ws.ended]), 10_000, "both peers to get 'end'");
      expect(wc.state.errorCode).toBeUndefined();
      expect(ws.state.errorCode).toBeUndefined();
      client.end();
      server.end();
      const [c, s] = await h.within(Promise.all([wc.closed, ws.closed]), 10_000, 'both peers to close');
      expect(c.hadError).toBe(false);
      expect(s.hadError).toBe(false);
      const result = await fwd.result(0);
      expect(result).toMatchObject({ engine, reason: 'timeout', bytesAtoB: 1, bytesBtoA: 1 });
      expect(result.durationMs).toBeGreaterThanOrEqual(IDLE - 1); // a Node timer may seem up to 1 ms early
    });

    it('traffic restarts the idle timer: a byte every 100 ms keeps a 2 s pair alive', async () => {
      // Far above the write gap: on a loaded machine a 100 ms sleep may take several times that.
      const IDLE = 2000;
      const echo = await h.startEchoServer();
      const fwd = await h.startForwarder(echo, opts({ idleTimeout: IDLE }));
      const client = await h.connectTo(fwd.port);
      const w = h.watch(client);
      client.write('z');
      await h.readBytes(client, 1); // forward() is running from here on
      const firstEcho = Date.now();
      let echoed = 1;
      client.on('data', (c: Buffer) => (echoed += c.length));
      client.resume();
      let lastWrite = 0;
      for (let i = 1; i < 10; i++) {
        await h.sleep(100);
        lastWrite = Date.now();
        client.write('z');
      }
      await h.within(w.ended, 10_000, "client to get 'end' after the idle timeout");
      expect(echoed).toBe(10);
      const result = await fwd.result(0);
      expect(result).toMatchObject({ engine, reason: 'timeout', bytesAtoB: 10, bytesBtoA: 10 });
      // The pair lived through all the writes, then idled for IDLE ms (less 2 ms: Date.now() is whole ms).
      expect(result.durationMs).toBeGreaterThanOrEqual(lastWrite - firstEcho + IDLE - 2);
    });
  });

  describe.runIf(engine === 'splice')('SpliceEngine.close()', () => {
    it('aborts the pairs in flight, resets their peers, and a closed engine refuses new pairs', async () => {
      const spliceEngine = new SpliceEngine();
      h.onCleanup(() => void spliceEngine.close());
      const src = await h.startSourceServer(256 * MiB);
      const fwd = await h.startForwarder(src, opts({ spliceEngine }));
      const N = 5;
      const clients = await Promise.all(Array.from({ length: N }, () => h.connectTo(fwd.port)));
      const watches = clients.map((c) => h.watch(c));
      const received = clients.map(() => 0);
      clients.forEach((c, i) => c.on('data', (chunk: Buffer) => (received[i] += chunk.length)));
      const servers = await Promise.all(clients.map((_, i) => src.conns.nth(i)));
      const serverWatches = servers.map((s) => h.watch(s));
      expect(await h.waitFor(() => received.every((n) => n >= MiB), 30_000), `every client streaming: ${received}`).toBe(true);
      expect(spliceEngine.stats().pairs).toBe(N);

      await h.within(spliceEngine.close(), 10_000, 'engine.close()');
      await h.within(spliceEngine.close(), 10_000, 'a second engine.close()');

      const results = await Promise.all(clients.map((c) => fwd.resultOf(c)));
      expect(results.map((r) => r.reason)).toEqual(clients.map(() => 'aborted'));
      // These clients were receiving: a reset may surface as 'end' (see peerSawReset), a FIN as 'end' too.
      const seen = await h.within(Promise.all(watches.map((w) => w.finished)), 10_000, 'clients to close or end');
      const notReset = (socks: net.Socket[], obs: h.Observed[]) =>
        obs.flatMap((o, i) => (h.peerSawReset(socks[i], o) ? [] : [{ ...o, tcpState: h.tcpState(h.portsOf(socks[i])!.local, h.portsOf(socks[i])!.remote) }]));
      expect(notReset(clients, seen), 'clients that saw no reset').toEqual([]);
      const serverSeen = await h.within(Promise.all(serverWatches.map((w) => w.finished)), 10_000, 'server sockets to close or end');
      expect(notReset(servers, serverSeen), 'server sockets that saw no reset').toEqual([]);

      // A new pair on the closed engine: forward() rejects with an Error.
      const late = await h.connectTo(fwd.port);
      const lateWatch = h.watch(late);
      late.resume();
      const pair = await fwd.pairOf(late);
      const outcome = await h.within(pair.done, 10_000, 'forward() on a closed engine to settle');
      expect(outcome.result, 'forward() on a closed engine should reject').toBeUndefined();
      expect(outcome.error).toBeInstanceOf(Error);
      expect((outcome.error as Error).message).toMatch(/closed/i);
      await h.within(lateWatch.finished, 10_000, 'late client to be closed or ended');

      // The process carries on: the shared engine still forwards.
      const echo = await h.startEchoServer();
      const fwd2 = await h.startForwarder(echo, opts());
      const client = await h.connectTo(fwd2.port);
      const data = h.patternBytes(51, 1 * MiB);
      const got = h.hashUntilEnd(client);
      await h.writeBuffer(client, data);
      expect((await got).sha).toBe(h.sha256(data));
      expect(await fwd2.result(0)).toMatchObject({ engine: 'splice', reason: 'eof' });
    });
  });

  describe('resources', () => {
    it('keeps at most 4 MiB buffered when the reader is much slower than the writer', async () => {
      const spliceEngine = dedicatedEngine();
      const src = await h.startSourceServer(256 * MiB);
      const fwd = await h.startForwarder(src, opts(spliceEngine ? { spliceEngine } : {}));
      const client = await h.connectTo(fwd.port);
      const pair = await fwd.pairOf(client);

      // A slow reader: 200 KiB every 100 ms (~2 MiB/s).
      let received = 0;
      let budget = 0;
      client.on('data', (chunk: Buffer) => {
        received += chunk.length;
        budget -= chunk.length;
        if (budget <= 0) client.pause();
      });
      client.pause();
      const tick = setInterval(() => {
        budget = 200 * KiB;
        client.resume();
      }, 100);
      h.onCleanup(() => clearInterval(tick));

      const buffered = () =>
        spliceEngine
          ? spliceEngine.stats().bytesBuffered
          : pair.client.writableLength + pair.client.readableLength + pair.upstream.writableLength + pair.upstream.readableLength;
      let max = 0;
      let samples = 0;
      const until = Date.now() + 2500;
      while (Date.now() < until) {
        max = Math.max(max, buffered());
        samples++;
        await h.sleep(20);
      }
      clearInterval(tick);

      expect(samples).toBeGreaterThan(10);
      expect(received).toBeGreaterThan(0);
      expect(max, `forwarder buffered up to ${max} bytes`).toBeLessThanOrEqual(4 * MiB);
      // Backpressure reached the source: it could not push all 256 MiB.
      expect(src.written[0]).toBeLessThan(256 * MiB);

      client.resetAndDestroy();
      const result = await fwd.resultOf(client);
      expect(result).toMatchObject({ engine, reason: 'reset' });
    });

    it('returns to the baseline fd count after 10,000 short pairs (100 at a time)', async () => {
      const spliceEngine = dedicatedEngine();
      const echo = await h.startEchoServer();
      const fwd = await h.startForwarder(echo, opts(spliceEngine ? { spliceEngine } : {}));
      const failures: string[] = [];
      const onePair = async () => {
        const client = await h.connectTo(fwd.port);
        const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
        const got = h.collectUntilEnd(client);
        client.end('ping');
        const reply = await got;
        await closed;
        const result = await fwd.resultOf(client);
        if (reply.toString() !== 'ping' || result.reason !== 'eof' || result.engine !== engine) {
          failures.push(`reply ${JSON.stringify(reply.toString())}, result ${result.engine}/${result.reason}`);
        }
      };
      const batch = (n: number) => Promise.all(Array.from({ length: n }, onePair));
      // Idle pooled pipes are not a leak: count fds without them.
      const fds = () => h.openFdCount() - 2 * (spliceEngine?.stats().pipesIdle ?? 0);
      const settle = () => h.waitFor(() => fwd.pairs.items.every((p) => p.outcome !== undefined), 10_000);

      await batch(100); // warm up: servers, engine thread, pools
      await settle();
      let last = -1;
      await h.waitFor(() => last === (last = fds()), 5_000); // the same count twice in a row: settled
      const baseline = fds();
      const baselineTable = h.fdTable();

      const TOTAL = 10_000;
      const started = Date.now();
      for (let done = 0; done < TOTAL && Date.now() - started < 120_000; done += 100) await batch(100);
      expect(failures.slice(0, 5)).toEqual([]);
      expect(fwd.pairs.items.length).toBe(TOTAL + 100);
      expect(await settle()).toBe(true);

      await h.waitFor(() => fds() <= baseline, 5_000);
      const after = fds();
      expect(after, `fds: baseline ${baseline}, after ${after}; new: ${JSON.stringify(h.fdDiff(baselineTable, h.fdTable()))}`).toBeLessThanOrEqual(baseline);
      if (spliceEngine) {
        const stats = spliceEngine.stats();
        expect(stats.pairs).toBe(0);
        expect(stats.pipesInUse).toBe(0);
        expect(stats.bytesBuffered).toBe(0);
      }
    }, 180_000);
  });
});

describe("engine 'auto'", () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-tls-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const cert = (() => {
    if (!hasTool('openssl')) return undefined;
    const [key, crt] = [path.join(tmp, 'k'), path.join(tmp, 'c')];
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1', '-keyout', key, '-out', crt], { stdio: 'pipe' });
    return { key: fs.readFileSync(key), cert: fs.readFileSync(crt) };
  })();

  const plainEngine = spliceSkipReason ? 'js' : 'splice';
  it(`takes the ${plainEngine} engine for two plain sockets`, async () => {
    const echo = await h.startEchoServer();
    const fwd = await h.startForwarder(echo, { engine: 'auto' });
    const client = await h.connectTo(fwd.port);
    const data = h.patternBytes(61, 512 * KiB);
    const got = h.hashUntilEnd(client);
    await h.writeBuffer(client, data);
    expect((await got).sha).toBe(h.sha256(data));
    expect(await fwd.result(0)).toMatchObject({ engine: plainEngine, reason: 'eof', bytesAtoB: data.length, bytesBtoA: data.length });
  });

  it('gives a TLSSocket to the js engine, data intact', async (ctx) => {
    needsTool(ctx, 'openssl');
    const echo = await h.startEchoServer();
    const fwd = await h.startForwarder(echo, { engine: 'auto' }, { tls: cert! });
    // allowHalfOpen is passed on to the TLSSocket by tls.connect, though @types/node does not list it.
    const client = h.track(tls.connect({ host: h.HOST, port: fwd.port, rejectUnauthorized: false, allowHalfOpen: true } as tls.ConnectionOptions));
    await new Promise<void>((resolve, reject) => {
      client.once('secureConnect', () => resolve());
      client.once('error', reject);
    });
    const got = h.hashUntilEnd(client);
    const sent = await h.writeRandom(client, 71, 2 * MiB);
    expect(await got).toEqual(sent);
    expect(await fwd.result(0)).toMatchObject({ engine: 'js', reason: 'eof', bytesAtoB: 2 * MiB, bytesBtoA: 2 * MiB });
  });
});
