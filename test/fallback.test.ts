// Every command without the addon, as a macOS, Windows or BSD user runs it: each child gets
// SPLICER_DISABLE_NATIVE=1 (in both legs of CI), carries real traffic end to end on the JS engine
// (hashed), says so in its log, and `--engine splice` fails at startup naming the reason.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SocksClient } from 'socks';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { freePort, portOf, runCli, startCli, type CliProcess } from './cli-harness.js';
import * as h from './helpers.js';
import { KiB } from './helpers.js';
import { parsePcap } from './relay-pcap-helpers.js';

const env = { SPLICER_DISABLE_NATIVE: '1' };
const REASON = 'disabled by SPLICER_DISABLE_NATIVE=1';
const TOKEN = 'fallback-test-token-0123456789abcdef';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-fallback-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
afterEach(h.closeAll);

const start = (args: string[]) => startCli(args, { env });

/** Sends `size` random bytes through `socket` to an echo server and checks the echo by hash. */
async function echoedIntact(socket: import('node:net').Socket, seed: number, size = 512 * KiB): Promise<void> {
  const [sent, got] = await Promise.all([h.writeRandom(socket, seed, size), h.hashUntilEnd(socket)]);
  expect(got).toEqual({ bytes: sent.bytes, sha: sent.sha });
}

async function stopsCleanly(run: CliProcess): Promise<void> {
  expect(await run.stop()).toBe(0);
}

describe('every command on the JS engine when the addon is off', () => {
  it('splicer engines says why splice is off', () => {
    const { status, stdout } = runCli(['engines'], { env });
    expect(status).toBe(0);
    expect(JSON.parse(stdout)).toEqual({ splice: { available: false, reason: REASON }, js: { available: true } });
  });

  it.each([
    ['forward', ['forward', '--to', '127.0.0.1:1']],
    ['proxy', ['proxy']],
    ['relay', ['relay', '--listen', '127.0.0.1:0', '--to', '127.0.0.1:1']],
    ['tunnel server', ['tunnel', 'server', '--listen', '127.0.0.1:0', '--token', TOKEN]],
    ['tunnel client', ['tunnel', 'client', '--server', '127.0.0.1:1', '--token', TOKEN, '--expose', 'web=127.0.0.1:80']],
  ])('%s --engine splice fails at startup, naming the reason', (_name, args) => {
    const { status, stderr } = runCli([...args, '--engine', 'splice'], { env });
    expect(status).toBe(1);
    expect(stderr).toContain(`--engine splice: the splice engine is not available here (${REASON})`);
  });

  it('forward carries a stream intact and logs engine js', async () => {
    const echo = await h.startEchoServer();
    const run = start(['forward', '--listen', '127.0.0.1:0', '--to', `127.0.0.1:${echo.port}`]);
    const started = await run.waitFor('forwarding');
    expect(started).toMatchObject({ engine: 'js', spliceOff: REASON });
    await echoedIntact(await h.connectTo(portOf((started.listen as string[])[0])), 1);
    expect(await run.waitFor('connection closed')).toMatchObject({ engine: 'js', reason: 'eof' });
    await stopsCleanly(run);
  });

  it('proxy carries a SOCKS5 stream intact and logs engine js', async () => {
    const echo = await h.startEchoServer();
    const run = start(['proxy', '--listen', '127.0.0.1:0']);
    const started = await run.waitFor('proxy listening');
    expect(started).toMatchObject({ engine: 'js', spliceOff: REASON });
    const { socket } = await SocksClient.createConnection({
      proxy: { host: h.HOST, port: portOf((started.listen as string[])[0]), type: 5 },
      command: 'connect',
      destination: { host: h.HOST, port: echo.port },
    });
    h.track(socket);
    await echoedIntact(socket, 2);
    expect(await run.waitFor('connection closed')).toMatchObject({ engine: 'js', outcome: 'eof' });
    await stopsCleanly(run);
  });

  it('relay with a toxic, a recording and the API carries streams intact and records them', async () => {
    const echo = await h.startEchoServer();
    const file = path.join(dir, 'relay.pcap');
    const run = start(['relay', '--listen', '127.0.0.1:0', '--to', `127.0.0.1:${echo.port}`, '--record', file, '--api', `127.0.0.1:${await freePort()}`]);
    const started = await run.waitFor('relay listening');
    expect(started).toMatchObject({ engine: 'js', spliceOff: REASON });
    const listen = portOf((started.relays as { listen: string }[])[0]!.listen);
    const api = `http://${started.api as string}`;

    // Unfaulted, then with a toxic added over the API: both on the JS engine, both intact.
    await echoedIntact(await h.connectTo(listen), 3);
    expect(await run.waitFor('connection closed')).toMatchObject({ engine: 'js', reason: 'eof' });
    const added = await fetch(`${api}/proxies/relay1/toxics`, {
      method: 'POST',
      body: JSON.stringify({ type: 'latency', stream: 'downstream', attributes: { latency: 20 } }),
    });
    expect(added.status).toBe(200);
    await echoedIntact(await h.connectTo(listen), 4, 64 * KiB);
    expect(await run.waitFor('connection closed')).toMatchObject({ engine: 'js', reason: 'eof' });
    await stopsCleanly(run);

    // Both connections, both legs, every byte each way.
    const payload = parsePcap(fs.readFileSync(file)).reduce((n, r) => n + r.payload.length, 0);
    expect(payload).toBe(2 * 2 * (512 + 64) * KiB);
  });

  it('tunnel server and client carry a public connection intact and log engine js', async () => {
    const echo = await h.startEchoServer();
    const server = start(['tunnel', 'server', '--listen', '127.0.0.1:0', '--token', TOKEN]);
    const serverUp = await server.waitFor('tunnel server listening');
    expect(serverUp).toMatchObject({ engine: 'js', spliceOff: REASON });
    const client = start(['tunnel', 'client', '--server', serverUp.listen as string, '--token', TOKEN, '--expose', `web=127.0.0.1:${echo.port}@0`]);
    expect(await client.waitFor('tunnel client starting')).toMatchObject({ engine: 'js', spliceOff: REASON });
    const up = await client.waitFor('tunnel up');
    await echoedIntact(await h.connectTo(portOf(up.remote)), 5);
    expect(await server.waitFor('connection closed')).toMatchObject({ engine: 'js', reason: 'eof' });
    expect(await client.waitFor('connection closed')).toMatchObject({ engine: 'js', reason: 'eof' });
    await stopsCleanly(client);
    await stopsCleanly(server);
  });
});
