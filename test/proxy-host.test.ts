// A proxy listening beyond loopback does not reach its own host: SOCKS5, SOCKS4/4a and HTTP on a
// 0.0.0.0 listener, every client connecting through 127.0.0.1. Denied: the exact failure reply, a
// FIN, no connection at the destination, no fd left behind. Lifted by an allow rule that names the
// address: the bytes flow. No test traffic leaves loopback (link-local and metadata ranges are
// covered by the pure tests in proxy-rules.test.ts).
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import http from 'node:http';
import type net from 'node:net';
import { SocksClient } from 'socks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Credentials } from '../src/proxy/auth.js';
import { createProxyServer } from '../src/proxy/server.js';
import { parseRule } from '../src/proxy/rules.js';
import * as h from './helpers.js';
import * as p from './proxy-helpers.js';
import { portOf, runCli, startCli } from './cli-harness.js';

const { HOST } = h;
const ANY = [{ host: '0.0.0.0', port: 0 }];
// A client allow rule (so the listener is not an open proxy) that names no destination: it must not lift the default.
const fromLoopback = parseRule('allow', 'from=127.0.0.1');

let echo: h.TestServer;
let origin: CountingOrigin;
/** Denies the host by default. */
let guarded: p.RunningProxy;
/** The same, with the echo server's and the origin's ports on 127.0.0.1 allowed by name. */
let lifted: p.RunningProxy;

beforeAll(async () => {
  echo = await h.startEchoServer();
  origin = await startCountingOrigin(64 * h.KiB);
  guarded = await p.startProxy({ listen: ANY, rules: [fromLoopback] });
  lifted = await p.startProxy({ listen: ANY, rules: [parseRule('allow', `to=127.0.0.1 port=${echo.port},${origin.port}`), fromLoopback] });
});
afterAll(async () => {
  await h.closeAll();
  await p.closeProxies();
});

interface CountingOrigin {
  port: number;
  body: Buffer;
  /** Requests it has answered. */
  requests(): number;
}

/** A node:http server on 127.0.0.1 answering every request with the same random body, counting them. */
async function startCountingOrigin(size: number): Promise<CountingOrigin> {
  const body = randomBytes(size);
  let requests = 0;
  const server = http.createServer((req, res) => {
    requests++;
    req.resume();
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length });
    res.end(body);
  });
  const port = await h.listen(server);
  return { port, body, requests: () => requests };
}

const GREETING = Buffer.of(0x05, 0x01, 0x00);
const NO_AUTH = Buffer.of(0x05, 0x00);
const MAPPED_LOOPBACK = '::ffff:127.0.0.1';
const HTTP_403 = Buffer.from(
  'HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: 14\r\n\r\n403 Forbidden\n',
  'latin1',
);

/** SOCKS5 CONNECT with ATYP 04: `::ffff:127.0.0.1` written out as 16 bytes. */
function socks5ConnectMapped(port: number): Buffer {
  return Buffer.concat([Buffer.of(0x05, 0x01, 0x00, 0x04), Buffer.from('00000000000000000000ffff7f000001', 'hex'), p.u16(port)]);
}

function httpGet(authority: string, headers: string[] = []): Buffer {
  return Buffer.from(`GET http://${authority}/ HTTP/1.1\r\nHost: ${authority}\r\n${headers.map((x) => `${x}\r\n`).join('')}Connection: close\r\n\r\n`, 'latin1');
}

interface Denial {
  name: string;
  protocol: 'socks5' | 'socks4' | 'socks4a' | 'http';
  /** The destination host as the client names it. */
  host: string;
  request: (port: number) => Buffer;
}

const SOCKS5_DENIED = Buffer.concat([NO_AUTH, p.socks5Failure(0x02)]);
const SOCKS4_DENIED = p.socks4Reply(0x5b);
const DENIED = {
  socks5: { bytes: SOCKS5_DENIED, reply: 2 },
  socks4: { bytes: SOCKS4_DENIED, reply: 0x5b },
  socks4a: { bytes: SOCKS4_DENIED, reply: 0x5b },
  http: { bytes: HTTP_403, reply: 403 },
};
const withBrackets = (host: string) => (host.includes(':') ? `[${host}]` : host);

// Per protocol: (a) a name that resolves to 127.0.0.1, (b) ::ffff:127.0.0.1, (c) 127.0.0.1.
const tunnelDenials: Denial[] = [
  { name: 'SOCKS5 localhost', protocol: 'socks5', host: 'localhost', request: (port) => Buffer.concat([GREETING, p.socks5Connect('localhost', port)]) },
  { name: `SOCKS5 ${MAPPED_LOOPBACK} (ATYP 04)`, protocol: 'socks5', host: MAPPED_LOOPBACK, request: (port) => Buffer.concat([GREETING, socks5ConnectMapped(port)]) },
  { name: 'SOCKS5 127.0.0.1', protocol: 'socks5', host: HOST, request: (port) => Buffer.concat([GREETING, p.socks5Connect(HOST, port)]) },
  { name: 'SOCKS4a localhost', protocol: 'socks4a', host: 'localhost', request: (port) => p.socks4Connect('localhost', port) },
  { name: `SOCKS4a ${MAPPED_LOOPBACK} as HOSTNAME`, protocol: 'socks4a', host: MAPPED_LOOPBACK, request: (port) => p.socks4Connect(MAPPED_LOOPBACK, port) },
  { name: 'SOCKS4 127.0.0.1', protocol: 'socks4', host: HOST, request: (port) => p.socks4Connect(HOST, port) },
  { name: 'HTTP CONNECT localhost', protocol: 'http', host: 'localhost', request: (port) => p.httpConnect('localhost', port) },
  { name: `HTTP CONNECT [${MAPPED_LOOPBACK}]`, protocol: 'http', host: MAPPED_LOOPBACK, request: (port) => p.httpConnect(MAPPED_LOOPBACK, port) },
  { name: 'HTTP CONNECT 127.0.0.1', protocol: 'http', host: HOST, request: (port) => p.httpConnect(HOST, port) },
];

const forwardDenials = ['localhost', withBrackets(MAPPED_LOOPBACK), HOST];

/** GET http://authority/ through the proxy with Connection: close: the whole response, which must end in a FIN. */
async function forwardGet(port: number, authority: string, headers: string[] = []): Promise<{ client: p.RawClient; head: string; body: Buffer }> {
  const client = await p.rawConnect(port);
  client.socket.write(httpGet(authority, headers));
  expect(await h.within(client.finished, 10_000, 'the response and its FIN')).toBe('end');
  client.socket.end();
  const all = client.received();
  const split = all.indexOf('\r\n\r\n');
  return { client, head: all.subarray(0, split).toString('latin1'), body: all.subarray(split + 4) };
}

async function denyEverything(): Promise<p.RawClient[]> {
  const clients: p.RawClient[] = [];
  for (const c of tunnelDenials) clients.push(await p.expectReplyThenEnd(guarded.port, c.request(echo.port), DENIED[c.protocol].bytes));
  for (const authority of forwardDenials) clients.push((await forwardGet(guarded.port, `${authority}:${origin.port}`)).client);
  return clients;
}

describe('a proxy on 0.0.0.0 refuses its own host by default', () => {
  it.each(tunnelDenials)('$name: the failure reply, a FIN, outcome denied, nothing dialled', async (c) => {
    expect(guarded.server.protectsHost).toBe(true);
    const before = echo.conns.items.length;
    const client = await p.expectReplyThenEnd(guarded.port, c.request(echo.port), DENIED[c.protocol].bytes);
    expect(await guarded.recordOf(client.localPort)).toMatchObject({
      protocol: c.protocol,
      command: 'connect',
      destination: `${withBrackets(c.host)}:${echo.port}`,
      outcome: 'denied',
      reply: DENIED[c.protocol].reply,
      bytesUp: 0,
      bytesDown: 0,
    });
    expect(echo.conns.items.length, 'no connection reached the destination').toBe(before);
  });

  it.each(forwardDenials)('HTTP GET http://%s:PORT/: 403, a FIN, outcome denied, no request at the origin', async (authority) => {
    const before = origin.requests();
    const { client, head, body } = await forwardGet(guarded.port, `${authority}:${origin.port}`);
    expect(head.split('\r\n')[0]).toBe('HTTP/1.1 403 Forbidden');
    expect(body.toString(), 'the body (chunked)').toContain('403 Forbidden\n');
    expect(await guarded.recordOf(client.localPort)).toMatchObject({ protocol: 'http', outcome: 'denied', reply: 403, destination: `${authority}:${origin.port}` });
    expect(origin.requests()).toBe(before);
  });

  it('leaves no fd open and no connection behind after every kind of denial', async () => {
    // Both ends of every connection are in this process: the baseline is taken with all of them closed.
    const allClosed = (clients: p.RawClient[]) => () => guarded.server.activeConnections === 0 && clients.every((c) => c.socket.closed);
    const warm = await denyEverything(); // whatever the first of each path opens once
    expect(await h.waitFor(allClosed(warm), 5000)).toBe(true);
    const table = h.fdTable();
    const count = h.openFdCount();
    const records = guarded.records.items.length;
    const clients = await denyEverything();
    await guarded.records.nth(records + clients.length - 1, 'a record for each denial');
    expect(await h.waitFor(allClosed(clients), 5000)).toBe(true);
    const settled = await h.waitFor(() => h.openFdCount() <= count, 5000);
    expect(settled ? {} : h.fdDiff(table, h.fdTable())).toEqual({});
  });

  it('with --auth a:b (authenticated is not trusted with the host): SOCKS5 02, HTTP 403', async () => {
    const authed = await p.startProxy({ listen: ANY, credentials: Credentials.fromEntries(['a:b']) });
    const socks = await p.expectReplyThenEnd(
      authed.port,
      Buffer.concat([Buffer.of(0x05, 0x01, 0x02), p.socks5Auth('a', 'b'), p.socks5Connect('localhost', echo.port)]),
      Buffer.concat([Buffer.of(0x05, 0x02, 0x01, 0x00), p.socks5Failure(0x02)]),
    );
    expect(await authed.recordOf(socks.localPort)).toMatchObject({ user: 'a', outcome: 'denied', reply: 2 });
    const auth = `Proxy-Authorization: Basic ${Buffer.from('a:b').toString('base64')}`;
    const get = await forwardGet(authed.port, `${HOST}:${origin.port}`, [auth]);
    expect(get.head.split('\r\n')[0]).toBe('HTTP/1.1 403 Forbidden');
    expect(await authed.recordOf(get.client.localPort)).toMatchObject({ user: 'a', outcome: 'denied', reply: 403 });
  });
});

/** Writes `size` pattern bytes and its FIN into an established tunnel to the echo server; the echo, hashed. */
async function echoThrough(client: p.RawClient, replyLength: number, size: number): Promise<void> {
  const payload = h.patternBytes(size, size);
  client.socket.end(payload);
  expect(await h.within(client.finished, 20_000, 'the echo and its FIN')).toBe('end');
  const echoed = client.received().subarray(replyLength);
  expect({ bytes: echoed.length, sha: h.sha256(echoed) }).toEqual({ bytes: payload.length, sha: h.sha256(payload) });
}

describe('an allow rule that names the address lifts the default for it', () => {
  it.each([
    ['SOCKS5 127.0.0.1', (port: number) => Buffer.concat([GREETING, p.socks5Connect(HOST, port)]), 'socks5'],
    [`SOCKS5 [${MAPPED_LOOPBACK}] (ATYP 04)`, (port: number) => Buffer.concat([GREETING, socks5ConnectMapped(port)]), 'socks5'],
    ['SOCKS4 127.0.0.1', (port: number) => p.socks4Connect(HOST, port), 'socks4'],
    ['SOCKS4a localhost', (port: number) => p.socks4Connect('localhost', port), 'socks4a'],
    ['HTTP CONNECT 127.0.0.1', (port: number) => p.httpConnect(HOST, port), 'http'],
  ] as const)('%s: granted, and the bytes flow both ways', async (_name, send, protocol) => {
    const client = await p.rawConnect(lifted.port);
    client.socket.write(send(echo.port));
    let replyLength: number;
    if (protocol === 'socks5') {
      const head = await client.waitBytes(6);
      expect(head.subarray(0, 5).toString('hex'), 'method 00, then VER 05 REP 00 RSV 00').toBe('0500050000');
      expect(head[5], 'ATYP 01: BND.ADDR is IPv4').toBe(0x01);
      replyLength = 2 + 10;
    } else if (protocol === 'http') {
      expect(await client.waitBytes(p.HTTP_200_CONNECT.length)).toEqual(p.HTTP_200_CONNECT);
      replyLength = p.HTTP_200_CONNECT.length;
    } else {
      expect((await client.waitBytes(2)).toString('hex')).toBe('005a');
      replyLength = 8;
    }
    await client.waitBytes(replyLength);
    await echoThrough(client, replyLength, 256 * h.KiB + 7);
    expect(await lifted.recordOf(client.localPort)).toMatchObject({ protocol, outcome: 'eof', bytesUp: 256 * h.KiB + 7, bytesDown: 256 * h.KiB + 7 });
  });

  it('HTTP GET http://127.0.0.1:PORT/: 200 and the body, hashed', async () => {
    const before = origin.requests();
    const { client, head, body } = await forwardGet(lifted.port, `${HOST}:${origin.port}`);
    expect(head.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    expect(h.sha256(body)).toBe(h.sha256(origin.body));
    expect(origin.requests()).toBe(before + 1);
    expect(await lifted.recordOf(client.localPort)).toMatchObject({ protocol: 'http', outcome: 'eof', reply: 200, bytesDown: origin.body.length });
  });

  it('only for what it names: another port on 127.0.0.1 is still denied', async () => {
    const other = await h.startEchoServer();
    const client = await p.expectReplyThenEnd(lifted.port, Buffer.concat([GREETING, p.socks5Connect(HOST, other.port)]), Buffer.concat([NO_AUTH, p.socks5Failure(0x02)]));
    expect(await lifted.recordOf(client.localPort)).toMatchObject({ outcome: 'denied', reply: 2 });
    expect(other.conns.items.length).toBe(0);
  });
});

describe('protectHost', () => {
  it('a loopback-only proxy keeps reaching 127.0.0.1 (auto)', async () => {
    const local = await p.startProxy();
    expect(local.server.protectsHost).toBe(false);
    const client = await p.rawConnect(local.port);
    client.socket.write(p.socks4Connect('localhost', echo.port));
    expect((await client.waitBytes(8)).toString('hex').slice(0, 4)).toBe('005a');
    await echoThrough(client, 8, 1000);
  });

  it('true protects a loopback listener; false leaves a 0.0.0.0 listener as it was', async () => {
    const strict = await p.startProxy({ protectHost: true });
    expect(strict.server.protectsHost).toBe(true);
    await p.expectReplyThenEnd(strict.port, p.socks4Connect(HOST, echo.port), p.socks4Reply(0x5b));
    const loose = await p.startProxy({ listen: ANY, rules: [fromLoopback], protectHost: false });
    expect(loose.server.protectsHost).toBe(false);
    const client = await p.rawConnect(loose.port);
    client.socket.write(p.socks4Connect(HOST, echo.port));
    expect((await client.waitBytes(8)).toString('hex').slice(0, 4)).toBe('005a');
    await echoThrough(client, 8, 1000);
  });

  it('refuses a value that is not true, false or auto', async () => {
    expect(() => createProxyServer({ listen: ANY, rules: [fromLoopback], protectHost: 'yes' as unknown as boolean })).toThrow(TypeError);
  });
});

type Remote = { host: string; port: number };

/** A SOCKS5 BIND with the npm socks client: the first reply, then the second. */
function socksBind(proxyPort: number, destination: Remote) {
  const client = new SocksClient({ proxy: { host: HOST, port: proxyPort, type: 5 }, command: 'bind', destination, timeout: 10_000 });
  const reply = (event: 'bound' | 'established') =>
    new Promise<{ remoteHost: Remote; socket: net.Socket }>((resolve, reject) => {
      client.once(event as 'established', (info) => {
        const socket = h.track(info.socket as net.Socket);
        socket.on('error', () => {});
        resolve({ remoteHost: info.remoteHost as Remote, socket });
      });
      client.once('error', reject);
    });
  const bound = reply('bound');
  const established = reply('established');
  bound.catch(() => {});
  established.catch(() => {});
  client.connect();
  return { bound, established };
}

describe('BIND on a 0.0.0.0 listener', () => {
  it('a peer on this host is refused (second reply 02, the peer closed); a rule naming it lets it in', async () => {
    const { bound, established } = socksBind(guarded.port, { host: '0.0.0.0', port: 0 });
    const { remoteHost } = await h.within(bound, 5000, 'first reply');
    const peer = await h.connectTo(remoteHost.port);
    const peerPort = peer.localPort;
    const closed = new Promise((resolve) => (peer.once('end', resolve), peer.once('close', resolve)));
    await expect(h.within(established, 5000, 'second reply')).rejects.toThrow(/NotAllowed/);
    await h.within(closed, 5000, 'peer closed');
    expect(await guarded.records.find((r) => r.command === 'bind', 'bind record')).toMatchObject({ outcome: 'denied', reply: 2, destination: `${HOST}:${peerPort}` });

    const open = await p.startProxy({ listen: ANY, rules: [parseRule('allow', 'to=127.0.0.1 cmd=bind'), fromLoopback] });
    const ok = socksBind(open.port, { host: '0.0.0.0', port: 0 });
    const first = await h.within(ok.bound, 5000, 'first reply');
    const okPeer = await h.connectTo(first.remoteHost.port);
    const second = await h.within(ok.established, 5000, 'second reply');
    const payload = h.patternBytes(9, 64 * h.KiB);
    const atPeer = h.hashUntilEnd(okPeer);
    second.socket.end(payload);
    expect(await h.within(atPeer, 10_000, 'peer receives')).toEqual({ bytes: payload.length, sha: h.sha256(payload) });
  });

  it('a BIND that names this host as its peer is refused before anything listens', async () => {
    const before = guarded.records.items.length;
    await expect(h.within(socksBind(guarded.port, { host: HOST, port: 0 }).bound, 5000, 'first reply')).rejects.toThrow(/NotAllowed/);
    expect((await guarded.records.nth(before, 'bind record'))).toMatchObject({ command: 'bind', outcome: 'denied', reply: 2 });
  });
});

describe('UDP ASSOCIATE on a 0.0.0.0 listener', () => {
  it('drops datagrams to this host (counted as denied) and relays those a rule names', async () => {
    const target = await udpSocket((msg, rinfo, socket) => socket.send(msg, rinfo.port, rinfo.address));
    const named = await udpSocket((msg, rinfo, socket) => socket.send(msg, rinfo.port, rinfo.address));
    const proxy = await p.startProxy({ listen: ANY, rules: [parseRule('allow', `to=127.0.0.1 port=${named.port} cmd=udp`), fromLoopback] });
    const client = await udpSocket();
    const { control, relay } = await associate(proxy.port);
    const frame = (host: string, port: number, data: string) => SocksClient.createUDPFrame({ remoteHost: { host, port }, data: Buffer.from(data) });
    for (const host of [HOST, MAPPED_LOOPBACK, 'localhost']) client.socket.send(frame(host, target.port, `to ${host}`), relay.port, HOST);
    // Last, and by the same name: its lookup is the one cached for the datagram before it, so once
    // its echo is back the proxy has handled all three before it.
    client.socket.send(frame('localhost', named.port, 'named'), relay.port, HOST);
    const echoed = await client.messages.find(() => true, 'the echo of the named target');
    expect(SocksClient.parseUDPFrame(echoed.msg)).toMatchObject({ remoteHost: { host: HOST, port: named.port } });
    expect(SocksClient.parseUDPFrame(echoed.msg).data.toString()).toBe('named');
    control.destroy();
    const record = await proxy.records.find((r) => r.command === 'udp', 'udp record');
    expect(record).toMatchObject({ outcome: 'eof', reply: 0, datagramsDenied: 3 });
    expect(target.messages.items.length, 'nothing reached the protected target').toBe(0);
    expect(named.messages.items.map((m) => m.msg.toString())).toEqual(['named']);
  });
});

interface Udp {
  socket: dgram.Socket;
  port: number;
  messages: h.Arrivals<{ msg: Buffer; rinfo: dgram.RemoteInfo }>;
}

async function udpSocket(onMessage?: (msg: Buffer, rinfo: dgram.RemoteInfo, socket: dgram.Socket) => void): Promise<Udp> {
  const socket = dgram.createSocket('udp4');
  const messages = new h.Arrivals<{ msg: Buffer; rinfo: dgram.RemoteInfo }>();
  socket.on('error', () => {});
  socket.on('message', (msg, rinfo) => {
    messages.push({ msg, rinfo });
    onMessage?.(msg, rinfo, socket);
  });
  await new Promise<void>((resolve) => socket.bind(0, HOST, resolve));
  h.onCleanup(() => {
    try {
      socket.close();
    } catch {
      // already closed
    }
  });
  return { socket, port: socket.address().port, messages };
}

async function associate(proxyPort: number) {
  const client = new SocksClient({ proxy: { host: HOST, port: proxyPort, type: 5 }, command: 'associate', destination: { host: '0.0.0.0', port: 0 } });
  const established = new Promise<{ control: net.Socket; relay: Remote }>((resolve, reject) => {
    client.once('established', (info) => {
      const control = h.track(info.socket as net.Socket);
      control.on('error', () => {});
      resolve({ control, relay: info.remoteHost as Remote });
    });
    client.once('error', reject);
  });
  client.connect();
  return h.within(established, 5000, 'associate reply');
}

/** `splicer proxy ARGS` from dist/; resolves with its port once it logs "proxy listening". */
async function startProxyCli(args: string[]) {
  const run = startCli(['proxy', ...args]);
  const started = await run.waitFor('proxy listening');
  return { port: portOf((started.listen as string[])[0]), started, stop: () => run.stop() };
}

describe('splicer proxy (CLI)', () => {
  it('--listen 0.0.0.0 --auth a:b: localhost is denied; the --help example lifts it for one port', async () => {
    const auth = Buffer.concat([Buffer.of(0x05, 0x01, 0x02), p.socks5Auth('a', 'b')]);
    const authOk = Buffer.of(0x05, 0x02, 0x01, 0x00);
    const exposed = await startProxyCli(['--listen', '0.0.0.0:0', '--auth', 'a:b']);
    try {
      expect(exposed.started.protectHost).toBe(true);
      await p.expectReplyThenEnd(exposed.port, Buffer.concat([auth, p.socks5Connect('localhost', echo.port)]), Buffer.concat([authOk, p.socks5Failure(0x02)]));
    } finally {
      await exposed.stop();
    }

    const liftedCli = await startProxyCli(['--listen', '0.0.0.0:0', '--auth', 'a:b', '--allow', `to=127.0.0.1 port=${echo.port}`, '--allow', '*']);
    try {
      const client = await p.rawConnect(liftedCli.port);
      client.socket.write(Buffer.concat([auth, p.socks5Connect('localhost', echo.port)]));
      expect((await client.waitBytes(6)).toString('hex')).toBe('050201000500');
      await client.waitBytes(4 + 10);
      await echoThrough(client, 4 + 10, 100 * h.KiB);
    } finally {
      await liftedCli.stop();
    }
  });

  it('--help says what is denied, how to lift it, and shows a --deny for the private ranges', () => {
    const help = runCli(['proxy', '--help']);
    expect(help.status).toBe(0);
    const text = help.stdout.replace(/\s+/g, ' ');
    for (const range of ['127.0.0.0/8', '::1', '0.0.0.0/8', '169.254.0.0/16', 'fe80::/10', 'every interface address']) expect(text).toContain(range);
    expect(text).toContain("--allow 'to=127.0.0.1 port=8080'");
    expect(text).toContain("--deny 'to=10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7'");
  });
});
