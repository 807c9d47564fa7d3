// Recording through the relay, read back by tshark: both legs of each connection, byte for byte,
// in one file or one file per connection, IPv4 and IPv6; a fault shows as the legs differing.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { Recorder } from '../src/relay/recording.js';
import { openNativePcap } from '../src/engine/splice/pcap-sink.js';
import { relayDataPath, type RelayConnectionRecord } from '../src/relay/relay.js';
import { parseToxic, type ToxicInput } from '../src/relay/toxics.js';
import { Arrivals, collectUntilEnd, onCleanup, patternBytes, startServer, waitFor, within, writeBuffer } from './helpers.js';
import { canListenOnV6Loopback } from './proxy-helpers.js';
import { parseFollow, tshark } from './relay-pcap-helpers.js';
import { autoEngine, modes, spliceEngineFor } from './relay-path-helpers.js';
import { needsSplice, needsTool } from './policy.js';
import net from 'node:net';

const dir = mkdtempSync(join(tmpdir(), 'splicer-record-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Exchange {
  up: Buffer;
  down: Buffer;
  clientGot: Buffer;
  serverGot: Buffer;
}

/** One connection through a recording relay: the client sends `up` and ends, the server answers `down` and ends. */
async function exchange(port: number, host: string, up: Buffer, down: Buffer, server: Awaited<ReturnType<typeof startServer>>, n: number): Promise<Exchange> {
  const client = net.connect({ host, port, allowHalfOpen: true });
  await new Promise<void>((r, j) => client.once('connect', r).once('error', j));
  onCleanup(() => client.destroy());
  const clientGot = collectUntilEnd(client);
  await writeBuffer(client, up, { end: true });
  const upstream = await server.conns.nth(n);
  const serverGot = await within(collectUntilEnd(upstream), 10_000, 'server end');
  await writeBuffer(upstream, down, { end: true });
  return { up, down, clientGot: await within(clientGot, 10_000, 'client end'), serverGot };
}

async function recordingRelay(host: string, record: string, toxics: ToxicInput[], engine: 'auto' | 'js') {
  const server = await startServer((s) => s.resume(), host);
  const records = new Arrivals<RelayConnectionRecord>();
  const spliceEngine = spliceEngineFor(engine);
  // As createRelay does: with a splice engine, its writer thread writes the files.
  const recorder = new Recorder({ path: record }, spliceEngine ? (file) => openNativePcap(spliceEngine, file) : undefined);
  const open = relayDataPath({ seed: 7, engine, spliceEngine, recorder, onConnection: (r) => records.push(r) });
  const listener = await open({ name: 'rec', listen: { host, port: 0 }, upstream: { host, port: server.port } }, toxics.map(parseToxic));
  onCleanup(() => void listener.close());
  return { server, listener, records, recorder, spliceEngine };
}

function follow(file: string, streams: number): ReturnType<typeof parseFollow> {
  const args = ['-r', file, '-q'];
  for (let i = 0; i < streams; i++) args.push('-z', `follow,tcp,raw,${i}`);
  return parseFollow(tshark(args));
}

describe('relay recording read back by tshark', () => {
  beforeEach((ctx) => needsTool(ctx, 'tshark'));
  it.each(modes)('one file, two connections, both legs byte-exact (engine %s)', async (engine) => {
    const file = join(dir, `shared-${engine}.pcap`);
    const relay = await recordingRelay('127.0.0.1', file, [], engine);
    const exchanges: Exchange[] = [];
    for (let i = 0; i < 2; i++) {
      exchanges.push(await exchange(relay.listener.address.port, '127.0.0.1', patternBytes(10 + i, 300_000), patternBytes(20 + i, 200_000), relay.server, i));
    }
    await within(relay.records.nth(1), 10_000, 'records');
    // Spliced connections are recorded natively (tee), the payload never entering JS.
    for (const r of relay.records.items) expect(r.engine).toBe(engine === 'auto' ? autoEngine : 'js');
    await relay.listener.close();
    await relay.recorder.close();
    const streams = follow(file, 4);
    expect(streams).toHaveLength(4);
    for (const ex of exchanges) {
      const legs = streams.filter((s) => s.client.equals(ex.up));
      expect(legs).toHaveLength(2); // client leg and server leg
      for (const leg of legs) expect(leg.server.equals(ex.down)).toBe(true);
    }
    expect(tshark(['-r', file, '-Y', 'tcp.analysis.flags && !tcp.analysis.window_update'])).toBe('');
  });

  it('a bitflip toxic shows as the client leg differing from the server leg; one file per connection', async () => {
    const perConnection = join(dir, 'per-connection') + '/';
    const relay = await recordingRelay('127.0.0.1', perConnection, [{ type: 'bitflip', stream: 'downstream', attributes: { rate: 0.01 } }], 'js');
    const ex = await exchange(relay.listener.address.port, '127.0.0.1', patternBytes(1, 50_000), patternBytes(2, 80_000), relay.server, 0);
    const second = await exchange(relay.listener.address.port, '127.0.0.1', patternBytes(3, 10), patternBytes(4, 10), relay.server, 1);
    await within(relay.records.nth(1), 10_000, 'records');
    await relay.listener.close();
    await relay.recorder.close();
    const files = readdirSync(perConnection).sort();
    expect(files).toHaveLength(2);
    expect(relay.records.items.map((r) => r.recording?.split('/').pop()).sort()).toEqual(files);
    const [clientLeg, serverLeg] = follow(join(perConnection, files[0]!), 2).sort((a, b) => (a.node1.endsWith(String(relay.listener.address.port)) ? -1 : 1));
    expect(clientLeg!.client.equals(ex.up)).toBe(true);
    expect(serverLeg!.client.equals(ex.up)).toBe(true);
    expect(serverLeg!.server.equals(ex.down)).toBe(true);
    expect(clientLeg!.server.equals(ex.clientGot)).toBe(true);
    expect(clientLeg!.server.equals(ex.down)).toBe(false);
    const [legA] = follow(join(perConnection, files[1]!), 1);
    expect(legA!.client.equals(second.up)).toBe(true);
  });

  it.each(modes)('IPv6 connections are recorded as IPv6 conversations (engine %s)', async (engine) => {
    if (!(await canListenOnV6Loopback())) return;
    const file = join(dir, `v6-${engine}.pcap`);
    const relay = await recordingRelay('::1', file, [], engine);
    const ex = await exchange(relay.listener.address.port, '::1', patternBytes(5, 100_000), patternBytes(6, 70_000), relay.server, 0);
    await within(relay.records.nth(0), 10_000, 'record');
    await relay.listener.close();
    await relay.recorder.close();
    const streams = follow(file, 2);
    expect(streams).toHaveLength(2);
    for (const leg of streams) {
      expect(leg.node0).toContain('::1');
      expect(leg.client.equals(ex.up)).toBe(true);
      expect(leg.server.equals(ex.down)).toBe(true);
    }
  });

  it('a spliced, recorded connection that a toxic moves to user space reads back byte-exact on both legs', async (ctx) => {
    needsSplice(ctx);
    const file = join(dir, 'released.pcap');
    const relay = await recordingRelay('127.0.0.1', file, [], 'auto');
    const client = net.connect({ host: '127.0.0.1', port: relay.listener.address.port, allowHalfOpen: true });
    await new Promise<void>((r, j) => client.once('connect', r).once('error', j));
    onCleanup(() => client.destroy());
    const clientGot = collectUntilEnd(client);
    const upstream = await relay.server.conns.nth(0);
    const serverGot = collectUntilEnd(upstream);
    const first = patternBytes(30, 400_000);
    const second = patternBytes(31, 300_000);
    const back = patternBytes(32, 500_000);
    await waitFor(() => relay.spliceEngine!.stats().pairs === 1, 5000);
    await writeBuffer(client, first, { end: false });
    await writeBuffer(upstream, back.subarray(0, 200_000), { end: false });
    // Mid-stream: a toxic arrives, so the pair leaves the splice engine with bytes possibly in flight.
    relay.listener.setToxics([parseToxic({ type: 'latency', stream: 'downstream', attributes: { latency: 5 } })]);
    // The release is asynchronous: the FINs below must not reach the engine before it, or the pair
    // ends spliced, the toxic too late for it.
    expect(await waitFor(() => relay.spliceEngine!.stats().pairs === 0, 5000), 'the pair left the engine').toBe(true);
    await writeBuffer(client, second, { end: true });
    await writeBuffer(upstream, back.subarray(200_000), { end: true });
    expect((await within(serverGot, 10_000, 'server end')).equals(Buffer.concat([first, second]))).toBe(true);
    expect((await within(clientGot, 10_000, 'client end')).equals(back)).toBe(true);
    const record = await within(relay.records.nth(0), 10_000, 'record');
    // The whole record on failure: reason and bytes say whether the release happened at all.
    expect(record).toMatchObject({ engine: 'splice+js', reason: 'eof' });
    expect(record.recordingDropped).toBeUndefined();
    await relay.listener.close();
    await relay.recorder.close();
    const streams = follow(file, 2);
    expect(streams).toHaveLength(2);
    for (const leg of streams) {
      expect(leg.client.equals(Buffer.concat([first, second]))).toBe(true);
      expect(leg.server.equals(back)).toBe(true);
    }
  });
});
