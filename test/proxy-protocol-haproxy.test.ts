// The PROXY protocol against HAProxy's own: HAProxy in front of `splicer proxy
// --accept-proxy-protocol` (send-proxy-v2 and send-proxy, the configuration
// docs/deploy.md shows, with two splicer instances), and splicer forward and relay
// with --send-proxy-protocol in front of HAProxy's `bind ... accept-proxy`. splicer runs as a user
// runs it (the CLI). Clients connect from other loopback addresses (127.0.0.2, .4, .5...) than
// HAProxy's own (127.0.0.1), so the address a header carries can be told from the peer's.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { SocksClient } from 'socks';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, type TestContext } from 'vitest';
import { freePort, portOf, startCli, type CliProcess, type LogLine } from './cli-harness.js';
import * as h from './helpers.js';
import * as p from './proxy-helpers.js';
import { hasTool, spliceSkipReason, underCi } from './policy.js';

const { HOST, KiB } = h;
const HAPROXY = hasTool('haproxy') ? 'haproxy' : fs.existsSync('/usr/sbin/haproxy') ? '/usr/sbin/haproxy' : null;

function needsHaproxy(ctx: TestContext): void {
  if (HAPROXY) return;
  if (underCi) throw new Error('haproxy is not installed, and CI must have it: apt-get install -y haproxy');
  ctx.skip('haproxy is not installed (apt-get install -y haproxy)');
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-haproxy-'));
const haproxies = new Set<ReturnType<typeof spawn>>();
afterEach(() => {
  for (const child of haproxies) child.kill('SIGKILL');
  haproxies.clear();
});
afterAll(async () => {
  await h.closeAll();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Checks `config` with `haproxy -c`, runs it in the foreground, and waits until `ports` accept. */
async function startHaproxy(config: string, ports: number[]): Promise<void> {
  const file = path.join(dir, `haproxy-${ports[0]}.cfg`);
  fs.writeFileSync(file, config);
  const check = spawnSync(HAPROXY!, ['-c', '-q', '-f', file], { encoding: 'utf8', timeout: 10_000 });
  expect(check.status, `haproxy -c:\n${check.stdout}${check.stderr}\n${config}`).toBe(0);
  const child = spawn(HAPROXY!, ['-db', '-f', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  haproxies.add(child);
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  for (const port of ports) {
    let up = false;
    for (const deadline = Date.now() + 10_000; !up && Date.now() < deadline && child.exitCode === null; ) {
      up = await accepts(port);
      if (!up) await h.sleep(50);
    }
    expect(up, `haproxy listening on ${port}; stderr: ${stderr}`).toBe(true);
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** The HAProxy configuration in docs/deploy.md, on these ports, with `send` for send-proxy-v2. */
function documentedConfig(frontend: number, splicers: [number, number], send: 'send-proxy-v2' | 'send-proxy'): string {
  const doc = fs.readFileSync(path.join(import.meta.dirname, '..', 'docs', 'deploy.md'), 'utf8');
  const block = /```haproxy\n([\s\S]*?)```/.exec(doc);
  expect(block, 'the haproxy block of docs/deploy.md').not.toBeNull();
  const config = block![1]
    .replace('127.0.0.1:1080', `${HOST}:${frontend}`)
    .replace('127.0.0.1:1081', `${HOST}:${splicers[0]}`)
    .replace('127.0.0.1:1082', `${HOST}:${splicers[1]}`)
    .replaceAll('send-proxy-v2', send);
  expect(config).toContain(`${HOST}:${splicers[1]} ${send}`);
  return config;
}

async function startSplicer(args: string[], ready: string): Promise<CliProcess & { port: number }> {
  const run = startCli(args);
  const started = await run.waitFor(ready);
  const listen = (started.listen as string[] | undefined)?.[0] ?? (started.relays as { listen: string }[])[0].listen;
  return { ...run, port: portOf(listen) };
}

/** A SOCKS5 CONNECT through `port` from `localAddress`, 256 KiB echoed and hashed; the client's port. */
async function socksEcho(port: number, localAddress: string, echoPort: number, seed: number): Promise<number> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: HOST, port, type: 5 },
    command: 'connect',
    destination: { host: HOST, port: echoPort },
    timeout: 10_000,
    socket_options: { localAddress } as net.SocketConnectOpts,
  });
  h.track(socket);
  const localPort = socket.localPort!;
  const received = h.hashUntilEnd(socket);
  const sent = await h.writeRandom(socket, seed, 256 * KiB);
  expect(await h.within(received, 20_000, 'the echo')).toEqual({ bytes: sent.bytes, sha: sent.sha });
  return localPort;
}

const clientClosed = (run: CliProcess, client: string) => run.waitFor('connection closed', (line: LogLine) => line.client === client, 15_000);

const ACCEPT_PATHS = spliceSkipReason ? ['node'] : ['native', 'node'];

describe.each(ACCEPT_PATHS)('HAProxy in front of two `splicer proxy --accept-proxy-protocol --accept %s`', (accept) => {
  let echo: h.TestServer;
  beforeAll(async () => {
    echo = await h.startEchoServer();
  });
  beforeEach((ctx) => needsHaproxy(ctx));

  it.each(['send-proxy-v2', 'send-proxy'] as const)('%s: both instances serve, the logs and the `from=` rule see the real client, a headerless connection is closed', async (send) => {
    const args = ['proxy', '--listen', `${HOST}:0`, '--accept-proxy-protocol', '--accept', accept, '--deny', 'from=127.0.0.2'];
    const splicers = [await startSplicer(args, 'proxy listening'), await startSplicer(args, 'proxy listening')];
    for (const s of splicers) expect(s.lines[0]).toMatchObject({ accept, acceptProxyProtocol: true });
    const front = await freePort();
    await startHaproxy(documentedConfig(front, [splicers[0].port, splicers[1].port], send), [front]);

    // Two tunnels open at once: leastconn puts them on different instances.
    const held = await SocksClient.createConnection({
      proxy: { host: HOST, port: front, type: 5 },
      command: 'connect',
      destination: { host: HOST, port: echo.port },
      timeout: 10_000,
      socket_options: { localAddress: '127.0.0.4' } as net.SocketConnectOpts,
    });
    h.track(held.socket);
    const heldClient = `127.0.0.4:${held.socket.localPort}`;
    const echoed = await socksEcho(front, '127.0.0.4', echo.port, 5);
    held.socket.end();
    const records = await Promise.all(
      [heldClient, `127.0.0.4:${echoed}`].map((client) => Promise.race(splicers.map((s) => clientClosed(s, client).then((line) => ({ s, line }))))),
    );
    expect(new Set(records.map((r) => r.s)).size, 'each instance served one tunnel').toBe(2);
    expect(records.find((r) => r.line.client === `127.0.0.4:${echoed}`)!.line).toMatchObject({ protocol: 'socks5', outcome: 'eof', bytesUp: 256 * KiB, bytesDown: 256 * KiB });

    // The deny rule names 127.0.0.2: HAProxy connects from 127.0.0.1, so only the header can tell.
    const denied = SocksClient.createConnection({
      proxy: { host: HOST, port: front, type: 5 },
      command: 'connect',
      destination: { host: HOST, port: echo.port },
      timeout: 10_000,
      socket_options: { localAddress: '127.0.0.2' } as net.SocketConnectOpts,
    });
    await expect(denied).rejects.toThrow(/rejected|NotAllowed/i);
    const deniedLine = await Promise.race(splicers.map((s) => s.waitFor('connection closed', (line) => String(line.client).startsWith('127.0.0.2:'), 15_000)));
    expect(deniedLine).toMatchObject({ outcome: 'denied', reply: 2 });

    // Straight to an instance, with no header: closed before any reply.
    const direct = await p.rawConnect(splicers[0].port);
    direct.socket.write(Buffer.from([0x05, 0x01, 0x00]));
    await h.within(direct.finished, 15_000, 'the headerless connection to be closed');
    expect(direct.received()).toHaveLength(0);
    expect(await clientClosed(splicers[0], `${HOST}:${direct.localPort}`)).toMatchObject({ outcome: 'bad-proxy-header' });
  });
});

describe('splicer in front of HAProxy `bind ... accept-proxy`', () => {
  let echo: h.TestServer;
  let http1: number;
  let tcp: number;
  let front: number;
  let upstreamOfFront: number;

  beforeAll(async () => {
    echo = await h.startEchoServer();
  });
  beforeEach((ctx) => needsHaproxy(ctx));

  /**
   * fe_http answers every request with the client HAProxy read from the header (`%[src]`) and the
   * address that client reached (`%[dst]`); fe_tcp passes the stream to the echo server; fe_front
   * writes a v2 header to `upstreamOfFront` (a splicer that accepts one and sends one on).
   */
  const startBackends = async () => {
    [http1, tcp, front, upstreamOfFront] = [await freePort(), await freePort(), await freePort(), await freePort()];
    await startHaproxy(
      `global
    maxconn 100
defaults
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe_http
    mode http
    bind ${HOST}:${http1} accept-proxy
    http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port] %[dst]:%[dst_port]"
frontend fe_tcp
    mode tcp
    bind ${HOST}:${tcp} accept-proxy
    default_backend echo
backend echo
    mode tcp
    server echo ${HOST}:${echo.port}
frontend fe_front
    mode tcp
    bind ${HOST}:${front}
    default_backend splicer
backend splicer
    mode tcp
    server splicer ${HOST}:${upstreamOfFront} send-proxy-v2
`,
      [http1, tcp, front],
    );
  };

  const get = (port: number, localAddress: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.get({ host: HOST, port, path: '/', localAddress, agent: false, timeout: 10_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
    });

  const SENDERS = [
    { command: 'forward', version: 'v2', ready: 'forwarding' },
    { command: 'forward', version: 'v1', ready: 'forwarding' },
    { command: 'relay', version: 'v2', ready: 'relay listening' },
    { command: 'relay', version: 'v1', ready: 'relay listening' },
  ];

  it.each(SENDERS)('$command --send-proxy-protocol $version: HAProxy reads the real client, and bytes round trip', async ({ command, version, ready }) => {
    await startBackends();
    const start = (to: number) => startSplicer([command, '--listen', `${HOST}:0`, '--to', `${HOST}:${to}`, '--send-proxy-protocol', version], ready);
    const toHttp = await start(http1);
    const answer = await get(toHttp.port, '127.0.0.5');
    expect(answer.status).toBe(200);
    expect(answer.body).toMatch(new RegExp(`^127\\.0\\.0\\.5:\\d+ 127\\.0\\.0\\.1:${toHttp.port}$`));
    const clientPort = Number(answer.body.split(' ')[0].split(':')[1]);
    expect(await toHttp.waitFor('connection closed')).toMatchObject({ client: `127.0.0.5:${clientPort}` });

    const toTcp = await start(tcp);
    const socket = h.track(net.connect({ host: HOST, port: toTcp.port, localAddress: '127.0.0.6', allowHalfOpen: true }));
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const received = h.hashUntilEnd(socket);
    const sent = await h.writeRandom(socket, 11, 512 * KiB);
    expect(await h.within(received, 20_000, 'the echo through HAProxy')).toEqual({ bytes: sent.bytes, sha: sent.sha });
  });

  it('HAProxy send-proxy-v2 → forward --accept-proxy-protocol --send-proxy-protocol v1 → HAProxy accept-proxy: the client survives both hops', async () => {
    await startBackends();
    const middle = startCli(['forward', '--listen', `${HOST}:${upstreamOfFront}`, '--to', `${HOST}:${http1}`, '--accept-proxy-protocol', '--send-proxy-protocol', 'v1']);
    await middle.waitFor('forwarding');
    const answer = await get(front, '127.0.0.7');
    expect(answer.status).toBe(200);
    // The client and the address it reached: HAProxy's front door, not splicer's.
    expect(answer.body).toMatch(new RegExp(`^127\\.0\\.0\\.7:\\d+ 127\\.0\\.0\\.1:${front}$`));
    const line = await middle.waitFor('connection closed');
    expect(String(line.client)).toMatch(/^127\.0\.0\.7:/);
  });
});
