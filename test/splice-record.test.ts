// Recording spliced pairs to pcap: the payload goes socket -> pipe -> tee -> record pipe -> file
// on native threads, and tshark must read back exactly the bytes that were sent, on both legs.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SpliceEngine, forwardJs, type ForwardResult } from '../src/index.js';
import { openNativePcap, type NativePcapSink } from '../src/engine/splice/pcap-sink.js';
import { MAX_SEGMENT, TcpConversation, timestampNow, type Side } from '../src/pcap/tcp-conversation.js';
import type { ReleasedPair } from '../src/engine/contract.js';
import * as h from './helpers.js';
import { KiB, MiB } from './helpers.js';
import { parseFollow, parsePcap, tshark } from './relay-pcap-helpers.js';
import { needsSplice, needsTool } from './policy.js';
import { connect, expectFdsBack, fdCount, hashServer, startSpliceRelay, type Host, type RelayPair } from './splice-relay-helpers.js';


afterEach(h.closeAll);

let dir: string;
let files = 0;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-record-'));
});
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});
const newFile = () => path.join(dir, `${++files}.pcap`);

function newEngine(options: ConstructorParameters<typeof SpliceEngine>[0] = {}): SpliceEngine {
  const engine = new SpliceEngine(options);
  h.onCleanup(() => void engine.close());
  return engine;
}

/** What one pair's two peers sent, as hashes. */
interface Sent {
  pair: RelayPair;
  client: h.Sent;
  server: h.Sent;
}

/** tshark's view of a node, as parseFollow gives it. */
const node = (address: string, port: number) => (address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`);

/**
 * Every leg of every pair, as tshark follows it, carries exactly what the client and the server
 * sent; nothing in the file trips tshark's TCP analysis; no segment is over MAX_SEGMENT.
 */
function expectRecorded(file: string, sent: Sent[], legCount: number): void {
  const streams = sent.length * legCount;
  const follows = Array.from({ length: streams }, (_, i) => ['-z', `follow,tcp,raw,${i}`]).flat();
  const followed = parseFollow(tshark(['-r', file, '-q', ...follows]));
  expect(followed).toHaveLength(streams);
  const problems: string[] = [];
  for (const { pair, client, server } of sent) {
    pair.legs.forEach((leg, i) => {
      const { client: c, server: s } = leg.state();
      const stream = followed.find((f) => f.node0 === node(c.address, c.port));
      if (!stream) return problems.push(`pair ${pair.index} leg ${i}: no stream from ${node(c.address, c.port)}`);
      if (stream.node1 !== node(s.address, s.port)) problems.push(`pair ${pair.index} leg ${i}: to ${stream.node1}`);
      const got = { client: { bytes: stream.client.length, sha: h.sha256(stream.client) }, server: { bytes: stream.server.length, sha: h.sha256(stream.server) } };
      if (got.client.sha !== client.sha) problems.push(`pair ${pair.index} leg ${i}: client bytes ${got.client.bytes}/${client.bytes}`);
      if (got.server.sha !== server.sha) problems.push(`pair ${pair.index} leg ${i}: server bytes ${got.server.bytes}/${server.bytes}`);
    });
  }
  expect(problems).toEqual([]);
  expect(tshark(['-r', file, '-Y', 'tcp.analysis.flags'])).toBe('');
  const records = parsePcap(fs.readFileSync(file));
  expect(Math.max(...records.map((r) => r.payload.length))).toBeLessThanOrEqual(MAX_SEGMENT);
}

/** N clients through the relay, each sending and receiving `size(i)` bytes at once; all results. */
async function transfer(host: Host, engine: SpliceEngine, sink: NativePcapSink, n: number, size: (i: number) => number) {
  const srv = await hashServer(host, size, 'connect');
  const relay = await startSpliceRelay(engine, srv.port, { host, sink });
  const sent = await Promise.all(Array.from({ length: n }, async (_, i) => {
    const client = await connect(host, relay.port);
    const port = client.localPort;
    const [clientSent, clientGot] = await Promise.all([h.writeRandom(client, 100 + i, size(i)), h.hashUntilEnd(client)]);
    const pair = await relay.pairs.find((p) => p.clientPort === port, `pair of client ${i}`);
    const rec = await srv.records.find((r) => r.remotePort === pair.upstreamPort, `server side of pair ${i}`);
    const [serverGot, serverSent] = await Promise.all([rec.received, rec.sent]);
    expect(serverGot).toEqual(clientSent);
    expect(clientGot).toEqual(serverSent);
    return { pair, client: clientSent, server: serverSent };
  }));
  const results = await Promise.all(sent.map((s) => s.pair.result));
  return { sent, results };
}

/** Each record split into its headers (pcap record header through TCP header) and its payload. */
function splitRecords(file: Buffer): { headers: Buffer; payload: Buffer; ts: bigint; sport: number; flags: number }[] {
  const parsed = parsePcap(file);
  let at = 24;
  return parsed.map((r) => {
    const length = 16 + r.inclLen;
    const record = file.subarray(at, at + length);
    at += length;
    return {
      headers: record.subarray(0, length - r.payload.length),
      payload: r.payload,
      ts: BigInt(r.tsSec) * 1_000_000n + BigInt(r.tsUsec),
      sport: r.sport,
      flags: r.flags,
    };
  });
}

/**
 * Replays what the engine recorded for one leg through TcpConversation (from its state after the
 * handshake) and expects the same header bytes: the C++ port cuts, numbers, acknowledges and
 * closes exactly as pcap.ts does.
 */
function expectSameAsJs(file: Buffer, leg: TcpConversation): void {
  const state = leg.state();
  const conv = TcpConversation.fromState(state);
  const ports = new Set([state.client.port, state.server.port]);
  const records = splitRecords(file).filter((r) => ports.has(r.sport)).slice(3); // after the handshake JS wrote
  const sideOf = (r: { sport: number }): Side => (r.sport === state.client.port ? 'client' : 'server');
  const expected: Buffer[] = [];
  for (let k = 0; k < records.length; ) {
    const r = records[k];
    if (r.flags & 0x01) {
      expected.push(conv.fin(sideOf(r), r.ts));
      k += 2;
    } else if (r.flags & 0x04) {
      expected.push(conv.reset(sideOf(r), r.ts));
      k += 1;
    } else if (r.payload.length === 0) {
      // A pure ACK comes only before a segment that would reach the window's edge.
      const data = records[k + 1];
      expected.push(conv.dataHeader(sideOf(data), data.payload.length, data.ts));
      k += 2;
    } else {
      expected.push(conv.dataHeader(sideOf(r), r.payload.length, r.ts));
      k += 1;
    }
  }
  const actual = Buffer.concat(records.map((r) => r.headers));
  expect(actual.length).toBe(Buffer.concat(expected).length);
  expect(actual.equals(Buffer.concat(expected))).toBe(true);
}

describe('recording spliced pairs to pcap', () => {
  beforeEach((ctx) => {
    needsSplice(ctx);
    needsTool(ctx, 'tshark');
  });
  it.each(['127.0.0.1', '::1'] as const)('one pair over %s, 6 MiB each way, both legs: tshark reads back every byte', async (host) => {
    const engine = newEngine();
    const file = newFile();
    const sink = await openNativePcap(engine, file);
    const { sent, results } = await transfer(host, engine, sink, 1, () => 6 * MiB);
    expect(results[0]).toMatchObject({ engine: 'splice', reason: 'eof', bytesAtoB: 6 * MiB, bytesBtoA: 6 * MiB });
    expect(results[0].recordingDropped).toBeUndefined();
    await h.within(sink.close(), 20_000, 'sink close');
    expect(engine.stats()).toMatchObject({ recorders: 0, recordQueuedBytes: 0, recordPipes: 0, recordingsDropped: 0 });
    expectRecorded(file, sent, 2);
    // Cut at MAX_SEGMENT: a 6 MiB stream has full-size segments.
    expect(parsePcap(fs.readFileSync(file)).some((r) => r.payload.length === MAX_SEGMENT)).toBe(true);
  });

  it('6 concurrent pairs on 2 loop threads into one file: every leg of every pair byte-exact', async () => {
    const engine = newEngine({ threads: 2 });
    const file = newFile();
    const sink = await openNativePcap(engine, file);
    const size = (i: number) => 256 * KiB + i * 300 * KiB + i;
    const { sent, results } = await transfer('127.0.0.1', engine, sink, 6, size);
    for (const result of results) expect(result).toMatchObject({ reason: 'eof' });
    expect(results.some((r) => r.recordingDropped)).toBe(false);
    await sink.close();
    expectRecorded(file, sent, 2);
  });

  it('JS records written through the same sink keep their place (handshake before spliced data, one leg)', async () => {
    const engine = newEngine();
    const file = newFile();
    const sink = await openNativePcap(engine, file);
    const srv = await hashServer('::1', () => 300 * KiB, 'end');
    const relay = await startSpliceRelay(engine, srv.port, { host: '::1', sink, legCount: 1 });
    const client = await connect('::1', relay.port);
    const got = h.hashUntilEnd(client);
    const clientSent = await h.writeRandom(client, 9, 700 * KiB);
    const pair = await relay.pairs.nth(0);
    const rec = await srv.records.nth(0);
    expect(await got).toEqual(await rec.sent);
    expect((await pair.result).reason).toBe('eof');
    await sink.close();
    expectRecorded(file, [{ pair, client: clientSent, server: await rec.sent }], 1);
    // SYN, SYN/ACK, ACK first; then data; the FINs last.
    const records = parsePcap(fs.readFileSync(file));
    expect(records.slice(0, 3).map((r) => r.flags)).toEqual([0x02, 0x12, 0x10]);
    expect(records.filter((r) => r.flags & 0x01)).toHaveLength(2);
  });

  it('a pair released mid-stream and carried on in JS appends to the same conversations, byte-exact', async () => {
    const engine = newEngine();
    const file = newFile();
    const sink = await openNativePcap(engine, file);
    const SIZE = 8 * MiB;
    const srv = await hashServer('127.0.0.1', () => SIZE, 'connect');
    const relay = await startSpliceRelay(engine, srv.port, { host: '127.0.0.1', sink });
    const client = await connect('127.0.0.1', relay.port);
    client.pause();
    const clientSent = h.writeRandom(client, 11, SIZE);
    const pair = await relay.pairs.nth(0);
    expect(await h.waitFor(() => engine.stats().bytesBuffered > 0, 20_000)).toBe(true);
    (await pair.control).release();
    const spliced = await pair.result;
    expect(spliced.reason).toBe('released');
    const released = spliced.released!;
    expect(released.recording).toHaveLength(2);
    const carried = carryOnRecording(sink, released);
    const clientGot = h.hashUntilEnd(client);
    const rec = await srv.records.nth(0);
    expect(await rec.received).toEqual(await clientSent);
    expect(await clientGot).toEqual(await rec.sent);
    expect((await carried).reason).toBe('eof');
    await sink.close();
    expectRecorded(file, [{ pair, client: await clientSent, server: await rec.sent }], 2);
  });

  it.each(['127.0.0.1', '::1'] as const)('over %s the native records are byte for byte what TcpConversation writes (FIN and RST ends)', async (host) => {
    const engine = newEngine();
    const file = newFile();
    const sink = await openNativePcap(engine, file);
    const { sent } = await transfer(host, engine, sink, 1, () => 1 * MiB + 12_345);
    // A second pair ends with a reset from the server, after some bytes both ways.
    const srv = await hashServer(host, () => 0, 'end');
    const relay = await startSpliceRelay(engine, srv.port, { host, sink });
    const client = await connect(host, relay.port);
    client.write(Buffer.alloc(200_000, 1));
    const rec = await srv.records.nth(0);
    await h.readBytes(rec.socket, 200_000);
    rec.socket.write(Buffer.alloc(100_000, 2));
    await h.readBytes(client, 100_000);
    rec.socket.resetAndDestroy();
    const reset = await (await relay.pairs.nth(0)).result;
    expect(reset).toMatchObject({ reason: 'reset', error: { side: 'b' } });
    await sink.close();
    const bytes = fs.readFileSync(file);
    const legs = [...sent[0].pair.legs, ...(await relay.pairs.nth(0)).legs];
    for (const leg of legs) expectSameAsJs(bytes, leg);
    // Both legs of the reset pair end in a RST from the server side.
    const rsts = parsePcap(bytes).filter((r) => r.flags & 0x04);
    expect(rsts.map((r) => r.sport).sort()).toEqual([legs[2].state().server.port, legs[3].state().server.port].sort());
  });

  it('pairs on the read/write fallback (no pipe to be had) are recorded too', async () => {
    const engine = newEngine({ maxPipes: 1 });
    // A pair whose client does not read holds the one pipe, full, until it is destroyed.
    const src = await h.startSourceServer(64 * MiB);
    const stuckRelay = await startSpliceRelay(engine, src.port, { host: '127.0.0.1' });
    const stuck = await connect('127.0.0.1', stuckRelay.port);
    stuck.pause();
    expect(await h.waitFor(() => engine.stats().pipesInUse === 1, 10_000)).toBe(true);
    const file = newFile();
    const sink = await openNativePcap(engine, file);
    const { sent, results } = await transfer('127.0.0.1', engine, sink, 2, (i) => 2 * MiB + i * 77_777);
    for (const result of results) expect(result).toMatchObject({ reason: 'eof' });
    expect(engine.stats().readWriteFallbacks).toBeGreaterThanOrEqual(2);
    stuck.destroy();
    await sink.close();
    expectRecorded(file, sent, 2);
  });

  it('a FIFO nobody reads: traffic byte-exact, recording reported dropped, engine close does not hang, no fd left', async () => {
    const engine = new SpliceEngine({ recordBufferBytes: 2 * MiB });
    const baseline = fdCount(engine);
    const table = h.fdTable();
    const fifo = path.join(dir, `${++files}.fifo`);
    execFileSync('mkfifo', [fifo]);
    // A reader that never reads: the FIFO takes 64 KiB, then the writer thread can only wait.
    const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    try {
      const errors: Error[] = [];
      const sink = await openNativePcap(engine, fifo, { onError: (err) => errors.push(err) });
      const { results } = await transfer('127.0.0.1', engine, sink, 2, () => 8 * MiB);
      for (const result of results) expect(result).toMatchObject({ reason: 'eof', bytesAtoB: 8 * MiB, bytesBtoA: 8 * MiB, recordingDropped: true });
      expect(engine.stats().recordingsDropped).toBe(2);
      expect(sink.write(Buffer.alloc(3 * MiB))).toBe(false); // over the bound: dropped, never queued
      expect(sink.writesDropped).toBe(1);
      const closing = sink.close();
      closing.catch(() => {});
      await h.within(engine.close(), 10_000, 'engine close');
      await expect(closing).rejects.toMatchObject({ code: 'ERR_PCAP_INCOMPLETE' });
      expect(errors).toEqual([]);
    } finally {
      fs.closeSync(reader);
    }
    expect(await expectFdsBack(engine, baseline, table)).toBeUndefined();
  });

  it('a write error (the FIFO reader left: EPIPE) stops the recorder and is reported; traffic goes on', async () => {
    const engine = newEngine();
    const fifo = path.join(dir, `${++files}.fifo`);
    execFileSync('mkfifo', [fifo]);
    const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const errors: Error[] = [];
    const sink = await openNativePcap(engine, fifo, { onError: (err) => errors.push(err) });
    fs.closeSync(reader);
    const { results } = await transfer('127.0.0.1', engine, sink, 1, () => 2 * MiB);
    // The writer may meet EPIPE before or after the pair ends (then its records were all queued):
    // the pair's traffic is whole either way, and the error reaches onError and close().
    expect(results[0]!.reason).toBe('eof');
    expect(await h.waitFor(() => errors.length > 0, 10_000)).toBe(true);
    expect(errors.map((e) => (e as NodeJS.ErrnoException).code)).toEqual(['EPIPE']);
    // A pair started after the failure is not recorded, and says so.
    const after = await transfer('127.0.0.1', engine, sink, 1, () => 64 * KiB);
    expect(after.results[0]).toMatchObject({ reason: 'eof', recordingDropped: true });
    expect(sink.error).toBe(errors[0]);
    expect(sink.write(Buffer.alloc(10))).toBe(false);
    await expect(sink.close()).rejects.toMatchObject({ code: 'EPIPE' });
    expect(engine.stats()).toMatchObject({ recorders: 0, recordPipes: 0, recordQueuedBytes: 0 });
  });
});

/**
 * What a relay does with a released recorded pair: the pending bytes are already recorded, so
 * they are written out unrecorded; from then on every chunk read is recorded on each leg before
 * it is forwarded, and each FIN once (a direction finished in the engine has its FIN recorded).
 */
function carryOnRecording(sink: NativePcapSink, released: ReleasedPair): Promise<ForwardResult> {
  const legs = released.recording!.map((state) => TcpConversation.fromState(state));
  h.track(released.a);
  h.track(released.b);
  const tap = (socket: typeof released.a, from: Side) => {
    socket.on('data', (chunk: Buffer) => {
      for (const leg of legs) sink.write(leg.data(from, chunk, timestampNow()));
    });
    socket.once('end', () => {
      for (const leg of legs) if (!leg.state()[from].finished) sink.write(leg.fin(from, timestampNow()));
    });
  };
  tap(released.a, 'client');
  tap(released.b, 'server');
  if (released.pendingAtoB.length > 0) released.b.write(released.pendingAtoB);
  if (released.pendingBtoA.length > 0) released.a.write(released.pendingBtoA);
  return forwardJs(released.a, released.b);
}
