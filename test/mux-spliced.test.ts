// The spliced mux session (src/mux/spliced-session.ts, native/mux_session.h) against our JS
// yamux (src/mux) and against raw bytes: streams hashed end to end both ways, windows, half-close,
// resets, isolation of a stalled stream, limits, GoAway, protocol errors, keepalive, fds.
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { createMuxSession, type MuxStream } from '../src/index.js';
import { FLAG, FRAME_TYPE, encodeHeader } from '../src/mux/frame.js';
import type { MuxError } from '../src/mux/errors.js';
import * as h from './helpers.js';
import { KiB, MiB } from './helpers.js';
import { spliceSkipReason } from './policy.js';
import { hashStream, streamError, writePattern } from './mux-helpers.js';
import { back, dial, echoRoundTrip, echoServer, front, splicedSession, tcpPair } from './mux-spliced-helpers.js';

afterEach(h.closeAll);

/** A spliced client session (n:1) facing a JS server session whose streams go to `onStream`. */
async function clientAgainstJs(onStream: (s: MuxStream) => void, options: { maxWindow?: number } = {}) {
  const { dialled, accepted } = await tcpPair();
  const ours = splicedSession(dialled, { role: 'client', ...options });
  const theirs = createMuxSession(accepted, { role: 'server', ...options });
  theirs.on('stream', onStream);
  h.onCleanup(() => theirs.destroy());
  const { port, results } = await front(ours);
  return { ours, theirs, port, results, sessionSocket: accepted };
}

/** A spliced server session (1:n) whose streams go to a TCP server on `targetPort`, facing a JS client session. */
async function serverAgainstJs(targetPort: number, options: { maxStreams?: number; maxWindow?: number } = {}) {
  const { dialled, accepted } = await tcpPair();
  const ours = splicedSession(accepted, { role: 'server', ...options });
  const theirs = createMuxSession(dialled, { role: 'client', maxWindow: options.maxWindow });
  h.onCleanup(() => theirs.destroy());
  const results = back(ours, targetPort);
  return { ours, theirs, results };
}

/** A TCP server whose connections go to `onConnection` (allowHalfOpen). */
async function tcpServer(onConnection: (s: net.Socket) => void): Promise<number> {
  const server = h.track(
    net.createServer({ allowHalfOpen: true }, (s) => {
      h.track(s);
      s.on('error', () => {});
      onConnection(s);
    }),
  );
  return h.listen(server);
}

/** Reads frames' headers from a raw socket (a hand-written peer). */
function headers(socket: net.Socket): { type: number; flags: number; id: number; length: number }[] {
  const seen: { type: number; flags: number; id: number; length: number }[] = [];
  let buffered = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => {
    buffered = Buffer.concat([buffered, d]);
    for (;;) {
      if (buffered.length < 12) break;
      const length = buffered.readUInt32BE(8);
      const payload = buffered[1] === FRAME_TYPE.DATA ? length : 0;
      if (buffered.length < 12 + payload) break;
      seen.push({ type: buffered[1], flags: buffered.readUInt16BE(2), id: buffered.readUInt32BE(4), length });
      buffered = buffered.subarray(12 + payload);
    }
  });
  return seen;
}

describe.skipIf(spliceSkipReason)('spliced mux session against src/mux', () => {
  it('n:1: 24 TCP clients at once through a spliced client session, echoed by a JS server session, hashed both ways', async () => {
    const { port, results } = await clientAgainstJs((s) => s.pipe(s));
    const rounds = await h.within(
      Promise.all(Array.from({ length: 24 }, async (_, i) => echoRoundTrip(await dial(port), i, 64 * KiB + i * 97 * KiB))),
      60_000,
      'echoes',
    );
    rounds.forEach((r, i) => {
      expect(r.got).toBe(r.sent);
      expect(r.gotBytes).toBe(64 * KiB + i * 97 * KiB);
    });
    const ends = await Promise.all(results);
    expect(ends.map((e) => e.reason)).toEqual(Array(24).fill('finished'));
    expect(ends.reduce((sum, e) => sum + e.bytesUp, 0)).toBe(rounds.reduce((sum, r) => sum + r.gotBytes, 0));
  });

  it('1:n: 24 streams a JS client session opens at once, carried to a TCP echo server, hashed both ways', async () => {
    const { ours, theirs, results } = await serverAgainstJs(await echoServer());
    const rounds = await h.within(
      Promise.all(
        Array.from({ length: 24 }, async (_, i) => {
          const stream = theirs.openStream();
          const received = hashStream(stream);
          const sent = await writePattern(stream, 300 + i, 32 * KiB + i * 71 * KiB);
          return { sent, received: await received };
        }),
      ),
      60_000,
      'echoes',
    );
    for (const r of rounds) expect(r.received).toEqual(r.sent);
    const ends = await Promise.all(results);
    expect(ends.map((e) => e.reason)).toEqual(Array(24).fill('finished'));
    expect(await h.waitFor(() => ours.streamCount === 0 && theirs.streamCount === 0, 5_000)).toBe(true);
  });

  it('carries 24 MiB each way on one stream, both directions at once, with 4 MiB windows', async () => {
    const { port, ours } = await clientAgainstJs((s) => s.pipe(s), { maxWindow: 4 * MiB });
    const r = await h.within(echoRoundTrip(await dial(port), 9, 24 * MiB), 60_000, '24 MiB echo');
    expect(r.gotBytes).toBe(24 * MiB);
    expect(r.got).toBe(r.sent);
    // Past the initial 256 KiB window only by WindowUpdates: at most 4 MiB granted, every byte in frames.
    const counts = ours.counts();
    expect(counts.largestWindow).toBeLessThanOrEqual(4 * MiB);
    expect(counts.dataFramesIn).toBeGreaterThanOrEqual(Math.ceil((24 * MiB) / counts.largestWindow));
  });

  it('1:n: 20 MiB from the peer to a slow-starting TCP reader arrive whole', async () => {
    const got = new h.Arrivals<h.Received>();
    const target = await tcpServer((s) => void h.hashUntilEnd(s).then((r) => got.push(r)));
    const { theirs } = await serverAgainstJs(target, { maxWindow: 4 * MiB });
    const stream = theirs.openStream();
    const sent = await h.within(writePattern(stream, 5, 20 * MiB), 60_000, 'writing 20 MiB');
    expect(await h.within(got.nth(0), 60_000, 'the target reading 20 MiB')).toEqual(sent);
  });

  it('half-close, our side first: the client ends, the peer answers after reading it all, the client reads the answer', async () => {
    const { port } = await clientAgainstJs((s) => {
      void hashStream(s).then((r) => s.end(`${r.bytes}:${r.sha}`));
    });
    const socket = await dial(port);
    const answer = h.collectUntilEnd(socket);
    const sent = await h.writeRandom(socket, 1, 3 * MiB);
    expect((await h.within(answer, 30_000, 'answer')).toString()).toBe(`${sent.bytes}:${sent.sha}`);
  });

  it('half-close, the peer first: it sends and ends, the client reads its end and still writes, the peer reads that', async () => {
    const heard = new h.Arrivals<h.Received>();
    const { port } = await clientAgainstJs((s) => {
      void hashStream(s).then((r) => heard.push(r));
      void writePattern(s, 2, 2 * MiB);
    });
    const socket = await dial(port);
    const fromPeer = await h.within(h.hashUntilEnd(socket), 30_000, 'the peer end');
    expect(fromPeer.bytes).toBe(2 * MiB);
    const sent = await h.writeRandom(socket, 3, 2 * MiB);
    expect(await h.within(heard.nth(0), 30_000, 'the peer reading')).toEqual(sent);
  });

  it('the peer finishes a stream and ends the connection: the TCP client still reads every byte, then its end, no reset', async () => {
    const body = h.patternBytes(9, 64 * KiB);
    let streamDone!: () => void;
    const finished = new Promise<void>((resolve) => (streamDone = resolve));
    const { ours, sessionSocket } = await clientAgainstJs((s) => {
      s.on('error', () => {});
      s.end(body, () => streamDone());
    });
    const socket = await dial((await front(ours)).port);
    socket.pause(); // nothing read until the connection beneath is gone
    socket.write('x');
    await h.within(finished, 10_000, 'the peer writing its stream and its FIN');
    sessionSocket.end();
    await h.within(new Promise((resolve) => ours.once('close', resolve)), 10_000, 'the spliced session closing');
    const seen = h.watch(socket);
    const got = h.collectUntilEnd(socket);
    socket.resume();
    expect(h.sha256(await h.within(got, 10_000, 'the client reading to its end'))).toBe(h.sha256(body));
    expect(seen.state.errorCode).toBeUndefined();
  });

  it('the peer resets a stream: the TCP client sees ECONNRESET; the client resets: the peer stream fails with ECONNRESET', async () => {
    const peerStreams = new h.Arrivals<MuxStream>();
    const { port, results } = await clientAgainstJs((s) => {
      s.on('error', () => {});
      peerStreams.push(s);
    });
    const a = await dial(port);
    const aSeen = h.watch(a);
    a.write('x');
    (await h.within(peerStreams.nth(0), 5_000, 'stream a')).destroy();
    expect(h.sawReset(await h.within(aSeen.closed, 5_000, 'a closing'))).toBe(true);
    expect((await results[0]).reason).toBe('reset');

    const b = await dial(port);
    b.write('y');
    const streamB = await h.within(peerStreams.nth(1), 5_000, 'stream b');
    const failed = streamError(streamB);
    b.resetAndDestroy();
    expect((await h.within(failed, 5_000, 'stream b failing')).code).toBe('ECONNRESET');
    expect((await results[1]).reason).toBe('error');
  });

  it('1:n: the target resets: the peer stream fails with ECONNRESET', async () => {
    const target = await tcpServer((s) => s.once('data', () => s.resetAndDestroy()));
    const { theirs } = await serverAgainstJs(target);
    const stream = theirs.openStream();
    const failed = streamError(stream);
    stream.write('hello');
    expect((await h.within(failed, 5_000, 'the stream failing')).code).toBe('ECONNRESET');
  });

  it('a stalled stream does not hold up another: 8 MiB reach client B while client A reads nothing', async () => {
    const peerStreams = new h.Arrivals<MuxStream>();
    const { port, ours } = await clientAgainstJs((s) => peerStreams.push(s), { maxWindow: 4 * MiB });
    const a = await dial(port);
    a.pause();
    a.write('a');
    const streamA = await h.within(peerStreams.nth(0), 5_000, 'stream a');
    const sentToA = writePattern(streamA, 10, 8 * MiB);
    const b = await dial(port);
    b.write('b');
    const streamB = await h.within(peerStreams.nth(1), 5_000, 'stream b');
    const receivedB = h.hashUntilEnd(b);
    const sentToB = await h.within(writePattern(streamB, 11, 8 * MiB), 30_000, 'writing to b');
    expect(await h.within(receivedB, 30_000, 'b reading')).toEqual(sentToB);
    // A's bytes (its window, 4 MiB at most) wait in its overflow; now its reader starts and gets them all.
    expect(ours.counts().overflowBytes).toBeGreaterThan(0);
    expect(ours.counts().overflowBytes).toBeLessThanOrEqual(4 * MiB);
    const receivedA = h.hashUntilEnd(a);
    expect(await h.within(receivedA, 30_000, 'a reading')).toEqual(await sentToA);
  });

  it('max streams: a stream past the limit is refused with RST; our own past it is refused without one', async () => {
    const target = await tcpServer(() => {});
    const { theirs, ours } = await serverAgainstJs(target, { maxStreams: 2 });
    const first = theirs.openStream();
    const second = theirs.openStream();
    first.write('1');
    second.write('2');
    expect(await h.waitFor(() => ours.streamCount === 2, 5_000)).toBe(true);
    const third = theirs.openStream();
    expect((await h.within(streamError(third), 5_000, 'the third refused')).code).toBe('ECONNREFUSED');
    expect(ours.streamCount).toBe(2);

    const { port } = await clientAgainstJs((s) => s.on('error', () => {}));
    const { dialled, accepted } = await tcpPair();
    const client = splicedSession(dialled, { role: 'client', maxStreams: 1 });
    const peer = createMuxSession(accepted, { role: 'server' });
    peer.on('stream', (s) => s.on('error', () => {}));
    h.onCleanup(() => peer.destroy());
    const one = await dial(port);
    void client.openStream(one);
    const two = await dial(port);
    await expect(client.openStream(two)).rejects.toMatchObject({ code: 'ERR_MUX_TOO_MANY_STREAMS' });
  });

  it("the peer's GoAway stops new streams; the open one finishes", async () => {
    const peerStreams = new h.Arrivals<MuxStream>();
    const { ours, theirs, port, results } = await clientAgainstJs((s) => peerStreams.push(s));
    const a = await dial(port);
    a.write('a');
    const streamA = await h.within(peerStreams.nth(0), 5_000, 'stream a');
    const goaway = new Promise<number>((resolve) => ours.once('goaway', resolve));
    void theirs.close();
    expect(await h.within(goaway, 5_000, 'goaway')).toBe(0);
    const b = await dial(port);
    await expect(ours.openStream(b)).rejects.toMatchObject({ code: 'ERR_MUX_GOING_AWAY' });
    streamA.pipe(streamA);
    const r = await h.within(echoRoundTrip(a, 4, 1 * MiB), 10_000, 'a finishing');
    expect(r.gotBytes).toBe(1 * MiB + 1); // 'a', then the round trip's bytes
    expect((await results[0]).reason).toBe('finished');
    await h.within(ours.whenClosed(), 5_000, 'the session closing after its last stream');
  });

  it('our close(): GoAway, the open stream finishes, then the connection closes cleanly', async () => {
    const { ours, theirs, port } = await clientAgainstJs((s) => s.pipe(s));
    const a = await dial(port);
    const round = echoRoundTrip(a, 6, 2 * MiB);
    await h.sleep(20);
    const closing = ours.close();
    const r = await h.within(round, 10_000, 'the open stream');
    expect(r.got).toBe(r.sent);
    await h.within(closing, 5_000, 'closing');
    await h.within(theirs.whenClosed(), 5_000, 'the peer closing');
  });

  it('parses what Node had read before the session took its socket: a ping sent first is answered', async () => {
    const { dialled, accepted } = await tcpPair();
    const seen = headers(accepted);
    accepted.write(encodeHeader(FRAME_TYPE.PING, FLAG.SYN, 0, 77));
    await h.within(new Promise((resolve) => dialled.once('readable', resolve)), 5_000, 'Node reading the ping');
    expect(dialled.readableLength).toBe(12);
    splicedSession(dialled, { role: 'client' });
    const answered = () => seen.some((f) => f.type === FRAME_TYPE.PING && f.flags === FLAG.ACK && f.length === 77);
    expect(await h.waitFor(answered, 5_000)).toBe(true);
  });

  it('our close() with no stream open: GoAway, then both ends close without an error', async () => {
    const { ours, theirs } = await clientAgainstJs(() => {});
    await h.sleep(20); // the first ping's round trip
    const closed = new Promise<Error | undefined>((resolve) => ours.once('close', resolve));
    const theirsClosed = new Promise<Error | undefined>((resolve) => theirs.once('close', resolve));
    void ours.close();
    expect(await h.within(closed, 5_000, 'closing')).toBeUndefined();
    expect(await h.within(theirsClosed, 5_000, 'the peer closing')).toBeUndefined();
  });

  for (const [what, bytes, rule] of [
    ['a bad version', encodeHeader(FRAME_TYPE.PING, FLAG.SYN, 0, 1).fill(7, 0, 1), 'ERR_MUX_BAD_VERSION'],
    ['an unknown type', encodeHeader(9 as never, 0, 0, 1), 'ERR_MUX_BAD_TYPE'],
    ['an oversized data frame', encodeHeader(FRAME_TYPE.DATA, FLAG.SYN, 2, 5 * MiB), 'ERR_MUX_FRAME_TOO_LARGE'],
    ['a ping on a stream', encodeHeader(FRAME_TYPE.PING, FLAG.SYN, 3, 1), 'ERR_MUX_BAD_STREAM_ID'],
    ['a stream id of our side', encodeHeader(FRAME_TYPE.WINDOW_UPDATE, FLAG.SYN, 1, 0), 'ERR_MUX_BAD_STREAM_ID'],
    ['a duplicate SYN', Buffer.concat([encodeHeader(FRAME_TYPE.WINDOW_UPDATE, FLAG.SYN, 2, 0), encodeHeader(FRAME_TYPE.WINDOW_UPDATE, FLAG.SYN, 2, 0)]), 'ERR_MUX_DUPLICATE_STREAM'],
    ['data past the window', Buffer.concat([encodeHeader(FRAME_TYPE.DATA, FLAG.SYN, 2, 200 * KiB), Buffer.alloc(200 * KiB), encodeHeader(FRAME_TYPE.DATA, 0, 2, 100 * KiB), Buffer.alloc(100 * KiB)]), 'ERR_MUX_WINDOW_EXCEEDED'],
  ] as const) {
    it(`a protocol error (${what}): GoAway(protocol error), then the connection closes; no crash`, async () => {
      const { dialled, accepted } = await tcpPair();
      const ours = splicedSession(dialled, { role: 'client' });
      ours.on('stream', (s) => s.refuse());
      const seen = headers(accepted);
      const closed = new Promise<Error | undefined>((resolve) => ours.once('close', resolve));
      const peerClosed = new Promise((resolve) => accepted.once('close', resolve).once('end', resolve));
      accepted.write(bytes);
      const err = (await h.within(closed, 5_000, 'the session closing')) as MuxError;
      expect(err.code).toBe('ERR_MUX_PROTOCOL');
      expect(err.detail).toBe(rule);
      await h.within(peerClosed, 5_000, 'the connection closing');
      expect(seen.find((f) => f.type === FRAME_TYPE.GO_AWAY)?.length).toBe(1);
    });
  }

  it('keepalive: a peer that never answers fails the session after the timeout, resetting its streams', async () => {
    const { dialled, accepted } = await tcpPair();
    accepted.on('data', () => {}); // reads, answers nothing
    const ours = splicedSession(dialled, { role: 'client', keepaliveInterval: 200, keepaliveTimeout: 300 });
    const target = await tcpServer(() => {});
    void target;
    const { port } = await front(ours);
    const client = await dial(port);
    const seen = h.watch(client);
    const closed = new Promise<Error | undefined>((resolve) => ours.once('close', resolve));
    expect(((await h.within(closed, 5_000, 'the session failing')) as MuxError).code).toBe('ERR_MUX_KEEPALIVE_TIMEOUT');
    expect(h.sawReset(await h.within(seen.closed, 5_000, 'the client closing'))).toBe(true);
  });

  it('leaves no fd open: sessions both ways, streams finished, reset and refused, then closed', async () => {
    await h.closeAll();
    const before = h.fdTable();
    {
      const { port } = await clientAgainstJs((s) => s.pipe(s));
      await Promise.all(Array.from({ length: 10 }, async (_, i) => echoRoundTrip(await dial(port), i, 100 * KiB)));
      const { theirs } = await serverAgainstJs(await echoServer(), { maxStreams: 4 });
      const streams = Array.from({ length: 6 }, () => theirs.openStream());
      for (const s of streams) s.on('error', () => {});
      await Promise.all(streams.slice(0, 4).map(async (s, i) => {
        const got = hashStream(s);
        await writePattern(s, i, 50 * KiB);
        await got;
      }));
    }
    await h.closeAll();
    await h.waitFor(() => Object.keys(h.fdDiff(before, h.fdTable())).length === 0, 5_000);
    expect(h.fdDiff(before, h.fdTable())).toEqual({});
  });
});
