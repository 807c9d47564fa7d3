// A mux session whose peer ends the connection in order (a clean EOF) right after finishing a
// stream: as with a TCP socket whose peer closed, the reader still gets every byte sent before the
// FIN, then its end; writing fails; a stream the peer had not finished fails.
import { afterEach, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { createMuxSession, MuxError, type MuxSession, type MuxStream } from '../src/index.js';
import { encodeHeader, FLAG, FRAME_TYPE } from '../src/mux/frame.js';
import * as h from './helpers.js';
import { KiB } from './helpers.js';
import { streamError } from './mux-helpers.js';

afterEach(h.closeAll);

/** A splicer server session; a raw client that sends `frames` and ends the connection. */
async function peerThatEnds(frames: Buffer[]): Promise<{ streams: MuxStream[]; session: MuxSession }> {
  const streams: MuxStream[] = [];
  let onSession!: (s: MuxSession) => void;
  const sessionMade = new Promise<MuxSession>((resolve) => (onSession = resolve));
  const server = await h.startServer((socket) => {
    const session = createMuxSession(socket, { role: 'server' });
    session.on('error', () => {});
    // Paused streams: nothing is read until the test reads, after the connection is gone.
    session.on('stream', (s) => {
      s.on('error', () => {});
      streams.push(s);
    });
    onSession(session);
  });
  const socket = h.track(net.connect(server.port, h.HOST));
  socket.on('error', () => {});
  socket.once('connect', () => {
    for (const f of frames) socket.write(f);
    socket.end();
  });
  const session = await h.within(sessionMade, 5_000, 'the session');
  await h.within(session.whenClosed(), 5_000, 'the session closing');
  return { streams, session };
}

function readAll(stream: MuxStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    stream.on('data', (d: Buffer) => parts.push(d));
    stream.once('end', () => resolve(Buffer.concat(parts)));
    stream.once('error', reject);
  });
}

describe('mux session: the peer ends the connection in order', () => {
  it("still hands a finished stream's bytes to its reader, then its end; writing fails", async () => {
    const body = h.patternBytes(5, 200 * KiB);
    const frames = [encodeHeader(FRAME_TYPE.WINDOW_UPDATE, FLAG.SYN, 1, 0)];
    for (let at = 0; at < body.length; at += 64 * KiB) {
      const piece = body.subarray(at, at + 64 * KiB);
      frames.push(encodeHeader(FRAME_TYPE.DATA, 0, 1, piece.length), piece);
    }
    frames.push(encodeHeader(FRAME_TYPE.WINDOW_UPDATE, FLAG.FIN, 1, 0));
    const { streams } = await peerThatEnds(frames);
    expect(streams).toHaveLength(1);
    const got = await h.within(readAll(streams[0]), 5_000, 'the stream read to its end');
    expect(createHash('sha256').update(got).digest('hex')).toBe(createHash('sha256').update(body).digest('hex'));
    const failed = streamError(streams[0]);
    streams[0].write('too late');
    expect((await h.within(failed, 5_000, 'the write failing')).code).toBe('ERR_MUX_SESSION_CLOSED');
  });

  it('fails a stream the peer had not finished', async () => {
    const frames = [encodeHeader(FRAME_TYPE.WINDOW_UPDATE, FLAG.SYN, 1, 0), encodeHeader(FRAME_TYPE.DATA, 0, 1, 3), Buffer.from('abc')];
    const { streams } = await peerThatEnds(frames);
    expect(streams).toHaveLength(1);
    expect(streams[0].destroyed).toBe(true);
    expect((streams[0].errored as MuxError | null)?.code).toBe('ERR_MUX_SESSION_CLOSED');
  });
});
