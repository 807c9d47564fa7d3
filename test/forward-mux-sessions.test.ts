// `splicer forward --to mux://` kept up, as a user sees it: --mux-sessions N is N connections to
// the far end with streams spread over them; a session the far end drops (or stops answering
// pings on) is dialled again and new clients get through; one that sends GoAway keeps its streams
// to their end while a new session takes new clients; a far end not there for --connect-timeout resets the client and
// leaks no fd; a client that comes before the session waits for it; SIGTERM sends GoAway and lets
// streams finish within --grace; --metrics counts sessions and pairs; --config takes the new keys;
// a mux listener beyond loopback needs --open. The far end here is this process's own yamux
// server (src/mux), so its connections and sessions can be counted and dropped.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createMuxSession, type MuxSession } from '../src/index.js';
import * as h from './helpers.js';
import { KiB } from './helpers.js';
import { freePort, portOf, runCli, startCli, type CliProcess } from './cli-harness.js';
import { scrape, sum } from './metrics-helpers.js';

afterEach(h.closeAll);

interface MuxEnd {
  port: number;
  /** Connections accepted, in order: one per session dialled to it. */
  conns: h.Arrivals<net.Socket>;
  sessions: MuxSession[];
}

/** A yamux server on 127.0.0.1 (`port`: that one, else any) whose every stream echoes. */
async function startMuxEnd(port = 0): Promise<MuxEnd> {
  const sessions: MuxSession[] = [];
  const conns = new h.Arrivals<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    h.track(socket);
    socket.on('error', () => {});
    const session = createMuxSession(socket, { role: 'server' });
    session.on('error', () => {});
    session.on('stream', (stream) => {
      stream.on('error', () => {});
      stream.pipe(stream);
    });
    sessions.push(session);
    h.onCleanup(() => session.destroy());
    conns.push(socket);
  });
  h.track(server);
  await new Promise<void>((resolve) => server.listen(port, h.HOST, resolve));
  return { port: (server.address() as net.AddressInfo).port, conns, sessions };
}

async function nearEnd(to: string, extra: string[] = []): Promise<{ cli: CliProcess; port: number }> {
  const cli = startCli(['forward', '--listen', '127.0.0.1:0', '--to', to, ...extra]);
  const line = await cli.waitFor('forwarding');
  return { cli, port: portOf((line.listen as string[])[0]) };
}

/** A client that has sent `bytes` and read their echo back, still open. */
async function openClient(port: number, bytes = 4 * KiB): Promise<net.Socket> {
  const client = await h.connectTo(port);
  const data = h.patternBytes(bytes, bytes);
  client.write(data);
  expect(h.sha256(await h.within(h.readBytes(client, bytes), 10_000, 'the echo'))).toBe(h.sha256(data));
  return client;
}

async function echoedIntact(port: number, seed: number, bytes: number): Promise<void> {
  const client = await h.connectTo(port);
  const received = h.hashUntilEnd(client);
  const sent = await h.writeRandom(client, seed, bytes);
  expect(await h.within(received, 20_000, 'the echo')).toEqual(sent);
}

const fdCount = (pid: number) => fs.readdirSync(`/proc/${pid}/fd`).length;

describe('splicer forward --to mux:// sessions', () => {
  it('--mux-sessions 3 dials 3 connections to the far end and spreads streams evenly over them', async () => {
    const far = await startMuxEnd();
    const near = await nearEnd(`mux://127.0.0.1:${far.port}`, ['--mux-sessions', '3']);
    for (let i = 0; i < 3; i++) await near.cli.waitFor('mux session up');
    await far.conns.nth(2, 'three sessions', 10_000);
    const clients = [];
    for (let i = 0; i < 9; i++) clients.push(await openClient(near.port));
    // The least busy session takes each new stream.
    expect(far.sessions.map((s) => s.streamCount)).toEqual([3, 3, 3]);
    for (const client of clients) client.destroy();
    await h.within(Promise.all(Array.from({ length: 6 }, (_, i) => echoedIntact(near.port, i, 256 * KiB))), 30_000, 'more clients');
    expect(far.conns.items).toHaveLength(3);
  });

  it('dials a lost session again, and new clients get through it', async () => {
    const far = await startMuxEnd();
    const near = await nearEnd(`mux://127.0.0.1:${far.port}`);
    await echoedIntact(near.port, 1, 64 * KiB);
    far.conns.items[0].destroy();
    const lost = await near.cli.waitFor('mux session lost: dialling again');
    expect(lost.retryInMs).toBeGreaterThan(0);
    await far.conns.nth(1, 'a second session', 10_000);
    await near.cli.waitFor('mux session up');
    await echoedIntact(near.port, 2, 64 * KiB);
    expect(far.sessions[1].streamCount).toBe(0);
    expect(far.conns.items).toHaveLength(2);
  });

  it('dials again a session whose far end stops answering pings', async () => {
    const far = await startMuxEnd();
    const near = await nearEnd(`mux://127.0.0.1:${far.port}`, ['--mux-keepalive', '1']);
    const first = await far.conns.nth(0, 'the first session', 10_000);
    // A stream's round trip first: the session's opening ping has had its answer by then.
    await echoedIntact(near.port, 7, 4 * KiB);
    // The far end's session reads nothing more: no answer to a ping, no byte at all.
    first.pause();
    const lost = await near.cli.waitFor('mux session lost: dialling again', undefined, 30_000);
    expect(lost.err).toMatch(/nothing from the peer for 10000 ms after a ping/);
    await far.conns.nth(1, 'a second session', 10_000);
    await near.cli.waitFor('mux session up');
    await echoedIntact(near.port, 8, 64 * KiB);
  }, 40_000);

  it('after GoAway: open streams finish on the old session, new clients go to a fresh one', async () => {
    const far = await startMuxEnd();
    const near = await nearEnd(`mux://127.0.0.1:${far.port}`);
    const early = await openClient(near.port);
    const rest = h.hashUntilEnd(early);
    void far.sessions[0].close(); // GoAway
    await near.cli.waitFor('mux session got GoAway: draining it, dialling a new one');
    await far.conns.nth(1, 'a fresh session', 10_000);
    await near.cli.waitFor('mux session up');
    const late = await openClient(near.port);
    expect(far.sessions.map((s) => s.streamCount)).toEqual([1, 1]);
    // The early client goes on: what it sends now still comes back, and its end ends the old session.
    const more = await h.writeRandom(early, 9, 512 * KiB);
    expect((await h.within(rest, 10_000, 'the early client')).bytes).toBe(more.bytes);
    await h.within(far.sessions[0].whenClosed(), 10_000, 'the old session closing');
    late.end();
    await h.within(h.collectUntilEnd(late), 10_000, 'the late client');
  });

  it('a client that comes before the far end is up waits for the session', async () => {
    const port = await freePort();
    const near = await nearEnd(`mux://127.0.0.1:${port}`, ['--connect-timeout', '20']);
    await near.cli.waitFor('mux session dial failed');
    const client = await h.connectTo(near.port);
    const received = h.hashUntilEnd(client);
    const sent = h.writeRandom(client, 4, 128 * KiB);
    await startMuxEnd(port);
    expect(await h.within(received, 20_000, 'the echo once the far end is up')).toEqual(await sent);
  });

  it('resets a client when no session comes up within --connect-timeout, and leaks no fd', async () => {
    const port = await freePort();
    const near = await nearEnd(`mux://127.0.0.1:${port}`, ['--connect-timeout', '0.5']);
    const pid = near.cli.child.pid!;
    const one = async () => {
      const client = await h.connectTo(near.port);
      const seen = h.watch(client);
      client.write('hello');
      expect(h.sawReset(await h.within(seen.closed, 10_000, 'the reset'))).toBe(true);
    };
    await one();
    const failed = await near.cli.waitFor('no upstream: client reset');
    expect(failed.err).toMatch(/no mux session to mux:\/\/127\.0\.0\.1:\d+ came up within 500 ms/);
    const before = fdCount(pid);
    for (let i = 0; i < 5; i++) await one();
    // A dial attempt may hold a socket for a moment: the count comes back to where it was.
    expect(await h.waitFor(() => fdCount(pid) <= before, 5_000)).toBe(true);
  });

  it('SIGTERM: GoAway to the far end, an open stream finishes within --grace, then a clean exit', async () => {
    const far = await startMuxEnd();
    const near = await nearEnd(`mux://127.0.0.1:${far.port}`, ['--grace', '10']);
    const client = await openClient(near.port);
    const rest = h.hashUntilEnd(client);
    const goAway = new Promise((resolve) => far.sessions[0].once('goaway', resolve));
    const exited = near.cli.stop();
    await h.within(goAway, 10_000, 'GoAway at the far end');
    // New clients are refused now; the open one goes on to its end.
    await expect(h.connectTo(near.port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    const more = await h.writeRandom(client, 12, 256 * KiB);
    expect((await h.within(rest, 10_000, 'the open client')).bytes).toBe(more.bytes);
    expect(await h.within(exited, 10_000, 'the exit')).toBe(0);
  });

  it('SIGTERM with a stream that does not end: it is ended when --grace runs out', async () => {
    const far = await startMuxEnd();
    const near = await nearEnd(`mux://127.0.0.1:${far.port}`, ['--grace', '0.5']);
    const client = await openClient(near.port);
    const seen = h.watch(client);
    expect(await h.within(near.cli.stop(), 10_000, 'the exit')).toBe(0);
    await h.within(seen.closed, 5_000, 'the client closed');
  });

  it('SIGTERM on --listen mux://: its sessions get GoAway and their streams finish', async () => {
    const target = await h.startEchoServer();
    const end = startCli(['forward', '--listen', 'mux://127.0.0.1:0', '--to', `127.0.0.1:${target.port}`]);
    const port = portOf(((await end.waitFor('forwarding')).listen as string[])[0]);
    const session = createMuxSession(await h.connectTo(port), { role: 'client' });
    h.onCleanup(() => session.destroy());
    const stream = session.openStream();
    stream.write('first ');
    await new Promise((resolve) => stream.once('readable', resolve));
    const goAway = new Promise((resolve) => session.once('goaway', resolve));
    const exited = end.stop();
    await h.within(goAway, 10_000, 'GoAway');
    expect(() => session.openStream()).toThrow(/GoAway/);
    const chunks: Buffer[] = [];
    stream.on('data', (d: Buffer) => chunks.push(d));
    stream.end('second');
    await h.within(new Promise((resolve) => stream.once('end', resolve)), 10_000, 'the echo to its end');
    expect(Buffer.concat(chunks).toString()).toContain('second');
    expect(await h.within(exited, 10_000, 'the exit')).toBe(0);
  });

  it('--metrics: sessions up at both ends, pairs counted', async () => {
    const target = await h.startEchoServer();
    const farCli = startCli(['forward', '--listen', 'mux://127.0.0.1:0', '--to', `127.0.0.1:${target.port}`, '--metrics', '127.0.0.1:0']);
    const farMetrics = portOf((await farCli.waitFor('metrics listening')).metrics);
    const farPort = portOf(((await farCli.waitFor('forwarding')).listen as string[])[0]);
    const near = startCli(['forward', '--listen', '127.0.0.1:0', '--to', `mux://127.0.0.1:${farPort}`, '--mux-sessions', '3', '--metrics', '127.0.0.1:0']);
    const nearMetrics = portOf((await near.waitFor('metrics listening')).metrics);
    const nearPort = portOf(((await near.waitFor('forwarding')).listen as string[])[0]);
    for (let i = 0; i < 3; i++) await near.waitFor('mux session up');
    for (let i = 0; i < 4; i++) await echoedIntact(nearPort, i, 32 * KiB);
    for (let i = 0; i < 4; i++) await near.waitFor('connection closed');
    for (let i = 0; i < 4; i++) await farCli.waitFor('connection closed');
    const nearText = await scrape(nearMetrics);
    expect(sum(nearText, 'splicer_mux_sessions')).toBe(3);
    expect(sum(nearText, 'splicer_connections_total', { outcome: 'eof' })).toBe(4);
    expect(sum(nearText, 'splicer_connections_active')).toBe(0);
    const farText = await scrape(farMetrics);
    expect(sum(farText, 'splicer_mux_sessions')).toBe(3);
    expect(sum(farText, 'splicer_connections_total', { outcome: 'eof' })).toBe(4);
  });

  it('takes the new flags from --config, and a SIGHUP applies --log-level and names what needs a restart', async () => {
    const far = await startMuxEnd();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-mux-config-'));
    h.onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'forward.yaml');
    fs.writeFileSync(file, `listen: ['127.0.0.1:0']\nto: mux://127.0.0.1:${far.port}\nmux-sessions: 2\nconnect-timeout: 3\n`);
    const cli = startCli(['forward', '--config', file]);
    const line = await cli.waitFor('forwarding');
    expect(line).toMatchObject({ to: `mux://127.0.0.1:${far.port}`, muxSessions: 2 });
    await far.conns.nth(1, 'two sessions', 10_000);
    await echoedIntact(portOf((line.listen as string[])[0]), 3, 64 * KiB);

    // SIGHUP: --log-level applies, the sessions are the process's until a restart; it keeps serving.
    fs.writeFileSync(file, `listen: ['127.0.0.1:0']\nto: mux://127.0.0.1:${far.port}\nmux-sessions: 3\nconnect-timeout: 3\nlog-level: debug\n`);
    cli.child.kill('SIGHUP');
    expect((await cli.waitFor('changed settings that need a restart are not applied')).settings).toEqual(['mux-sessions']);
    expect((await cli.waitFor('config reloaded')).changed).toEqual(expect.arrayContaining(['mux-sessions', 'log-level']));
    await echoedIntact(portOf((line.listen as string[])[0]), 4, 64 * KiB);
    expect(far.conns.items).toHaveLength(2);

    fs.writeFileSync(file, `to: tls://127.0.0.1:1\ntls-fingerprint: nothex\n`);
    const bad = runCli(['forward', '--config', file]);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/tls-fingerprint.*not a SHA-256 fingerprint/);
  });

  it('a SIGHUP that turns a plain forward into a mux one is refused, and the plain one goes on', async () => {
    const target = await h.startEchoServer();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-mux-config-'));
    h.onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'forward.yaml');
    fs.writeFileSync(file, `listen: ['127.0.0.1:0']\nto: 127.0.0.1:${target.port}\n`);
    const cli = startCli(['forward', '--config', file]);
    const port = portOf(((await cli.waitFor('forwarding')).listen as string[])[0]);
    fs.writeFileSync(file, `listen: ['127.0.0.1:0']\nto: mux://127.0.0.1:${target.port}\n`);
    cli.child.kill('SIGHUP');
    expect((await cli.waitFor('config reload failed; the running config is kept')).err).toMatch(/tls:\/\/ or mux:\/\/ --listen or --to takes a restart/);
    await echoedIntact(port, 5, 64 * KiB);
    expect(target.conns.items).toHaveLength(1);
  });

  it('refuses a mux listener beyond loopback without --open, and starts with it', async () => {
    const refused = runCli(['forward', '--listen', 'mux://0.0.0.0:0', '--to', '127.0.0.1:80']);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/--listen mux:\/\/0\.0\.0\.0:0 is beyond loopback.*--open/);
    const open = startCli(['forward', '--listen', 'mux://0.0.0.0:0', '--to', '127.0.0.1:80', '--open']);
    expect(await open.waitFor('forwarding')).toMatchObject({ exposed: true });
    expect(await open.stop()).toBe(0);
  });
});

describe('splicer forward: transports and TLS flags that do not go together', () => {
  it.each([
    [['--to', 'http://127.0.0.1:80'], /unknown scheme http:\/\/; the schemes taken are tcp:\/\/, tls:\/\/, mux:\/\/, mux\+tls:\/\//],
    [['--listen', 'tls://127.0.0.1:0', '--to', '127.0.0.1:80'], /--listen tls:\/\/… needs --tls-cert and --tls-key/],
    [['--listen', 'mux+tls://127.0.0.1:0', '--to', '127.0.0.1:80', '--tls-cert', 'c.pem'], /--tls-cert and --tls-key/],
    [['--to', '127.0.0.1:80', '--tls-cert', 'c.pem', '--tls-key', 'k.pem'], /--tls-cert and --tls-key are for a tls:\/\/ or mux\+tls:\/\/ --listen; --listen here is tcp:\/\//],
    [['--to', 'mux://127.0.0.1:80', '--tls-ca', 'ca.pem'], /--tls-ca: for a tls:\/\/ or mux\+tls:\/\/ --to; --to here is mux:\/\/127\.0\.0\.1:80/],
    [['--to', '127.0.0.1:80', '--tls', '--tls-servername', 'x'], /--tls, --tls-servername: for a tls:\/\/ or mux\+tls:\/\/ --to/],
    [['--to', 'tls://127.0.0.1:80', '--tls-ca', 'ca.pem', '--tls-fingerprint', 'AB'.repeat(32)], /--tls-ca or --tls-fingerprint, not both/],
    [['--to', 'tls://127.0.0.1:80', '--tls-ca', '/nonexistent/ca.pem'], /--tls-ca: cannot read \/nonexistent\/ca.pem: ENOENT/],
    [['--to', 'tls://127.0.0.1:80', '--tls-fingerprint', 'abc'], /"abc" is not a SHA-256 fingerprint/],
    [['--to', '127.0.0.1:80', '--mux-sessions', '2'], /--mux-sessions is for a mux:\/\/ or mux\+tls:\/\/ --to/],
    [['--to', 'mux://127.0.0.1:80', '--mux-sessions', '0'], /--mux-sessions must be from 1 to 64/],
    [['--to', 'tls://127.0.0.1:80', '--send-proxy-protocol', 'v2'], /work with plain TCP at both ends only/],
    [['--to', 'mux+tls://127.0.0.1:80', '--engine', 'splice'], /--engine splice: /],
    [['--to', 'tls://127.0.0.1:80', '--workers', '2'], /--workers does not apply with tls:\/\//],
    [['--listen', 'mux+tls://127.0.0.1:0', '--to', 'mux://127.0.0.1:80'], /one side of the hop must be plain TCP or TLS/],
    [['--listen', 'tls://127.0.0.1:0', '--listen', 'mux://127.0.0.1:0', '--to', '127.0.0.1:80'], /--listen addresses must all have one scheme, got tls:\/\/ and mux:\/\//],
  ])('refuses %j, naming what is wrong', (args, message) => {
    const result = runCli(['forward', ...(args as string[])]);
    expect(result.status).not.toBe(0);
    expect(result.stderr + result.stdout).toMatch(message);
  });

  it('documents the transports and the new flags in --help', () => {
    const help = runCli(['forward', '--help']).stdout;
    for (const flag of ['tls://', 'mux+tls://', '--mux-sessions', '--tls-cert', '--tls-key', '--tls ', '--tls-ca', '--tls-fingerprint', '--tls-servername', '--open']) expect(help).toContain(flag);
  });
});
