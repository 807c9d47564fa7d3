// Mux sessions over real TCP on 127.0.0.1: many streams hashed end to end both ways, half-close and
// reset both ways (and through forward() to a TCP peer), a stalled reader that holds up nobody,
// stream limits, keepalive against a peer that went silent, GoAway, and garbage from the peer.
import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { createMuxSession, forward, MuxError, type MuxSession, type MuxStream } from '../src/index.js';
import { encodeHeader, FLAG, FRAME_TYPE, FrameParser, GO_AWAY_CODE, type FrameHeader } from '../src/mux/frame.js';
import * as h from './helpers.js';
import { KiB, MiB } from './helpers.js';
import { hashStream, sessionPair, streamError, writePattern } from './mux-helpers.js';
import { needsTool } from './policy.js';
import { makeCert } from './tunnel-helpers.js';

afterEach(h.closeAll);

/** Echoes every stream the session accepts: its bytes back, then FIN after the peer's FIN. */
function echoStreams(session: MuxSession): void {
  session.on('stream', (stream) => {
    stream.on('error', () => {});
    stream.pipe(stream);
  });
}

async function echoed(stream: MuxStream, seed: number, bytes: number): Promise<void> {
  const received = hashStream(stream);
  const sent = await writePattern(stream, seed, bytes);
  expect(await received).toEqual(sent);
}

describe('mux session: streams end to end', () => {
  it('carries 300 concurrent streams each way, every byte hashed, and forgets each stream once closed', async () => {
    const { client, server } = await sessionPair();
    echoStreams(client);
    echoStreams(server);
    const sizes = (i: number) => 1 + ((i * 7919) % (192 * KiB));
    const fromClient = Array.from({ length: 300 }, (_, i) => echoed(client.openStream(), i, sizes(i)));
    const fromServer = Array.from({ length: 300 }, (_, i) => echoed(server.openStream(), 1000 + i, sizes(i + 17)));
    await h.within(Promise.all([...fromClient, ...fromServer]), 60_000, '600 echoed streams');
    expect(await h.waitFor(() => client.streamCount === 0 && server.streamCount === 0, 5_000)).toBe(true);
  });

  it('runs over TLS: 50 streams echoed and hashed through a TLS connection', async (ctx) => {
    needsTool(ctx, 'openssl');
    const cert = makeCert('mux.test');
    h.onCleanup(() => fs.rmSync(cert.dir, { recursive: true, force: true }));
    const server = h.track(
      tls.createServer({ cert: cert.cert, key: cert.key }, (socket) => {
        const session = createMuxSession(socket, { role: 'server' });
        h.onCleanup(() => session.destroy());
        echoStreams(session);
      }),
    );
    const port = await h.listen(server);
    const socket = tls.connect({ host: h.HOST, port, ca: cert.cert, servername: 'mux.test' });
    await new Promise((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    const client = createMuxSession(socket, { role: 'client' });
    h.onCleanup(() => client.destroy());
    await h.within(Promise.all(Array.from({ length: 50 }, (_, i) => echoed(client.openStream(), 500 + i, 200 * KiB))), 30_000, 'streams over TLS');
  });

  it('gives streams odd ids on the client side and even ids on the server side', async () => {
    const { client, server } = await sessionPair();
    echoStreams(client);
    echoStreams(server);
    const ids = [client.openStream(), client.openStream(), server.openStream(), server.openStream()].map((s) => {
      s.on('error', () => {});
      s.destroy();
      return s.id;
    });
    expect(ids).toEqual([1, 3, 2, 4]);
  });

  it('moves 64 MiB on one stream both ways at once, and grows its window past 256 KiB', async () => {
    // Pings every 50 ms measure the round trip under load, as the auto-tuning sees it in use.
    const { client, server } = await sessionPair({ keepaliveInterval: 50 }, { keepaliveInterval: 50 });
    let accepted: MuxStream | undefined;
    server.on('stream', (s) => {
      accepted = s;
      s.pipe(s);
    });
    await h.within(echoed(client.openStream(), 7, 64 * MiB), 60_000, '64 MiB echoed');
    expect(accepted!.receiveWindow).toBeGreaterThan(256 * KiB);
    expect(accepted!.receiveWindow).toBeLessThanOrEqual(4 * MiB);
  });
});

describe('mux session: writes', () => {
  it("calls a write's callback only once its bytes are written: a writer reusing its buffer loses nothing", async () => {
    const { client, server } = await sessionPair();
    const received = new Promise<Buffer>((resolve) =>
      server.on('stream', (s) => {
        const parts: Buffer[] = [];
        s.on('data', (d: Buffer) => parts.push(d));
        s.on('end', () => resolve(Buffer.concat(parts)));
      }),
    );
    const stream = client.openStream();
    const buffer = Buffer.alloc(48 * KiB);
    for (let i = 0; i < 64; i++) {
      buffer.fill(i);
      await new Promise<void>((resolve, reject) => stream.write(buffer, (err) => (err ? reject(err) : resolve())));
    }
    stream.end();
    const all = await h.within(received, 10_000, 'the stream');
    expect(all.length).toBe(64 * 48 * KiB);
    for (let i = 0; i < 64; i++) expect(all.subarray(i * 48 * KiB, (i + 1) * 48 * KiB).every((b) => b === i)).toBe(true);
  });
});

describe('mux session: close semantics', () => {
  it('half-closes client → server: the server reads to the end and still sends 1 MiB after it', async () => {
    const { client, server } = await sessionPair();
    const serverSide = new Promise<h.Sent>((resolve, reject) =>
      server.on('stream', (s) => {
        hashStream(s)
          .then(async (got) => {
            expect(got.bytes).toBe(300 * KiB);
            resolve(await writePattern(s, 2, MiB));
          })
          .catch(reject);
      }),
    );
    const stream = client.openStream();
    const received = hashStream(stream);
    await writePattern(stream, 1, 300 * KiB);
    expect(await received).toEqual(await serverSide);
  });

  it('half-closes server → client the same way', async () => {
    const { client, server } = await sessionPair();
    const clientSide = new Promise<h.Sent>((resolve, reject) =>
      client.on('stream', (s) => {
        hashStream(s)
          .then(async () => resolve(await writePattern(s, 4, MiB)))
          .catch(reject);
      }),
    );
    const stream = server.openStream();
    const received = hashStream(stream);
    const sent = await writePattern(stream, 3, 300 * KiB);
    expect(sent.bytes).toBe(300 * KiB);
    expect(await received).toEqual(await clientSide);
  });

  it.each(['client', 'server'] as const)('resets a stream the %s destroys: the other side fails with ECONNRESET', async (resetter) => {
    const { client, server } = await sessionPair();
    const accepted = new Promise<MuxStream>((resolve) => server.on('stream', resolve));
    const opened = client.openStream();
    opened.write('hello');
    const other = await accepted;
    const [destroyed, peer] = resetter === 'client' ? [opened, other] : [other, opened];
    const failed = streamError(peer);
    destroyed.destroy();
    const err = await h.within(failed, 5_000, 'reset seen');
    expect(err).toBeInstanceOf(MuxError);
    expect(err.code).toBe('ECONNRESET');
    expect(await h.waitFor(() => client.streamCount === 0 && server.streamCount === 0, 2_000)).toBe(true);
  });

  it('resets through forward(): a TCP target that resets resets the mux stream, and the client behind it', async () => {
    // The target resets its connection when the request arrives.
    const target = await h.startServer((socket) => socket.once('data', () => socket.resetAndDestroy()));
    const { client, server } = await sessionPair();
    server.on('stream', (stream) => {
      stream.on('error', () => {});
      const upstream = h.track(net.connect(target.port, h.HOST));
      upstream.on('error', () => {});
      upstream.once('connect', () => void forward(stream, upstream));
    });
    const stream = client.openStream();
    const failed = streamError(stream);
    stream.write('request');
    expect((await h.within(failed, 5_000, 'reset through the hop')).code).toBe('ECONNRESET');
  });

  it('resets through forward(): a mux stream reset by its opener resets the TCP connection behind it', async () => {
    const target = await h.startServer();
    const { client, server } = await sessionPair();
    server.on('stream', (stream) => {
      stream.on('error', () => {});
      const upstream = h.track(net.connect(target.port, h.HOST));
      upstream.on('error', () => {});
      upstream.once('connect', () => void forward(stream, upstream));
    });
    const stream = client.openStream();
    stream.on('error', () => {});
    stream.write('request');
    const conn = await target.conns.nth(0);
    const seen = h.watch(conn);
    await h.readBytes(conn, 7);
    stream.destroy();
    const observed = await h.within(seen.closed, 5_000, 'target closed');
    expect(h.sawReset(observed)).toBe(true);
  });
});

describe('mux session: isolation and limits', () => {
  it('a stalled reader holds up only its own stream, which buffers at most its window', async () => {
    const maxWindow = 1 * MiB;
    const { client, server } = await sessionPair({ maxWindow }, { maxWindow });
    const accepted: MuxStream[] = [];
    server.on('stream', (s) => {
      s.on('error', () => {});
      accepted.push(s);
    });
    const stalled = client.openStream();
    stalled.on('error', () => {});
    // 9 MiB into a stream nobody reads: beyond its window it waits on the sender's side.
    const big = Buffer.alloc(9 * MiB, 1);
    stalled.write(big);
    const flowing = client.openStream();
    flowing.on('error', () => {});
    const flowingDone = h.within(
      (async () => {
        await h.waitFor(() => accepted.length === 2, 5_000);
        const received = hashStream(accepted[1]);
        const sent = await writePattern(flowing, 9, 16 * MiB);
        expect(await received).toEqual(sent);
      })(),
      30_000,
      'the flowing stream',
    );
    await flowingDone;
    const stalledAtServer = accepted[0];
    // Paused reader: what it holds is bounded by the window plus the readable high-water mark.
    expect(stalledAtServer.receiveBuffered).toBeGreaterThan(0);
    expect(stalledAtServer.receiveBuffered).toBeLessThanOrEqual(maxWindow + 64 * KiB);
    expect(stalled.writableLength).toBeGreaterThanOrEqual(8 * MiB - maxWindow);
    // Once read, the stalled stream completes too.
    const rest = hashStream(stalledAtServer);
    stalled.end();
    expect((await h.within(rest, 30_000, 'the stalled stream')).bytes).toBe(9 * MiB);
  });

  it('refuses streams past maxStreams with RST (ECONNREFUSED at the opener)', async () => {
    const { client, server } = await sessionPair({}, { maxStreams: 4 });
    echoStreams(server);
    const streams = Array.from({ length: 6 }, () => client.openStream());
    const outcomes = await Promise.all(
      streams.map(
        (s, i) =>
          new Promise<string>((resolve) => {
            s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
            s.once('end', () => resolve('ok'));
            s.resume();
            s.end(`stream ${i}`);
          }),
      ),
    );
    expect(outcomes.filter((o) => o === 'ok')).toHaveLength(4);
    expect(outcomes.filter((o) => o === 'ECONNREFUSED')).toHaveLength(2);
  });

  it('refuses streams when nobody listens for them', async () => {
    const { client } = await sessionPair();
    const s = client.openStream();
    expect((await h.within(streamError(s), 5_000, 'refusal')).code).toBe('ECONNREFUSED');
  });
});

describe('mux session: liveness and shutdown', () => {
  it('fails a session and its streams when pings go unanswered (a peer that went silent)', async () => {
    // The peer accepts the connection and never reads or answers.
    const silent = await h.startServer((socket) => socket.pause());
    const socket = h.track(net.connect(silent.port, h.HOST));
    await new Promise((resolve) => socket.once('connect', resolve));
    const session = createMuxSession(socket, { role: 'client', keepaliveInterval: 200, keepaliveTimeout: 300 });
    const closed = new Promise<Error | undefined>((resolve) => session.once('close', resolve));
    const stream = session.openStream();
    const failed = streamError(stream);
    const err = await h.within(failed, 5_000, 'the stream failing');
    expect(err.code).toBe('ERR_MUX_KEEPALIVE_TIMEOUT');
    expect(((await h.within(closed, 5_000, 'session close')) as MuxError).code).toBe('ERR_MUX_KEEPALIVE_TIMEOUT');
    expect(socket.destroyed).toBe(true);
  });

  it('fails a session whose peer never answers its first ping, without waiting for a keepalive interval', async () => {
    const silent = await h.startServer((socket) => socket.pause());
    const socket = h.track(net.connect(silent.port, h.HOST));
    await new Promise((resolve) => socket.once('connect', resolve));
    // The interval is far beyond the test's wait: only the first ping, sent at once, can fail it.
    const session = createMuxSession(socket, { role: 'client', keepaliveInterval: 3600_000, keepaliveTimeout: 300 });
    const closed = new Promise<Error | undefined>((resolve) => session.once('close', resolve));
    expect(((await h.within(closed, 5_000, 'session close')) as MuxError).code).toBe('ERR_MUX_KEEPALIVE_TIMEOUT');
    expect(socket.destroyed).toBe(true);
  });

  it('measures a round trip with ping()', async () => {
    const { client } = await sessionPair();
    const rtt = await client.ping();
    expect(rtt).toBeGreaterThan(0);
  });

  it('close() sends GoAway: no new streams either way, the open one finishes, then both sessions close cleanly', async () => {
    const { client, server } = await sessionPair();
    echoStreams(server);
    const goaway = new Promise<number>((resolve) => server.once('goaway', resolve));
    const stream = client.openStream();
    const received = hashStream(stream);
    stream.write('first');
    const closing = client.close();
    expect(() => client.openStream()).toThrow(expect.objectContaining({ code: 'ERR_MUX_GOING_AWAY' }));
    expect(await h.within(goaway, 5_000, 'goaway')).toBe(GO_AWAY_CODE.NORMAL);
    expect(() => server.openStream()).toThrow(expect.objectContaining({ code: 'ERR_MUX_GOING_AWAY' }));
    const rest = await writePattern(stream, 5, 2 * MiB);
    expect((await received).bytes).toBe(rest.bytes + 5);
    const serverClosed = new Promise<Error | undefined>((resolve) => server.once('close', resolve));
    await h.within(closing, 5_000, 'client closed');
    expect(await h.within(serverClosed, 5_000, 'server closed')).toBeUndefined();
  });

  it("destroy() closes open streams; the peer's streams fail with ERR_MUX_SESSION_CLOSED; no fd is left open", async () => {
    const before = h.openFdCount();
    const { client, server } = await sessionPair();
    const accepted = new Promise<MuxStream>((resolve) => server.on('stream', resolve));
    const stream = client.openStream();
    const seen = new Promise<string>((resolve) => {
      stream.once('error', (err) => resolve(`error ${err.message}`));
      stream.once('close', () => resolve('close'));
    });
    stream.write('x');
    const peerFailed = streamError(await accepted);
    client.destroy();
    expect(await seen).toBe('close');
    expect((await h.within(peerFailed, 5_000, 'the peer stream failing')).code).toBe('ERR_MUX_SESSION_CLOSED');
    await Promise.all([client.whenClosed(), server.whenClosed()]);
    await h.closeAll();
    expect(await h.waitFor(() => h.openFdCount() <= before, 2_000)).toBe(true);
  });

  it('destroy(err) fails open streams with err', async () => {
    const { client, server } = await sessionPair();
    echoStreams(server);
    const failed = streamError(client.openStream());
    client.destroy(new Error('shutting down'));
    expect((await failed).message).toBe('shutting down');
  });

  it('rejects bad options with the option named', () => {
    const socket = new net.Socket();
    expect(() => createMuxSession(socket, { role: 'client', maxWindow: 1000 })).toThrow(/maxWindow/);
    expect(() => createMuxSession(socket, { role: 'middle' as 'client' })).toThrow(/role/);
    expect(() => createMuxSession(socket, { role: 'client', maxStreams: 0 })).toThrow(/maxStreams/);
    socket.destroy();
  });
});

/** A raw TCP peer of a server session: sends `bytes`, returns the frames it got back until the connection closed. */
async function rawPeer(bytes: Buffer[]): Promise<{ frames: FrameHeader[]; error: Error | undefined }> {
  let onClose!: (err: Error | undefined) => void;
  const sessionClosed = new Promise<Error | undefined>((resolve) => (onClose = resolve));
  const server = await h.startServer((socket) => {
    const session = createMuxSession(socket, { role: 'server' });
    session.on('stream', (s) => s.on('error', () => {}));
    session.once('close', onClose);
  });
  const frames: FrameHeader[] = [];
  const parser = new FrameParser(16 * MiB);
  const socket = h.track(net.connect(server.port, h.HOST));
  socket.on('error', () => {});
  socket.on('data', (chunk: Buffer) => parser.push(chunk, { onHeader: (hd) => frames.push(hd), onPayload: () => {}, onDataEnd: () => {} }));
  const peerClosed = new Promise((resolve) => socket.once('close', resolve));
  socket.once('connect', () => {
    for (const b of bytes) socket.write(b);
  });
  const error = await h.within(sessionClosed, 5_000, 'the session closing');
  await h.within(peerClosed, 5_000, 'the connection closing');
  return { frames, error };
}

describe('mux session: protocol errors from the peer', () => {
  const goAwayProtocolError = (frames: FrameHeader[]) =>
    frames.some((f) => f.type === FRAME_TYPE.GO_AWAY && f.length === GO_AWAY_CODE.PROTOCOL_ERROR);

  it.each([
    ['garbage', [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')], 'ERR_MUX_BAD_VERSION'],
    ['an unknown frame type', [Buffer.from('000900000000000100000000', 'hex')], 'ERR_MUX_BAD_TYPE'],
    ['an oversized data frame', [encodeHeader(FRAME_TYPE.DATA, FLAG.SYN, 1, 0xffffffff)], 'ERR_MUX_FRAME_TOO_LARGE'],
    [
      'data past the window',
      [encodeHeader(FRAME_TYPE.WINDOW_UPDATE, FLAG.SYN, 1, 0), encodeHeader(FRAME_TYPE.DATA, 0, 1, 300 * KiB), Buffer.alloc(300 * KiB)],
      'ERR_MUX_WINDOW_EXCEEDED',
    ],
    ['a stream id of the wrong side', [encodeHeader(FRAME_TYPE.WINDOW_UPDATE, FLAG.SYN, 2, 0)], 'ERR_MUX_BAD_STREAM_ID'],
    [
      'a stream opened twice',
      [encodeHeader(FRAME_TYPE.WINDOW_UPDATE, FLAG.SYN, 1, 0), encodeHeader(FRAME_TYPE.WINDOW_UPDATE, FLAG.SYN, 1, 0)],
      'ERR_MUX_DUPLICATE_STREAM',
    ],
  ])('answers %s with GoAway (protocol error), then closes', async (_what, bytes, detail) => {
    const { frames, error } = await rawPeer(bytes as Buffer[]);
    expect(goAwayProtocolError(frames)).toBe(true);
    expect(error).toBeInstanceOf(MuxError);
    expect((error as MuxError).code).toBe('ERR_MUX_PROTOCOL');
    expect((error as MuxError).detail).toBe(detail);
  });

  it('fails the session when the peer reports a protocol error (GoAway 1)', async () => {
    const { error } = await rawPeer([encodeHeader(FRAME_TYPE.GO_AWAY, 0, 0, GO_AWAY_CODE.PROTOCOL_ERROR)]);
    expect((error as MuxError).code).toBe('ERR_MUX_PEER_ERROR');
  });

  it('the connection ending mid-session fails open streams', async () => {
    const { client, server, serverSocket } = await sessionPair();
    echoStreams(server);
    const stream: Duplex = client.openStream();
    const failed = streamError(stream);
    serverSocket.destroy();
    expect((await h.within(failed, 5_000, 'stream failure')).code).toBe('ERR_MUX_SESSION_CLOSED');
  });
});
