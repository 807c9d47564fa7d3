// The spliced mux session against other yamux implementations over TCP on 127.0.0.1, in both
// roles, bytes hashed end to end: npm's yamux-js (in process) and Go's hashicorp/yamux
// (test/peers/yamux-peer, built offline; skipped with the reason where go or its yamux is missing).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import * as h from './helpers.js';
import { KiB, MiB } from './helpers.js';
import { spliceSkipReason } from './policy.js';
import { attachYamuxJs, YAMUX_JS_CONFIG, yamuxJs } from './yamux-js.js';
import { buildGoPeer, echoClientResults, goPeerMissing, runGoPeer } from './mux-go-peer.js';
import { hashBytes, writePattern } from './mux-helpers.js';
import { back, dial, echoRoundTrip, echoServer, front, splicedSession, tcpPair } from './mux-spliced-helpers.js';

afterEach(h.closeAll);

describe.skipIf(spliceSkipReason)(`spliced mux session with yamux-js (npm)${spliceSkipReason ? `: skipped, ${spliceSkipReason}` : ''}`, () => {
  it('n:1: 20 TCP clients at once, their streams echoed by a yamux-js server, hashed both ways', async () => {
    const { dialled, accepted } = await tcpPair();
    const theirs = new yamuxJs.Server((s) => s.on('data', (d: Buffer) => s.write(d)), YAMUX_JS_CONFIG);
    attachYamuxJs(accepted, theirs);
    const ours = splicedSession(dialled, { role: 'client' });
    const { port } = await front(ours);
    await h.within(
      Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const socket = await dial(port);
          // yamux-js ignores FIN, so its echo never ends: read back exactly what was sent.
          const echoed = hashBytes(socket, 200 * KiB);
          const sent = await h.writeRandom(socket, 40 + i, 200 * KiB, { end: false });
          expect(await echoed).toBe(sent.sha);
          socket.destroy();
        }),
      ),
      60_000,
      'streams echoed by yamux-js',
    );
  });

  it('1:n: 20 streams a yamux-js client opens, carried to a TCP echo server, hashed both ways', async () => {
    const { dialled, accepted } = await tcpPair();
    const ours = splicedSession(accepted, { role: 'server' });
    back(ours, await echoServer());
    const theirs = new yamuxJs.Client(YAMUX_JS_CONFIG);
    attachYamuxJs(dialled, theirs);
    await h.within(
      Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const stream = theirs.open();
          const echoed = hashBytes(stream, 200 * KiB);
          const sent = await writePattern(stream, 60 + i, 200 * KiB, { end: false });
          expect(await echoed).toBe(sent.sha);
          stream.close();
        }),
      ),
      60_000,
      'streams echoed through us',
    );
    expect(await h.waitFor(() => ours.streamCount === 0, 5_000)).toBe(true);
  });
});

let peer: ReturnType<typeof buildGoPeer> | undefined;
const runPeer = (args: string[]) => runGoPeer(peer!.binary, args);
const goSkip = spliceSkipReason ?? goPeerMissing;

describe.skipIf(goSkip)(`spliced mux session with hashicorp/yamux (Go)${goSkip ? `: skipped, ${goSkip}` : ''}`, () => {
  beforeAll(() => {
    peer = buildGoPeer();
  }, 150_000);
  afterAll(() => peer?.remove());

  it('n:1: 50 TCP clients at once, echoed by Go, hashed both ways, FIN both ways; our close() ends its session', async () => {
    const goPeer = runPeer(['echo-server']);
    const socket = h.track(net.connect({ port: await h.within(goPeer.port, 10_000, 'yamux-peer listening'), host: h.HOST, allowHalfOpen: true }));
    await new Promise((resolve) => socket.once('connect', resolve));
    const ours = splicedSession(socket, { role: 'client' });
    const { port, results } = await front(ours);
    const rounds = await h.within(
      Promise.all(Array.from({ length: 50 }, async (_, i) => echoRoundTrip(await dial(port), 200 + i, 256 * KiB + i * 3 * KiB))),
      60_000,
      'streams echoed by Go',
    );
    for (const r of rounds) expect(r.got).toBe(r.sent);
    expect((await Promise.all(results)).every((r) => r.reason === 'finished')).toBe(true);
    await h.within(ours.close(), 5_000, 'closing');
    expect(await h.within(goPeer.exited, 5_000, 'yamux-peer exiting')).toBe(0);
  });

  it('1:n: 50 streams Go opens at once, carried to a TCP echo server, hashed both ways', async () => {
    const target = await echoServer();
    const server = h.track(
      net.createServer({ allowHalfOpen: true }, (socket) => {
        back(splicedSession(h.track(socket), { role: 'server' }), target);
      }),
    );
    const port = await h.listen(server);
    const goPeer = runPeer(['echo-client', `${h.HOST}:${port}`, '50', String(384 * KiB)]);
    expect(await h.within(goPeer.exited, 60_000, 'yamux-peer echo-client')).toBe(0);
    const results = echoClientResults(goPeer.output());
    expect(results).toHaveLength(50);
    for (const r of results) {
      expect(r.error).toBeUndefined();
      expect(r.bytes).toBe(384 * KiB);
      expect(r.received).toBe(r.sent);
    }
  });

  it('one stream of 32 MiB each way with 4 MiB windows on both sides', async () => {
    const goPeer = runPeer(['-window', String(4 * MiB), 'echo-server']);
    const socket = h.track(net.connect({ port: await h.within(goPeer.port, 10_000, 'yamux-peer listening'), host: h.HOST, allowHalfOpen: true }));
    await new Promise((resolve) => socket.once('connect', resolve));
    const ours = splicedSession(socket, { role: 'client', maxWindow: 4 * MiB });
    const { port } = await front(ours);
    const r = await h.within(echoRoundTrip(await dial(port), 77, 32 * MiB), 60_000, '32 MiB echoed by Go');
    expect(r.gotBytes).toBe(32 * MiB);
    expect(r.got).toBe(r.sent);
  });
});
