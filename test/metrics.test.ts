// `--metrics` as a user runs it: the commands with real traffic through them, /metrics scraped over
// HTTP and the counters checked against what the clients saw; promtool's own check of the text.
import { createHash } from 'node:crypto';
import net from 'node:net';
import { SocksClient } from 'socks';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, portOf, runCli, startCli, type CliProcess } from './cli-harness.js';
import * as h from './helpers.js';
import { MiB } from './helpers.js';
import { socks5Connect } from './proxy-helpers.js';
import { get, has, promtoolCheck, scrape, sum } from './metrics-helpers.js';
import { needsSplice, needsTool, spliceSkipReason } from './policy.js';

afterEach(h.closeAll);

const STARTUP_MS = 40_000;

interface Running extends CliProcess {
  /** The metrics endpoint's port. */
  metricsPort: number;
}

/** `splicer ...args --metrics 127.0.0.1:0`, once `ready` is logged; the metrics line comes before it. */
async function start(args: string[], ready: string, env?: Record<string, string>): Promise<Running & { started: Record<string, unknown> }> {
  const run = startCli([...args, '--metrics', '127.0.0.1:0'], { env });
  const metricsLine = await run.waitFor('metrics listening', undefined, STARTUP_MS);
  const started = await run.waitFor(ready, undefined, STARTUP_MS);
  return { ...run, started, metricsPort: portOf(metricsLine.metrics) };
}

/**
 * A SOCKS5 CONNECT (no auth) written in one go, and everything after the 12-byte reply hashed to
 * the end: a download whose first bytes may come in the reply's segment.
 */
function socks5Download(proxyPort: number, port: number): Promise<h.Received> {
  const socket = h.track(net.connect(proxyPort, h.HOST));
  socket.write(Buffer.concat([Buffer.of(0x05, 0x01, 0x00), socks5Connect(h.HOST, port)]));
  socket.end();
  const hash = createHash('sha256');
  let skip = 2 + 10;
  let bytes = 0;
  return new Promise((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      const body = chunk.subarray(Math.min(skip, chunk.length));
      skip -= chunk.length - body.length;
      bytes += body.length;
      hash.update(body);
    });
    socket.on('end', () => resolve({ bytes, sha: hash.digest('hex') }));
    socket.on('error', reject);
  });
}

async function socks5(proxyPort: number, port: number): Promise<net.Socket> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: h.HOST, port: proxyPort, type: 5 },
    command: 'connect',
    destination: { host: h.HOST, port },
    timeout: 10_000,
  });
  return h.track(socket);
}

/** A server that sends `bytes` pattern bytes on connect and then holds the connection open. */
async function startHoldingSource(bytes: number): Promise<h.TestServer> {
  return h.startServer((socket, i) => {
    socket.on('error', () => {});
    // Closes when its client has: the pair ends by FIN both ways.
    socket.on('end', () => socket.end());
    socket.resume();
    h.writeRandom(socket, 500 + i, bytes, { end: false }).catch(() => {});
  });
}

describe('splicer proxy --metrics', () => {
  it('counts 3 SOCKS5 downloads of 1 MiB: connections, bytes, connect times; promtool accepts the text', async (ctx) => {
    const origin = await h.startHashServer({ replyBytes: MiB, when: 'connect' });
    const proxy = await start(['proxy', '--listen', '127.0.0.1:0'], 'proxy listening');
    const proxyPort = portOf((proxy.started.listen as string[])[0]);
    const before = await scrape(proxy.metricsPort);

    for (let i = 0; i < 3; i++) {
      const got = await h.within(socks5Download(proxyPort, origin.port), 30_000, 'a 1 MiB download');
      const sent = await (await origin.records.nth(i)).sent;
      expect(got).toEqual(sent);
      await proxy.waitFor('connection closed');
    }

    const after = await scrape(proxy.metricsPort);
    const rise = (name: string, labels: Record<string, string> = {}) => sum(after, name, labels) - sum(before, name, labels);
    expect(rise('splicer_connections_total', { service: 'proxy', outcome: 'eof' })).toBe(3);
    expect(rise('splicer_connections_total')).toBe(3);
    expect(rise('splicer_bytes_total', { direction: 'down' })).toBeGreaterThanOrEqual(3 * MiB);
    expect(rise('splicer_bytes_total', { direction: 'up' })).toBe(0);
    expect(rise('splicer_connection_duration_seconds_count')).toBe(3);
    expect(rise('splicer_upstream_connect_duration_seconds_count')).toBe(3);
    expect(sum(after, 'splicer_connections_active')).toBe(0);
    expect(sum(after, 'splicer_splice_pairs')).toBe(0);
    for (const name of ['splicer_config_reloads_total', 'splicer_splice_pipes_in_use', 'splicer_splice_rw_fallbacks_total', 'process_cpu_seconds_total', 'process_open_fds', 'nodejs_eventloop_lag_seconds']) {
      expect(has(after, name), name).toBe(true);
    }

    needsTool(ctx, 'promtool', 'prometheus');
    expect(promtoolCheck(after)).toEqual({ status: 0, output: '' });
  });

  it("shows an open download's bytes while it runs, and the pair as active", async () => {
    const origin = await startHoldingSource(6 * MiB);
    const proxy = await start(['proxy', '--listen', '127.0.0.1:0'], 'proxy listening');
    const proxyPort = portOf((proxy.started.listen as string[])[0]);
    const socket = await socks5(proxyPort, origin.port);
    await h.within(h.readBytes(socket, 6 * MiB), 30_000, '6 MiB of a download that stays open');

    const during = await scrape(proxy.metricsPort);
    expect(sum(during, 'splicer_bytes_total', { direction: 'down' })).toBeGreaterThanOrEqual(6 * MiB);
    expect(sum(during, 'splicer_connections_active')).toBe(1);
    expect(sum(during, 'splicer_connections_total')).toBe(0);
    expect(sum(during, 'splicer_splice_pairs')).toBe(spliceSkipReason ? 0 : 1);

    socket.end();
    await proxy.waitFor('connection closed');
    const after = await scrape(proxy.metricsPort);
    expect(sum(after, 'splicer_connections_active')).toBe(0);
    expect(sum(after, 'splicer_connections_total')).toBe(1);
  });

  it('counts failed handshakes by reason and failed connects by code', async () => {
    const closed = await freePort();
    const proxy = await start(['proxy', '--listen', '127.0.0.1:0', '--auth', 'alice:s3cret'], 'proxy listening');
    const proxyPort = portOf((proxy.started.listen as string[])[0]);
    const wrongPassword = SocksClient.createConnection({
      proxy: { host: h.HOST, port: proxyPort, type: 5, userId: 'alice', password: 'wrong' },
      command: 'connect',
      destination: { host: h.HOST, port: closed },
      timeout: 10_000,
    });
    await expect(wrongPassword).rejects.toThrow();
    await proxy.waitFor('connection closed', (line) => line.outcome === 'auth-failed');
    const refused = SocksClient.createConnection({
      proxy: { host: h.HOST, port: proxyPort, type: 5, userId: 'alice', password: 's3cret' },
      command: 'connect',
      destination: { host: h.HOST, port: closed },
      timeout: 10_000,
    });
    await expect(refused).rejects.toThrow();
    await proxy.waitFor('connection closed', (line) => line.outcome === 'ECONNREFUSED');
    // Not a SOCKS or HTTP first byte: a bad request.
    const junk = h.track(await h.connectTo(proxyPort));
    junk.on('error', () => {});
    junk.end(Buffer.from([0x16, 0x03, 0x01]));
    await proxy.waitFor('connection closed', (line) => line.outcome === 'bad-request');

    const text = await scrape(proxy.metricsPort);
    expect(sum(text, 'splicer_handshake_failures_total', { reason: 'auth' })).toBe(1);
    expect(sum(text, 'splicer_handshake_failures_total', { reason: 'bad_request' })).toBe(1);
    expect(sum(text, 'splicer_handshake_failures_total')).toBe(2);
    expect(sum(text, 'splicer_upstream_connect_errors_total', { code: 'ECONNREFUSED' })).toBe(1);
    expect(sum(text, 'splicer_connections_total', { outcome: 'ECONNREFUSED' })).toBe(1);
    expect(sum(text, 'splicer_connections_total', { outcome: 'auth-failed' })).toBe(1);
  });

  it('serves /healthz, answers 404 elsewhere and 405 to a POST', async () => {
    const proxy = await start(['proxy', '--listen', '127.0.0.1:0'], 'proxy listening');
    const health = await get(proxy.metricsPort, '/healthz');
    expect(health).toMatchObject({ status: 200, body: 'ok\n' });
    expect((await get(proxy.metricsPort, '/')).status).toBe(404);
    expect((await get(proxy.metricsPort, '/metricsx')).status).toBe(404);
    expect((await get(proxy.metricsPort, '/metrics', 'POST')).status).toBe(405);
    const metrics = await get(proxy.metricsPort, '/metrics');
    expect(metrics.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  });
});

describe('--metrics beyond loopback', () => {
  it.each([
    ['proxy', ['proxy', '--listen', '127.0.0.1:0']],
    ['forward', ['forward', '--listen', '127.0.0.1:0', '--to', '127.0.0.1:9']],
    ['relay', ['relay', '--listen', '127.0.0.1:0', '--to', '127.0.0.1:9']],
    ['tunnel server', ['tunnel', 'server', '--listen', '127.0.0.1:0', '--token', 'x'.repeat(32)]],
    ['tunnel client', ['tunnel', 'client', '--server', '127.0.0.1:9', '--token', 'x'.repeat(32), '--expose', 'web=127.0.0.1:80']],
  ])('%s refuses it without --open, naming the address and the flag', (_name, args) => {
    const result = runCli([...args, '--metrics', '0.0.0.0:9464']);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('refusing to start: --metrics 0.0.0.0:9464 is beyond loopback');
    expect(result.stderr).toContain('--open');
  });

  it('a port that is taken is a startup error naming --metrics', async () => {
    const taken = await h.startServer();
    const result = runCli(['forward', '--listen', '127.0.0.1:0', '--to', '127.0.0.1:9', '--metrics', `127.0.0.1:${taken.port}`]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`--metrics 127.0.0.1:${taken.port}: EADDRINUSE`);
  });
});

describe('splicer forward --metrics', () => {
  it('counts a 2 MiB echo both ways, and a refused upstream by its code', async () => {
    const echo = await h.startEchoServer();
    const fwd = await start(['forward', '--listen', '127.0.0.1:0', '--to', `127.0.0.1:${echo.port}`], 'forwarding');
    const socket = h.track(await h.connectTo(portOf((fwd.started.listen as string[])[0])));
    const received = h.hashUntilEnd(socket);
    const sent = await h.writeRandom(socket, 3, 2 * MiB);
    expect(await h.within(received, 30_000, 'the echo')).toEqual(sent);
    await fwd.waitFor('connection closed');
    const text = await scrape(fwd.metricsPort);
    expect(sum(text, 'splicer_bytes_total', { service: 'forward', direction: 'up' })).toBe(2 * MiB);
    expect(sum(text, 'splicer_bytes_total', { service: 'forward', direction: 'down' })).toBe(2 * MiB);
    expect(sum(text, 'splicer_connections_total', { outcome: 'eof' })).toBe(1);

    const closed = await freePort();
    const refusing = await start(['forward', '--listen', '127.0.0.1:0', '--to', `127.0.0.1:${closed}`], 'forwarding');
    const client = h.track(await h.connectTo(portOf((refusing.started.listen as string[])[0])));
    client.on('error', () => {});
    await refusing.waitFor('connection closed');
    const refused = await scrape(refusing.metricsPort);
    expect(sum(refused, 'splicer_upstream_connect_errors_total', { code: 'ECONNREFUSED' })).toBe(1);
    expect(sum(refused, 'splicer_upstream_connect_duration_seconds_count')).toBe(0);
    expect(sum(refused, 'splicer_connections_total', { outcome: 'connect-failed' })).toBe(1);
  });
});

describe('splicer relay --metrics', () => {
  it('counts the toxics set and the bytes relayed through one', async () => {
    const origin = await h.startHashServer({ replyBytes: MiB, when: 'connect' });
    const relay = await start(['relay', '--listen', '127.0.0.1:0', '--to', `127.0.0.1:${origin.port}`, '--toxic', 'noop'], 'relay listening');
    const text0 = await scrape(relay.metricsPort);
    expect(sum(text0, 'splicer_relay_toxics_active', { service: 'relay' })).toBe(1);
    const socket = h.track(await h.connectTo(portOf((relay.started.relays as Array<{ listen: string }>)[0]!.listen)));
    const received = h.hashUntilEnd(socket);
    socket.end();
    expect(await h.within(received, 30_000, 'a 1 MiB download')).toEqual(await (await origin.records.nth(0)).sent);
    await relay.waitFor('connection closed');
    const text = await scrape(relay.metricsPort);
    expect(sum(text, 'splicer_bytes_total', { direction: 'down' })).toBe(MiB);
    expect(sum(text, 'splicer_connections_total', { outcome: 'eof' })).toBe(1);
  });
});

describe('splicer tunnel --metrics', () => {
  it('server and client: sessions, tunnels up, and a stream counted on both sides', async () => {
    const origin = await h.startHashServer({ replyBytes: MiB, when: 'connect' });
    const env = { SPLICER_TUNNEL_TOKEN: 't'.repeat(32) };
    const server = await start(['tunnel', 'server', '--listen', '127.0.0.1:0', '--grace', '0'], 'tunnel server listening', env);
    const client = await start(['tunnel', 'client', '--server', String(server.started.listen), '--expose', `web=127.0.0.1:${origin.port}@0`, '--grace', '0'], 'tunnel client starting', env);
    const up = await client.waitFor('tunnel up', undefined, STARTUP_MS);

    const socket = h.track(await h.connectTo(portOf(up.remote)));
    const received = h.hashUntilEnd(socket);
    socket.end();
    expect(await h.within(received, 30_000, 'a 1 MiB download')).toEqual(await (await origin.records.nth(0)).sent);
    await server.waitFor('connection closed');
    await client.waitFor('connection closed');

    const onServer = await scrape(server.metricsPort);
    expect(sum(onServer, 'splicer_tunnel_sessions', { service: 'tunnel', role: 'server' })).toBe(1);
    expect(sum(onServer, 'splicer_tunnel_tunnels_up')).toBe(1);
    expect(sum(onServer, 'splicer_connections_total', { outcome: 'eof' })).toBe(1);
    expect(sum(onServer, 'splicer_bytes_total', { direction: 'down' })).toBeGreaterThanOrEqual(MiB);
    const onClient = await scrape(client.metricsPort);
    expect(sum(onClient, 'splicer_tunnel_sessions', { role: 'client' })).toBe(1);
    expect(sum(onClient, 'splicer_tunnel_tunnels_up')).toBe(1);
    expect(sum(onClient, 'splicer_connections_total', { outcome: 'eof' })).toBe(1);
    expect(sum(onClient, 'splicer_upstream_connect_duration_seconds_count')).toBe(1);
  });
});

describe('--workers 2 --metrics', () => {
  it('the supervisor serves the sum over both workers', async (ctx) => {
    needsSplice(ctx);
    const origin = await h.startHashServer({ replyBytes: 64 * 1024, when: 'connect' });
    const proxy = await start(['proxy', '--listen', '127.0.0.1:0', '--workers', '2'], 'workers started');
    const proxyPort = portOf((proxy.started.listen as string[])[0]);
    const connections = 8;
    for (let i = 0; i < connections; i++) {
      expect((await h.within(socks5Download(proxyPort, origin.port), 30_000, 'a 64 KiB download')).bytes).toBe(64 * 1024);
      await proxy.waitFor('connection closed');
    }
    const workersSeen = new Set(proxy.lines.filter((l) => l.msg === 'connection closed').map((l) => l.worker));
    const text = await scrape(proxy.metricsPort);
    expect(sum(text, 'splicer_workers_scraped')).toBe(2);
    expect(sum(text, 'splicer_workers')).toBe(2);
    expect(sum(text, 'splicer_connections_total', { service: 'proxy' })).toBe(connections);
    expect(sum(text, 'splicer_bytes_total', { direction: 'down' })).toBeGreaterThanOrEqual(connections * 64 * 1024);
    // Both workers' process metrics are in the sum: two processes' worth of open fds.
    expect(sum(text, 'process_open_fds')).toBeGreaterThan(0);
    expect(workersSeen.size).toBeGreaterThanOrEqual(1);
    needsTool(ctx, 'promtool', 'prometheus');
    expect(promtoolCheck(text)).toEqual({ status: 0, output: '' });
  });
});
