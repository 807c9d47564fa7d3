// Our yamux against real peers over TCP on 127.0.0.1, both directions, bytes hashed end to end:
// npm's yamux-js (in process) and Go's hashicorp/yamux (test/peers/yamux-peer, built here offline
// against Debian's golang-github-hashicorp-yamux-dev; skipped with the reason where go or that
// package is missing, a failure under CI, which installs both).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { createMuxSession, type MuxSession, type MuxStream } from '../src/index.js';
import * as h from './helpers.js';
import { KiB, MiB } from './helpers.js';
import { attachYamuxJs, YAMUX_JS_CONFIG, yamuxJs } from './yamux-js.js';
import { buildGoPeer, echoClientResults, goPeerMissing, runGoPeer } from './mux-go-peer.js';
import { hashBytes, hashStream, writePattern } from './mux-helpers.js';

async function tcpPair(): Promise<{ client: net.Socket; server: net.Socket }> {
  let onAccepted!: (s: net.Socket) => void;
  const accepted = new Promise<net.Socket>((resolve) => (onAccepted = resolve));
  const port = await h.listen(net.createServer((s) => onAccepted(h.track(s))));
  const client = h.track(net.connect(port, h.HOST));
  await new Promise((resolve) => client.once('connect', resolve));
  return { client, server: await accepted };
}

afterAll(h.closeAll);

describe('interop with yamux-js (npm)', () => {
  it('its streams open to us: 50 streams of 256 KiB hashed, FIN delivered to us', async () => {
    const { client, server } = await tcpPair();
    const ours = createMuxSession(server, { role: 'server' });
    let ended = 0;
    // Each accepted stream: hash to the FIN, then answer with the hash and end.
    ours.on('stream', (s) => {
      void hashStream(s).then((r) => {
        ended++;
        s.end(r.sha);
      });
    });
    const theirs = new yamuxJs.Client(YAMUX_JS_CONFIG);
    attachYamuxJs(client, theirs);
    const results = await h.within(
      Promise.all(
        Array.from({ length: 50 }, async (_, i) => {
          const stream = theirs.open();
          const answer = new Promise<string>((resolve) => {
            let text = '';
            stream.on('data', (d: Buffer) => {
              text += d.toString();
              if (text.length >= 64) resolve(text);
            });
          });
          const sent = await writePattern(stream, i, 256 * KiB, { end: false });
          stream.close(); // yamux-js's FIN (its end() sends none)
          return { sent: sent.sha, got: await answer };
        }),
      ),
      60_000,
      'yamux-js streams',
    );
    for (const r of results) expect(r.got).toBe(r.sent);
    expect(ended).toBe(50);
    ours.destroy();
  });

  it('our streams open to it: 50 streams of 256 KiB echoed and hashed', async () => {
    const { client, server } = await tcpPair();
    const theirs = new yamuxJs.Server((s) => s.on('data', (d: Buffer) => s.write(d)), YAMUX_JS_CONFIG);
    attachYamuxJs(server, theirs);
    const ours = createMuxSession(client, { role: 'client' });
    await h.within(
      Promise.all(
        Array.from({ length: 50 }, async (_, i) => {
          const stream = ours.openStream();
          // yamux-js ignores FIN, so its echo never ends: read back exactly what was sent.
          const echoed = hashBytes(stream, 256 * KiB);
          const sent = await writePattern(stream, 100 + i, 256 * KiB, { end: false });
          expect(await echoed).toBe(sent.sha);
          stream.destroy();
        }),
      ),
      60_000,
      'streams echoed by yamux-js',
    );
    ours.destroy();
  });

  it('answers its pings', async () => {
    const { client, server } = await tcpPair();
    createMuxSession(server, { role: 'server' });
    const theirs = new yamuxJs.Client({ ...YAMUX_JS_CONFIG, connectionWriteTimeout: 2 });
    attachYamuxJs(client, theirs);
    const failed = new Promise((resolve) => theirs.once('error', resolve));
    (theirs as unknown as { ping(): void }).ping();
    // A missed answer is its error after connectionWriteTimeout (2 s).
    expect(await Promise.race([failed.then(() => 'timed out'), h.sleep(2_500).then(() => 'answered')])).toBe('answered');
    expect((theirs as unknown as { pings: Map<number, unknown> }).pings.size).toBe(0);
  });
});

// ---------------------------------------------------------------------------
// Go's hashicorp/yamux

let peer: ReturnType<typeof buildGoPeer> | undefined;
const runPeer = (args: string[]) => runGoPeer(peer!.binary, args);

describe.skipIf(goPeerMissing)(`interop with hashicorp/yamux (Go)${goPeerMissing ? `: skipped, ${goPeerMissing}` : ''}`, () => {
  beforeAll(() => {
    peer = buildGoPeer();
  }, 150_000);
  afterAll(() => peer?.remove());

  it('our streams open to it: 100 streams of 512 KiB echoed, hashed, FIN both ways', async () => {
    const goPeer = runPeer(['echo-server']);
    const socket = h.track(net.connect(await h.within(goPeer.port, 10_000, 'yamux-peer listening'), h.HOST));
    await new Promise((resolve) => socket.once('connect', resolve));
    const ours = createMuxSession(socket, { role: 'client' });
    await h.within(
      Promise.all(
        Array.from({ length: 100 }, async (_, i) => {
          const stream = ours.openStream();
          const received = hashStream(stream);
          const sent = await writePattern(stream, 200 + i, 512 * KiB);
          // 'end' arrives only after Go's FIN, sent when its copy saw ours.
          expect(await received).toEqual(sent);
        }),
      ),
      60_000,
      'streams echoed by Go',
    );
    expect(await h.waitFor(() => ours.streamCount === 0, 5_000)).toBe(true);
    await ours.close();
    expect(await h.within(goPeer.exited, 5_000, 'yamux-peer exiting')).toBe(0);
  });

  it('its streams open to us: 100 streams of 512 KiB echoed and hashed, its FIN delivered to us', async () => {
    let ended = 0;
    const sessions: MuxSession[] = [];
    const server = await h.startServer((socket) => {
      const session = createMuxSession(socket, { role: 'server' });
      sessions.push(session);
      session.on('stream', (s: MuxStream) => {
        s.on('end', () => ended++);
        s.on('error', () => {});
        s.pipe(s);
      });
    });
    const goPeer = runPeer(['echo-client', `${h.HOST}:${server.port}`, '100', String(512 * KiB)]);
    expect(await h.within(goPeer.exited, 60_000, 'yamux-peer echo-client')).toBe(0);
    const results = echoClientResults(goPeer.output());
    expect(results).toHaveLength(100);
    for (const r of results) {
      expect(r.error).toBeUndefined();
      expect(r.bytes).toBe(512 * KiB);
      expect(r.received).toBe(r.sent);
    }
    expect(await h.waitFor(() => ended === 100, 5_000)).toBe(true);
    expect(sessions).toHaveLength(1);
  });

  it('one stream of 64 MiB each way with a 4 MiB window on both sides', async () => {
    const goPeer = runPeer(['-window', String(4 * MiB), 'echo-server']);
    const socket = h.track(net.connect(await h.within(goPeer.port, 10_000, 'yamux-peer listening'), h.HOST));
    await new Promise((resolve) => socket.once('connect', resolve));
    const ours = createMuxSession(socket, { role: 'client' });
    const stream = ours.openStream();
    const received = hashStream(stream);
    const sent = await h.within(writePattern(stream, 77, 64 * MiB), 60_000, 'writing 64 MiB');
    expect(await h.within(received, 60_000, 'reading 64 MiB')).toEqual(sent);
    ours.destroy();
  });
});
