// A mux stream's receive window as a raw yamux peer on 127.0.0.1 sees it: a WindowUpdate once a
// quarter of the window has been read, giving back exactly what was read, and no growth for a
// reader slower than the window allows.
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { createMuxSession, type MuxStream } from '../src/index.js';
import { encodeHeader, FRAME_TYPE, FLAG, FrameParser, type FrameHeader } from '../src/mux/frame.js';
import * as h from './helpers.js';
import { KiB, MiB } from './helpers.js';

afterEach(h.closeAll);

/** Polls `condition` every 2 ms; throws naming `what` after 5 s. */
async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await h.sleep(2);
  }
}

/** A splicer server session, and a raw client on a TCP connection to it that records the frames it gets. */
async function rawClient(onStream: (stream: MuxStream) => void) {
  const server = await h.startServer((socket) => {
    const session = createMuxSession(socket, { role: 'server' });
    session.on('stream', (s) => {
      s.on('error', () => {});
      onStream(s);
    });
  });
  const frames: FrameHeader[] = [];
  const parser = new FrameParser(16 * MiB);
  const socket = h.track(net.connect(server.port, h.HOST));
  socket.on('error', () => {});
  const onHeader = (f: FrameHeader) => {
    frames.push(f);
    // Pings answered: the session knows its round trip, as it does with any real peer.
    if (f.type === FRAME_TYPE.PING && f.flags & FLAG.SYN) socket.write(encodeHeader(FRAME_TYPE.PING, FLAG.ACK, 0, f.length));
  };
  socket.on('data', (chunk: Buffer) => parser.push(chunk, { onHeader, onPayload: () => {}, onDataEnd: () => {} }));
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  const send = (bytes: number) => {
    socket.write(encodeHeader(FRAME_TYPE.DATA, 0, 1, bytes));
    socket.write(Buffer.alloc(bytes, 0x5a));
  };
  const updates = () => frames.filter((f) => f.type === FRAME_TYPE.WINDOW_UPDATE && f.streamId === 1 && !(f.flags & (FLAG.SYN | FLAG.ACK | FLAG.FIN | FLAG.RST)));
  socket.write(encodeHeader(FRAME_TYPE.WINDOW_UPDATE, FLAG.SYN, 1, 0));
  return { send, updates };
}

describe('mux stream: window updates', () => {
  it('gives back a quarter of the 256 KiB window once it is read, not before', async () => {
    let read = 0;
    const { send, updates } = await rawClient((s) => s.on('data', (d: Buffer) => (read += d.length)));
    send(60 * KiB);
    await until(() => read === 60 * KiB, 'the first 60 KiB read');
    await h.sleep(100);
    expect(updates()).toHaveLength(0);
    send(4 * KiB);
    await until(() => updates().length === 1, 'a window update');
    // The first update never grows the window (there is no earlier one to time): exactly what was read.
    expect(updates()[0].length).toBe(64 * KiB);
  });

  it('does not grow the window of a reader slower than the window allows', async () => {
    let stream: MuxStream | undefined;
    const { send, updates } = await rawClient((s) => (stream = s));
    await until(() => stream !== undefined, 'the stream');
    // 512 KiB in 16 KiB reads 50 ms apart, 330 KB/s: slower than a 256 KiB window per 8 round trips
    // even if a loaded machine measured a round trip of 90 ms.
    let sent = 0;
    const credit = () => 256 * KiB + updates().reduce((n, u) => n + u.length, 0) - sent;
    for (let reads = 0; reads < 32; reads++) {
      while (credit() >= 16 * KiB && sent < 512 * KiB) {
        send(16 * KiB);
        sent += 16 * KiB;
      }
      await until(() => stream!.receiveBuffered >= 16 * KiB, 'bytes to read');
      await h.sleep(50);
      expect(stream!.read(16 * KiB)).toHaveLength(16 * KiB);
    }
    expect(updates().length).toBeGreaterThan(0);
    expect(stream!.receiveWindow).toBe(256 * KiB);
  });
});
