// `splicer forward` over yamux as a user runs it: `--to mux://` (every TCP client a stream of one
// session) in front of `--listen mux://` (every stream a TCP connection), bytes hashed end to end
// through both hops; half-close and a reset crossing them; Go's hashicorp/yamux as the client of a
// `--listen mux://`; and the errors that name a wrong address or flag.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { createMuxSession, type MuxStream } from '../src/index.js';
import * as h from './helpers.js';
import { KiB, MiB } from './helpers.js';
import { portOf, runCli, startCli } from './cli-harness.js';
import { hashStream, streamError, writePattern } from './mux-helpers.js';
import { buildGoPeer, echoClientResults, goPeerMissing, runGoPeer } from './mux-go-peer.js';

afterEach(h.closeAll);

/** `--listen mux://127.0.0.1:0 --to 127.0.0.1:TARGET`: resolves with its port. */
async function muxEnd(targetPort: number, extra: string[] = []): Promise<number> {
  const run = startCli(['forward', '--listen', 'mux://127.0.0.1:0', '--to', `127.0.0.1:${targetPort}`, ...extra]);
  const line = await run.waitFor('forwarding');
  expect(String((line.listen as string[])[0])).toMatch(/^mux:\/\/127\.0\.0\.1:\d+$/);
  return portOf((line.listen as string[])[0]);
}

describe('splicer forward with mux://', () => {
  it('carries 20 TCP clients through --to mux:// and --listen mux://, every byte hashed both ways', async () => {
    const target = await h.startEchoServer();
    const muxPort = await muxEnd(target.port);
    const front = startCli(['forward', '--listen', '127.0.0.1:0', '--to', `mux://127.0.0.1:${muxPort}`]);
    const frontLine = await front.waitFor('forwarding');
    expect(frontLine.to).toBe(`mux://127.0.0.1:${muxPort}`);
    const frontPort = portOf((frontLine.listen as string[])[0]);
    await h.within(
      Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const client = await h.connectTo(frontPort);
          const received = h.hashUntilEnd(client);
          const sent = await h.writeRandom(client, 300 + i, 2 * MiB);
          expect(await received).toEqual(sent);
        }),
      ),
      60_000,
      'clients through two mux hops',
    );
    // Each client reached the target on a connection of its own.
    expect(target.conns.items).toHaveLength(20);
    // SIGTERM: GoAway on its session, then a clean exit.
    expect(await front.stop()).toBe(0);
  });

  it('passes a half-close through both hops: the target reads to the end, then answers', async () => {
    const target = await h.startServer((socket) => {
      void h.hashUntilEnd(socket).then((r) => socket.end(`${r.bytes}`));
    });
    const muxPort = await muxEnd(target.port);
    const front = startCli(['forward', '--listen', '127.0.0.1:0', '--to', `mux://127.0.0.1:${muxPort}`]);
    const frontPort = portOf(((await front.waitFor('forwarding')).listen as string[])[0]);
    const client = await h.connectTo(frontPort);
    const answer = h.collectUntilEnd(client);
    await h.writeRandom(client, 1, 300 * KiB);
    expect((await h.within(answer, 10_000, 'the answer')).toString()).toBe(String(300 * KiB));
  });

  it('a target that resets resets the mux stream of a client of --listen mux://', async () => {
    const target = await h.startServer((socket) => socket.once('data', () => socket.resetAndDestroy()));
    const muxPort = await muxEnd(target.port);
    const socket = await h.connectTo(muxPort);
    const session = createMuxSession(socket, { role: 'client' });
    h.onCleanup(() => session.destroy());
    const stream = session.openStream();
    const failed = streamError(stream);
    stream.write('hello');
    expect((await h.within(failed, 10_000, 'the reset')).code).toBe('ECONNRESET');
  });

  it('resets the stream when --to refuses the connection', async () => {
    const closed = await h.startServer();
    const port = closed.port;
    await closed.close();
    const muxPort = await muxEnd(port);
    const socket = await h.connectTo(muxPort);
    const session = createMuxSession(socket, { role: 'client' });
    h.onCleanup(() => session.destroy());
    const stream: MuxStream = session.openStream();
    const failed = streamError(stream);
    stream.write('hello');
    expect((await h.within(failed, 10_000, 'the reset')).code).toBe('ECONNRESET');
  });

  it('resets a TCP client of --to mux:// when the mux end is not there by --connect-timeout', async () => {
    const closed = await h.startServer();
    const port = closed.port;
    await closed.close();
    const front = startCli(['forward', '--listen', '127.0.0.1:0', '--to', `mux://127.0.0.1:${port}`, '--connect-timeout', '1']);
    const frontPort = portOf(((await front.waitFor('forwarding')).listen as string[])[0]);
    const client = await h.connectTo(frontPort);
    const seen = h.watch(client);
    client.write('hello');
    expect(h.sawReset(await h.within(seen.closed, 10_000, 'the client closing'))).toBe(true);
  });

  it('streams of one session each reach the target: our client library against the CLI', async () => {
    const target = await h.startEchoServer();
    const muxPort = await muxEnd(target.port, ['--mux-window', '1m', '--mux-max-streams', '64']);
    const socket = h.track(net.connect(muxPort, h.HOST));
    await new Promise((resolve) => socket.once('connect', resolve));
    const session = createMuxSession(socket, { role: 'client' });
    h.onCleanup(() => session.destroy());
    await Promise.all(
      Array.from({ length: 30 }, async (_, i) => {
        const stream = session.openStream();
        const received = hashStream(stream);
        const sent = await writePattern(stream, i, 128 * KiB);
        expect(await received).toEqual(sent);
      }),
    );
    expect(target.conns.items).toHaveLength(30);
  });

  it.each([
    [['forward', '--to', 'udp://127.0.0.1:80'], /the schemes taken are tcp:\/\/, tls:\/\/, mux:\/\/, mux\+tls:\/\//],
    [['forward', '--listen', 'mux://127.0.0.1:0', '--to', 'mux://127.0.0.1:80'], /one side of the hop must be plain TCP/],
    [['forward', '--listen', 'mux://127.0.0.1:0', '--listen', '127.0.0.1:0', '--to', '127.0.0.1:80'], /must all have one scheme, got mux:\/\/ and tcp:\/\//],
    [['forward', '--to', 'mux://127.0.0.1:80', '--mux-window', '1k'], /--mux-window must be from 262144/],
    [['forward', '--to', 'mux://127.0.0.1:80', '--mux-max-streams', 'x'], /--mux-max-streams must be a whole number/],
  ])('refuses %j, naming what is wrong', (args, message) => {
    const result = runCli(args as string[]);
    expect(result.status).not.toBe(0);
    expect(result.stderr + result.stdout).toMatch(message);
  });

  it('documents the mux flags in --help', () => {
    const help = runCli(['forward', '--help']).stdout;
    for (const flag of ['--mux-window', '--mux-max-streams', '--mux-keepalive', 'mux://']) expect(help).toContain(flag);
  });
});

describe.skipIf(goPeerMissing)(`splicer forward --listen mux:// with Go's hashicorp/yamux as the client${goPeerMissing ? `: skipped, ${goPeerMissing}` : ''}`, () => {
  let peer: ReturnType<typeof buildGoPeer> | undefined;
  beforeAll(() => {
    peer = buildGoPeer();
  }, 150_000);
  afterAll(() => peer?.remove());

  it('carries its 50 streams to a TCP echo server, every byte hashed both ways', async () => {
    const target = await h.startEchoServer();
    const muxPort = await muxEnd(target.port);
    const go = runGoPeer(peer!.binary, ['echo-client', `127.0.0.1:${muxPort}`, '50', String(256 * KiB)]);
    expect(await h.within(go.exited, 60_000, 'the Go client')).toBe(0);
    const results = echoClientResults(go.output());
    expect(results).toHaveLength(50);
    for (const r of results) {
      expect(r.error).toBeUndefined();
      expect(r.bytes).toBe(256 * KiB);
      expect(r.received).toBe(r.sent);
    }
    expect(target.conns.items).toHaveLength(50);
  });
});
