// release(): a live pair leaves the splice engine without losing a byte, and user space carries it on.
import { createHash } from 'node:crypto';
import type net from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { needsSplice } from './policy.js';
import { SpliceEngine, forwardJs, type ForwardResult } from '../src/index.js';
import type { ReleasedPair } from '../src/engine/contract.js';
import * as h from './helpers.js';
import { MiB } from './helpers.js';
import { connect, expectFdsBack, fdCount, hashServer, startSpliceRelay } from './splice-relay-helpers.js';

const HOST = '127.0.0.1';

afterEach(h.closeAll);

function newEngine(): SpliceEngine {
  const engine = new SpliceEngine();
  h.onCleanup(() => void engine.close());
  return engine;
}

/** The pending bytes first, then forwardJs: what a relay does when it moves a pair to user space. */
function carryOn(released: ReleasedPair): Promise<ForwardResult> {
  h.track(released.a);
  h.track(released.b);
  if (released.pendingAtoB.length > 0) released.b.write(released.pendingAtoB);
  if (released.pendingBtoA.length > 0) released.a.write(released.pendingBtoA);
  return forwardJs(released.a, released.b);
}

/** Writes `first` pattern bytes, waits for `between`, writes `rest`, ends; what was sent, hashed. */
async function writeInTwo(socket: net.Socket, seed: number, first: number, rest: number, between: Promise<void>): Promise<h.Sent> {
  const source = new h.PatternSource(seed, first + rest);
  const hash = createHash('sha256');
  const write = async (n: number) => {
    for (let left = n; left > 0; ) {
      const chunk = source.next(Math.min(left, 100_000))!;
      hash.update(chunk);
      left -= chunk.length;
      if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
    }
  };
  await write(first);
  await between;
  await write(rest);
  socket.end();
  return { bytes: first + rest, sha: hash.digest('hex') };
}

/** Waits until the engine holds bytes (a destination is full) and it has stayed so a moment. */
async function holdsBytes(engine: SpliceEngine): Promise<void> {
  expect(await h.waitFor(() => engine.stats().bytesBuffered > 0, 20_000), 'bytes held in the engine').toBe(true);
  await h.sleep(100);
}

describe('SpliceEngine release()', () => {
  beforeEach(needsSplice);
  it('mid-stream both ways: the pending bytes, then forwardJs, give SHA-256 identical streams', async () => {
    const engine = newEngine();
    const baseline = fdCount(engine);
    const table = h.fdTable();
    const SIZE = 16 * MiB;
    const srv = await hashServer(HOST, () => SIZE, 'connect');
    const relay = await startSpliceRelay(engine, srv.port, { host: HOST });
    const client = await connect(HOST, relay.port);
    // A client that does not read yet: the server's bytes back up into the engine's pipe. It
    // sends half its bytes before the release and half after, so both directions are mid-stream.
    client.pause();
    let releasedNow!: () => void;
    const sent = writeInTwo(client, 1, SIZE / 2, SIZE / 2, new Promise<void>((resolve) => (releasedNow = resolve)));
    const pair = await relay.pairs.nth(0);
    const control = await pair.control;
    await holdsBytes(engine);

    control.release();
    control.release(); // a second release of the same pair is ignored
    const spliced = await h.within(pair.result, 20_000, 'the released result');
    releasedNow();
    expect(spliced).toMatchObject({ engine: 'splice', reason: 'released' });
    const released = spliced.released!;
    expect(released.pendingBtoA.length, 'bytes held for the paused client').toBeGreaterThan(0);
    expect(released).toMatchObject({ endedAtoB: false, finishedAtoB: false, endedBtoA: false, finishedBtoA: false });
    // TCP handles on the returned fds, paused: nothing is read before the caller resumes.
    expect(released.a.remotePort).toBe(client.localPort);
    expect(released.b.remotePort).toBe(srv.port);
    expect(released.b.readableFlowing).toBe(false);
    await h.sleep(50);
    expect(released.b.readableLength).toBe(0);
    expect(engine.stats()).toMatchObject({ pairs: 0, pipesInUse: 0, bytesBuffered: 0 });

    const user = carryOn(released);
    const got = h.hashUntilEnd(client);
    const rec = await srv.records.nth(0);
    const [clientSent, serverGot, serverSent, clientGot] = await Promise.all([sent, rec.received, rec.sent, got]);
    expect(serverGot).toEqual(clientSent);
    expect(clientGot).toEqual(serverSent);
    const carried = await user;
    expect(carried).toMatchObject({ engine: 'js', reason: 'eof' });
    expect(spliced.bytesAtoB + released.pendingAtoB.length + carried.bytesAtoB).toBe(SIZE);
    expect(spliced.bytesBtoA + released.pendingBtoA.length + carried.bytesBtoA).toBe(SIZE);

    expect(await expectFdsBack(engine, baseline, table)).toBeUndefined();
  });

  it('after the client half-closed: its FIN was passed on, the server streams on, SHA-256 identical', async () => {
    const engine = newEngine();
    const baseline = fdCount(engine);
    const table = h.fdTable();
    const srv = await hashServer(HOST, () => 12 * MiB, 'end');
    const relay = await startSpliceRelay(engine, srv.port, { host: HOST });
    const client = await connect(HOST, relay.port);
    client.pause();
    const sent = await h.writeRandom(client, 2, 3 * MiB); // and end()
    const pair = await relay.pairs.nth(0);
    const control = await pair.control;
    const rec = await srv.records.nth(0);
    expect(await rec.received).toEqual(sent); // the FIN reached the server: it replies now
    await holdsBytes(engine);

    control.release();
    const spliced = await pair.result;
    expect(spliced.reason).toBe('released');
    const released = spliced.released!;
    expect(released).toMatchObject({ endedAtoB: true, finishedAtoB: true, endedBtoA: false, finishedBtoA: false });
    expect(released.pendingAtoB.length).toBe(0);
    expect(spliced.bytesAtoB).toBe(sent.bytes);

    const user = carryOn(released);
    const got = h.hashUntilEnd(client);
    expect(await got).toEqual(await rec.sent);
    const carried = await user;
    expect(carried).toMatchObject({ reason: 'eof', bytesAtoB: 0 });
    expect(spliced.bytesBtoA + released.pendingBtoA.length + carried.bytesBtoA).toBe(12 * MiB);

    expect(await expectFdsBack(engine, baseline, table)).toBeUndefined();
  });

  it('right after the start, before any byte moved: nothing pending, nothing lost', async () => {
    const engine = newEngine();
    const srv = await hashServer(HOST, () => 2 * MiB, 'end');
    const relay = await startSpliceRelay(engine, srv.port, { host: HOST });
    const client = await connect(HOST, relay.port);
    const pair = await relay.pairs.nth(0);
    (await pair.control).release();
    const spliced = await pair.result;
    expect(spliced).toMatchObject({ reason: 'released', bytesAtoB: 0, bytesBtoA: 0 });
    const user = carryOn(spliced.released!);
    const got = h.hashUntilEnd(client);
    const sent = await h.writeRandom(client, 3, 5 * MiB);
    const rec = await srv.records.nth(0);
    expect(await rec.received).toEqual(sent);
    expect(await got).toEqual(await rec.sent);
    expect((await user).reason).toBe('eof');
  });

  it('releasing a pair that has ended is harmless: its own result stands', async () => {
    const engine = newEngine();
    const baseline = fdCount(engine);
    const table = h.fdTable();
    const srv = await hashServer(HOST, () => 1000, 'end');
    const relay = await startSpliceRelay(engine, srv.port, { host: HOST });
    const client = await connect(HOST, relay.port);
    const got = h.hashUntilEnd(client);
    await h.writeRandom(client, 4, 5000);
    const pair = await relay.pairs.nth(0);
    const result = await pair.result;
    expect(result).toMatchObject({ reason: 'eof', bytesAtoB: 5000, bytesBtoA: 1000 });
    expect(result.released).toBeUndefined();
    expect((await got).bytes).toBe(1000);
    const control = await pair.control;
    control.release();
    control.release();
    await h.waitFor(() => {
      const { pairs, pipesInUse, bytesBuffered } = engine.stats();
      return pairs === 0 && pipesInUse === 0 && bytesBuffered === 0;
    }, 10_000);
    expect(engine.stats()).toMatchObject({ pairs: 0, pipesInUse: 0, bytesBuffered: 0 });
    expect(await expectFdsBack(engine, baseline, table)).toBeUndefined();
  });

  it('a release racing an engine close: the pair comes back released or aborted, never lost', async () => {
    const engine = new SpliceEngine();
    const baseline = fdCount(engine);
    const table = h.fdTable();
    const srv = await hashServer(HOST, () => 64 * MiB, 'connect');
    const relay = await startSpliceRelay(engine, srv.port, { host: HOST });
    const client = await connect(HOST, relay.port);
    client.pause();
    const pair = await relay.pairs.nth(0);
    await holdsBytes(engine);
    (await pair.control).release();
    const closed = engine.close();
    const result = await pair.result;
    await h.within(closed, 10_000, 'engine close');
    expect(['released', 'aborted']).toContain(result.reason);
    if (result.released) {
      result.released.a.destroy();
      result.released.b.destroy();
    }
    expect(await expectFdsBack(engine, baseline, table)).toBeUndefined();
  });
});
