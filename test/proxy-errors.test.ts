// The proxy server's failure paths over raw sockets: the exact reply bytes of every protocol, then
// the close; odd input, silence, limits, the exposure check; and a fuzz of random bytes on live
// connections. Loopback only: names resolve through a test `lookup`, never the system resolver.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Credentials } from '../src/proxy/auth.js';
import type { LookupAll } from '../src/net/dial.js';
import { parseRule } from '../src/proxy/rules.js';
import { createProxyServer, ExposureError, openProxyRisk } from '../src/proxy/server.js';
import type { ProxyOptions } from '../src/proxy/options.js';
import { SpliceEngine } from '../src/engine/splice/engine.js';
import { engines } from '../src/engine/forward.js';
import * as h from './helpers.js';
import * as p from './proxy-helpers.js';

const { HOST } = h;

let fdBaseline = 0;
let fdTable = new Map<string, string>();
beforeAll(() => {
  fdBaseline = h.openFdCount();
  fdTable = h.fdTable();
});

/** Test names: nx.test fails like an unknown name, dual.test has an IPv6 and an IPv4 address, every other name is 127.0.0.1. */
const lookup: LookupAll = async (name) => {
  if (name === 'nx.test') throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
  if (name === 'dual.test') return [{ address: '::1', family: 6 }, { address: '127.0.0.1', family: 4 }];
  return [{ address: '127.0.0.1', family: 4 }];
};

let echo: h.TestServer;
/** A live echo server that the rules deny (so a 02 cannot be a refusal in disguise). */
let deniedEcho: h.TestServer;
let closed: number;
// Pairs that do get forwarded use an engine of this file's own, closed at the end (the shared
// default engine would keep its epoll fd and pooled pipes past the fd check).
let spliceEngine: SpliceEngine | undefined;

beforeAll(async () => {
  if (engines().splice.available) spliceEngine = new SpliceEngine();
  echo = await h.startEchoServer();
  deniedEcho = await h.startEchoServer();
  closed = await p.closedPort();
});
afterAll(async () => {
  await p.closeProxies();
  await h.closeAll();
  await spliceEngine?.close();
});

const baseOptions = (): Partial<ProxyOptions> => ({
  engine: spliceEngine ? 'splice' : 'js',
  spliceEngine,
  lookup,
  rules: [parseRule('deny', `port=${deniedEcho.port}`)],
  timeouts: { handshake: 300, connect: 1500 },
});

const GREETING_NO_AUTH = Buffer.of(0x05, 0x01, 0x00);
const METHOD_NO_AUTH = Buffer.of(0x05, 0x00);

describe('SOCKS5 failure replies', () => {
  let proxy: p.RunningProxy;
  let authed: p.RunningProxy;
  beforeAll(async () => {
    proxy = await p.startProxy(baseOptions());
    authed = await p.startProxy({ ...baseOptions(), credentials: Credentials.fromEntries(['alice:s3cret']) });
  });

  it('refused destination (a closed port): REP 05, 10 bytes, then close', async () => {
    const c = await p.expectReplyThenEnd(proxy.port, Buffer.concat([GREETING_NO_AUTH, p.socks5Connect(HOST, closed)]), Buffer.concat([METHOD_NO_AUTH, p.socks5Failure(0x05)]));
    expect(await proxy.recordOf(c.localPort)).toMatchObject({ protocol: 'socks5', command: 'connect', outcome: 'ECONNREFUSED', reply: 0x05, destination: `${HOST}:${closed}` });
  });

  it('DNS failure: REP 04', async () => {
    const c = await p.expectReplyThenEnd(proxy.port, Buffer.concat([GREETING_NO_AUTH, p.socks5Connect('nx.test', echo.port)]), Buffer.concat([METHOD_NO_AUTH, p.socks5Failure(0x04)]));
    expect(await proxy.recordOf(c.localPort)).toMatchObject({ outcome: 'ENOTFOUND', reply: 0x04, destination: `nx.test:${echo.port}` });
  });

  it('denied by a rule (IPv4 and by name): REP 02', async () => {
    for (const host of [HOST, 'localhost']) {
      const c = await p.expectReplyThenEnd(proxy.port, Buffer.concat([GREETING_NO_AUTH, p.socks5Connect(host, deniedEcho.port)]), Buffer.concat([METHOD_NO_AUTH, p.socks5Failure(0x02)]));
      expect(await proxy.recordOf(c.localPort)).toMatchObject({ outcome: 'denied', reply: 0x02 });
    }
    expect(deniedEcho.conns.items, 'nothing reached the denied server').toHaveLength(0);
  });

  it('unknown command 0x09: REP 07', async () => {
    const c = await p.expectReplyThenEnd(proxy.port, Buffer.concat([GREETING_NO_AUTH, p.socks5Connect(HOST, echo.port, 0x09)]), Buffer.concat([METHOD_NO_AUTH, p.socks5Failure(0x07)]));
    expect(await proxy.recordOf(c.localPort)).toMatchObject({ outcome: 'bad-request', reply: 0x07 });
  });

  it('unknown address type 0x02: REP 08', async () => {
    const request = Buffer.concat([Buffer.of(0x05, 0x01, 0x00, 0x02), p.ipv4(HOST), p.u16(echo.port)]);
    const c = await p.expectReplyThenEnd(proxy.port, Buffer.concat([GREETING_NO_AUTH, request]), Buffer.concat([METHOD_NO_AUTH, p.socks5Failure(0x08)]));
    expect(await proxy.recordOf(c.localPort)).toMatchObject({ outcome: 'bad-request', reply: 0x08 });
  });

  it('no acceptable method (only 0x80 offered, no auth configured): 05 FF', async () => {
    const c = await p.expectReplyThenEnd(proxy.port, Buffer.of(0x05, 0x01, 0x80), Buffer.of(0x05, 0xff));
    expect(await proxy.recordOf(c.localPort)).toMatchObject({ protocol: 'socks5', outcome: 'bad-request' });
  });

  it('no acceptable method when auth is required (0x80 only; 00 only): 05 FF', async () => {
    for (const offer of [Buffer.of(0x05, 0x01, 0x80), Buffer.of(0x05, 0x01, 0x00), Buffer.of(0x05, 0x02, 0x00, 0x80)]) {
      const c = await p.expectReplyThenEnd(authed.port, offer, Buffer.of(0x05, 0xff));
      expect(await authed.recordOf(c.localPort)).toMatchObject({ protocol: 'socks5', outcome: 'auth-failed' });
    }
  });

  it('bad password: 05 02, then 01 01, then close', async () => {
    const c = await p.expectReplyThenEnd(authed.port, Buffer.concat([Buffer.of(0x05, 0x01, 0x02), p.socks5Auth('alice', 'wrong')]), Buffer.of(0x05, 0x02, 0x01, 0x01));
    expect(await authed.recordOf(c.localPort)).toMatchObject({ outcome: 'auth-failed', user: 'alice' });
  });

  it('unknown user and empty password: 01 01', async () => {
    for (const [user, pass] of [['mallory', 's3cret'], ['alice', '']]) {
      await p.expectReplyThenEnd(authed.port, Buffer.concat([Buffer.of(0x05, 0x01, 0x02), p.socks5Auth(user, pass)]), Buffer.of(0x05, 0x02, 0x01, 0x01));
    }
  });

  it('the right password then a refused destination: 05 02, 01 00, then REP 05', async () => {
    const send = Buffer.concat([Buffer.of(0x05, 0x01, 0x02), p.socks5Auth('alice', 's3cret'), p.socks5Connect(HOST, closed)]);
    const c = await p.expectReplyThenEnd(authed.port, send, Buffer.concat([Buffer.of(0x05, 0x02, 0x01, 0x00), p.socks5Failure(0x05)]));
    expect(await authed.recordOf(c.localPort)).toMatchObject({ outcome: 'ECONNREFUSED', user: 'alice' });
  });

  it('a multi-address name: ::1 refused, 127.0.0.1 connects', async () => {
    const client = await p.rawConnect(proxy.port);
    client.socket.write(Buffer.concat([GREETING_NO_AUTH, p.socks5Connect('dual.test', echo.port)]));
    const reply = await client.waitBytes(12);
    expect(reply.subarray(0, 2).toString('hex')).toBe('0500');
    expect(reply.subarray(2, 10).toString('hex'), 'success, BND on 127.0.0.1').toBe('050000017f000001');
    client.socket.end('ping through dual.test');
    await h.within(client.finished, 10_000, 'the echo FIN');
    expect(client.received().subarray(12).toString()).toBe('ping through dual.test');
    expect(await proxy.recordOf(client.localPort)).toMatchObject({ outcome: 'eof', destination: `dual.test:${echo.port}` });
  });
});

describe('connect timeout', () => {
  // A listener whose accept queue is full drops SYNs (Linux): a connect to it hangs in SYN_SENT on
  // loopback. The listener lives in a child process that blocks its event loop so it never accepts.
  let child: ChildProcess | undefined;
  let stalledPort = 0;
  const fillers: net.Socket[] = [];

  beforeAll(async () => {
    const script = `
      const net = require('node:net'); const fs = require('node:fs');
      const server = net.createServer();
      server.listen({ host: '127.0.0.1', port: 0, backlog: 1 }, () => {
        fs.writeSync(1, server.address().port + '\\n');
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 120000);
        process.exit(0);
      });`;
    child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    stalledPort = await new Promise<number>((resolve, reject) => {
      child!.stdout!.once('data', (chunk: Buffer) => resolve(Number(chunk.toString().trim())));
      child!.once('exit', (code) => reject(new Error(`stalled listener exited with ${code}`)));
    });
    // Fill the accept queue (backlog 1 holds 2 on Linux); later SYNs are dropped.
    let connected = 0;
    for (let i = 0; i < 3; i++) {
      const s = net.connect({ host: HOST, port: stalledPort });
      s.on('error', () => {});
      s.once('connect', () => connected++);
      fillers.push(s);
    }
    if (!(await h.waitFor(() => connected >= 2, 10_000))) throw new Error(`only ${connected} connections into the stalled listener's queue (expected 2)`);
  });
  afterAll(() => {
    for (const s of fillers) s.destroy();
    child?.kill('SIGKILL');
  });

  it('SOCKS5: REP 06 after timeouts.connect', async () => {
    const proxy = await p.startProxy({ ...baseOptions(), timeouts: { handshake: 5_000, connect: 500 } });
    const started = Date.now();
    const c = await p.expectReplyThenEnd(proxy.port, Buffer.concat([GREETING_NO_AUTH, p.socks5Connect(HOST, stalledPort)]), Buffer.concat([METHOD_NO_AUTH, p.socks5Failure(0x06)]));
    expect(Date.now() - started).toBeGreaterThanOrEqual(450);
    expect(await proxy.recordOf(c.localPort)).toMatchObject({ outcome: 'ETIMEDOUT', reply: 0x06 });
  });

  it('HTTP CONNECT: 504', async () => {
    const proxy = await p.startProxy({ ...baseOptions(), timeouts: { handshake: 5_000, connect: 500 } });
    const client = await p.rawConnect(proxy.port);
    client.socket.write(p.httpConnect(HOST, stalledPort));
    await h.within(client.finished, 10_000, 'the 504 and close');
    expect(client.received().toString('latin1')).toMatch(/^HTTP\/1\.1 504 Gateway Timeout\r\n/);
    client.socket.end();
    expect(await proxy.recordOf(client.localPort)).toMatchObject({ protocol: 'http', outcome: 'ETIMEDOUT', reply: 504 });
  });
});

describe('SOCKS4 failure replies', () => {
  let proxy: p.RunningProxy;
  let authed: p.RunningProxy;
  beforeAll(async () => {
    proxy = await p.startProxy(baseOptions());
    authed = await p.startProxy({ ...baseOptions(), credentials: Credentials.fromEntries(['alice:s3cret']) });
  });
  const REJECTED = p.socks4Reply(0x5b);

  it('refused destination: 00 5B, 8 bytes, then close', async () => {
    const c = await p.expectReplyThenEnd(proxy.port, p.socks4Connect(HOST, closed), REJECTED);
    expect(await proxy.recordOf(c.localPort)).toMatchObject({ protocol: 'socks4', outcome: 'ECONNREFUSED', reply: 0x5b });
  });

  it('SOCKS4a DNS failure: 5B', async () => {
    const c = await p.expectReplyThenEnd(proxy.port, p.socks4Connect('nx.test', echo.port), REJECTED);
    expect(await proxy.recordOf(c.localPort)).toMatchObject({ protocol: 'socks4a', outcome: 'ENOTFOUND' });
  });

  it('denied by a rule: 5B', async () => {
    const c = await p.expectReplyThenEnd(proxy.port, p.socks4Connect(HOST, deniedEcho.port), REJECTED);
    expect(await proxy.recordOf(c.localPort)).toMatchObject({ outcome: 'denied', reply: 0x5b });
  });

  it('SOCKS4a-looking request with DSTIP 0.0.0.0: 5B', async () => {
    const request = Buffer.concat([Buffer.of(0x04, 0x01), p.u16(echo.port), Buffer.of(0, 0, 0, 0), Buffer.of(0), Buffer.from('localhost'), Buffer.of(0)]);
    const before = echo.conns.items.length;
    const c = await p.expectReplyThenEnd(proxy.port, request, REJECTED);
    expect(await proxy.recordOf(c.localPort)).toMatchObject({ outcome: 'bad-request' });
    expect(echo.conns.items.length, 'nothing dialled').toBe(before);
  });

  it('a USERID with no NUL past 255 bytes: 5B at once, without waiting for more', async () => {
    const request = Buffer.concat([Buffer.of(0x04, 0x01), p.u16(echo.port), p.ipv4(HOST), Buffer.alloc(256, 'a')]);
    const c = await p.expectReplyThenEnd(proxy.port, request, REJECTED);
    expect(await proxy.recordOf(c.localPort)).toMatchObject({ outcome: 'bad-request' });
  });

  it('an unknown command: 5B', async () => {
    const request = Buffer.concat([Buffer.of(0x04, 0x07), p.u16(echo.port), p.ipv4(HOST), Buffer.of(0)]);
    await p.expectReplyThenEnd(proxy.port, request, REJECTED);
  });

  it('SOCKS4 when auth is required (it has no passwords): 5B', async () => {
    const c = await p.expectReplyThenEnd(authed.port, p.socks4Connect(HOST, echo.port, 'alice'), REJECTED);
    expect(await authed.recordOf(c.localPort)).toMatchObject({ protocol: 'socks4', outcome: 'auth-failed', reply: 0x5b });
  });
});

describe('HTTP failure replies', () => {
  let proxy: p.RunningProxy;
  let authed: p.RunningProxy;
  beforeAll(async () => {
    proxy = await p.startProxy(baseOptions());
    authed = await p.startProxy({ ...baseOptions(), credentials: Credentials.fromEntries(['alice:s3cret']) });
  });

  /** Sends `request`, waits for the close, returns the status line and the response head. */
  const exchange = async (port: number, request: Buffer | string, opts: { expectClose?: boolean } = {}) => {
    const client = await p.rawConnect(port);
    client.socket.write(request);
    if (opts.expectClose === false) {
      // The connection stays open: the whole head is in once its blank line is.
      const headIn = () => client.received().includes('\r\n\r\n');
      if (!(await h.waitFor(headIn, 10_000))) throw new Error(`no complete response head: ${client.received().toString('latin1')}`);
    } else {
      await h.within(client.finished, 10_000, 'the response and close');
    }
    const text = client.received().toString('latin1');
    client.socket.destroy();
    return { client, text, status: Number(/^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1]), head: text.split('\r\n\r\n')[0] };
  };

  it('CONNECT to a closed port: 502 with Connection: close', async () => {
    const r = await exchange(proxy.port, p.httpConnect(HOST, closed));
    expect(r.status).toBe(502);
    expect(r.head).toMatch(/\r\nConnection: close/i);
    expect(await proxy.recordOf(r.client.localPort)).toMatchObject({ protocol: 'http', command: 'connect', outcome: 'ECONNREFUSED', reply: 502 });
  });

  it('CONNECT to an unresolvable name: 502', async () => {
    const r = await exchange(proxy.port, p.httpConnect('nx.test', echo.port));
    expect(r.status).toBe(502);
    expect(await proxy.recordOf(r.client.localPort)).toMatchObject({ outcome: 'ENOTFOUND', reply: 502 });
  });

  it('CONNECT denied by a rule: 403', async () => {
    const r = await exchange(proxy.port, p.httpConnect(HOST, deniedEcho.port));
    expect(r.status).toBe(403);
    expect(await proxy.recordOf(r.client.localPort)).toMatchObject({ outcome: 'denied', reply: 403 });
  });

  it('absolute-URI GET denied by a rule: 403', async () => {
    const r = await exchange(proxy.port, `GET http://${HOST}:${deniedEcho.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    expect(r.status).toBe(403);
    expect(await proxy.recordOf(r.client.localPort)).toMatchObject({ outcome: 'denied', reply: 403 });
  });

  it('CONNECT without, or with a wrong, Proxy-Authorization: 407 with Proxy-Authenticate', async () => {
    const wrong = `Proxy-Authorization: Basic ${Buffer.from('alice:wrong').toString('base64')}`;
    const garbled = 'Proxy-Authorization: Bearer abc';
    const before = echo.conns.items.length;
    for (const headers of [[], [wrong], [garbled]]) {
      const r = await exchange(authed.port, p.httpConnect(HOST, echo.port, headers));
      expect(r.status).toBe(407);
      expect(r.head).toMatch(/\r\nProxy-Authenticate: Basic realm="splicer"/);
      expect(await authed.recordOf(r.client.localPort)).toMatchObject({ outcome: 'auth-failed', reply: 407 });
    }
    expect(echo.conns.items.length, 'nothing dialled').toBe(before);
  });

  it('absolute-URI GET without Proxy-Authorization: 407 with Proxy-Authenticate', async () => {
    const r = await exchange(authed.port, `GET http://${HOST}:${echo.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`, { expectClose: false });
    expect(r.status).toBe(407);
    expect(r.head).toMatch(/\r\nProxy-Authenticate: Basic realm="splicer"/i);
  });

  for (const [name, request] of [
    ['a request line with four parts', 'CONNECT 127.0.0.1:80 HTTP/1.1 extra\r\n\r\n'],
    ['a bad version', 'CONNECT 127.0.0.1:80 HTTP/7\r\n\r\n'],
    ['a header without a colon', 'CONNECT 127.0.0.1:80 HTTP/1.1\r\nno colon here\r\n\r\n'],
    ['a CONNECT target with no port', 'CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n'],
  ] as const) {
    it(`malformed request (${name}): 400`, async () => {
      const r = await exchange(proxy.port, request);
      expect(r.status).toBe(400);
      expect(await proxy.recordOf(r.client.localPort)).toMatchObject({ protocol: 'http', outcome: 'bad-request' });
    });
  }
});

describe('odd input, silence, limits', () => {
  let proxy: p.RunningProxy;
  beforeAll(async () => {
    proxy = await p.startProxy(baseOptions());
  });

  /** Sends `bytes` (optionally), expects no reply at all and the server to close within a few seconds. */
  const expectSilentClose = async (bytes: Buffer | undefined) => {
    const client = await p.rawConnect(proxy.port);
    const started = Date.now();
    if (bytes) client.socket.write(bytes);
    await h.within(client.finished, 5_000, 'the server to close');
    expect(client.received().toString('hex'), 'no reply').toBe('');
    client.socket.destroy();
    return { client, elapsed: Date.now() - started, record: await proxy.recordOf(client.localPort) };
  };

  it('a TLS ClientHello: closed, no reply', async () => {
    const hello = Buffer.concat([Buffer.from('160301006e0100006a0303', 'hex'), h.patternBytes(5, 100)]);
    const { record } = await expectSilentClose(hello);
    expect(record).toMatchObject({ protocol: 'unknown', outcome: 'bad-request' });
  });

  it('random garbage: closed, no reply', async () => {
    const { record } = await expectSilentClose(Buffer.concat([Buffer.of(0x00, 0xff, 0x13), h.patternBytes(6, 500)]));
    expect(record).toMatchObject({ protocol: 'unknown', outcome: 'bad-request' });
  });

  it('silence: closed at the handshake timeout (300 ms)', async () => {
    const { elapsed, record } = await expectSilentClose(undefined);
    expect(elapsed).toBeGreaterThanOrEqual(250);
    expect(record).toMatchObject({ outcome: 'handshake-timeout' });
  });

  for (const [name, bytes] of [
    ['a SOCKS5 greeting cut short', Buffer.of(0x05, 0x02, 0x00)],
    ['a SOCKS5 request cut short', Buffer.concat([GREETING_NO_AUTH, Buffer.of(0x05, 0x01, 0x00, 0x03, 0x09), Buffer.from('loca')])],
    ['a SOCKS4 USERID with no NUL yet', Buffer.concat([Buffer.of(0x04, 0x01, 0x00, 0x50), p.ipv4(HOST), Buffer.from('user')])],
    ['an HTTP request line cut short', Buffer.from('CONNECT 127.0.0.1:80 HTT')],
    ['an HTTP head with no blank line', Buffer.from('CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\n')],
  ] as const) {
    it(`${name}, then silence: closed at the handshake timeout`, async () => {
      const client = await p.rawConnect(proxy.port);
      const started = Date.now();
      client.socket.write(bytes);
      await h.within(client.finished, 5_000, 'the server to close at the handshake timeout');
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
      client.socket.destroy();
      expect(await proxy.recordOf(client.localPort)).toMatchObject({ outcome: 'handshake-timeout' });
    });
  }

  it('limits.perClient 2: the third concurrent connection is closed at once; later ones are served', async () => {
    const limited = await p.startProxy({ ...baseOptions(), timeouts: { handshake: 30_000 }, limits: { perClient: 2 } });
    const first = await p.rawConnect(limited.port);
    const second = await p.rawConnect(limited.port);
    first.socket.write(Buffer.of(0x05)); // mid-handshake, held open
    second.socket.write(Buffer.of(0x05));
    expect(await h.waitFor(() => limited.server.activeConnections === 2, 5_000)).toBe(true);
    const third = await p.rawConnect(limited.port);
    await h.within(third.finished, 5_000, 'the third connection to be closed');
    expect(third.received().length).toBe(0);
    expect(await limited.recordOf(third.localPort)).toMatchObject({ outcome: 'limit', protocol: 'unknown' });
    expect(limited.server.activeConnections).toBe(2);
    // The first two are untouched: one finishes its handshake and works.
    first.socket.write(Buffer.concat([Buffer.of(0x01, 0x00), p.socks5Connect(HOST, echo.port)]));
    expect((await first.waitBytes(12)).subarray(0, 4).toString('hex')).toBe('05000500');
    first.socket.end('still here');
    await h.within(first.finished, 10_000, 'echo FIN');
    expect(first.received().subarray(12).toString()).toBe('still here');
    second.socket.destroy();
    expect(await h.waitFor(() => limited.server.activeConnections === 0, 5_000)).toBe(true);
    // Slots freed: a new connection is served.
    const fourth = await p.expectReplyThenEnd(limited.port, Buffer.concat([GREETING_NO_AUTH, p.socks5Connect(HOST, closed)]), Buffer.concat([METHOD_NO_AUTH, p.socks5Failure(0x05)]));
    expect(await limited.recordOf(fourth.localPort)).toMatchObject({ outcome: 'ECONNREFUSED' });
  });

  it('limits.connections 1: a second connection is closed at once', async () => {
    const limited = await p.startProxy({ ...baseOptions(), timeouts: { handshake: 30_000 }, limits: { connections: 1 } });
    const first = await p.rawConnect(limited.port);
    first.socket.write(Buffer.of(0x05));
    expect(await h.waitFor(() => limited.server.activeConnections === 1, 5_000)).toBe(true);
    const second = await p.rawConnect(limited.port);
    await h.within(second.finished, 5_000, 'the second connection to be closed');
    expect(await limited.recordOf(second.localPort)).toMatchObject({ outcome: 'limit' });
    first.socket.destroy();
  });
});

describe('exposure check (openProxyRisk, constructor)', () => {
  const anywhere = [{ host: '0.0.0.0', port: 1080 }];

  it('0.0.0.0 with no auth and no allow rule throws ExposureError naming --open', () => {
    let thrown: unknown;
    try {
      createProxyServer({ listen: anywhere });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(ExposureError);
    expect((thrown as ExposureError).code).toBe('ERR_OPEN_PROXY');
    expect((thrown as ExposureError).message).toMatch(/--open/);
    expect((thrown as ExposureError).message).toMatch(/0\.0\.0\.0:1080/);
    expect(openProxyRisk({ listen: [{ host: '::', port: 1080 }] })).toMatch(/--open/);
    // A deny rule or an allow for every client does not make it safe.
    expect(() => createProxyServer({ listen: anywhere, rules: [parseRule('allow', 'from=0.0.0.0/0')] })).toThrow(ExposureError);
    expect(() => createProxyServer({ listen: anywhere, rules: [parseRule('deny', 'port=25')] })).toThrow(ExposureError);
  });

  it('does not throw with open: true, credentials, a client allow rule, or loopback only (nothing is listened on)', () => {
    expect(openProxyRisk({ listen: anywhere, open: true })).toBeNull();
    expect(() => createProxyServer({ listen: anywhere, open: true })).not.toThrow();
    expect(() => createProxyServer({ listen: anywhere, credentials: Credentials.fromEntries(['alice:s3cret']) })).not.toThrow();
    expect(() => createProxyServer({ listen: anywhere, rules: [parseRule('allow', 'from=10.0.0.0/8')] })).not.toThrow();
    expect(openProxyRisk({ listen: [{ host: '127.0.0.1', port: 1080 }, { host: '::1', port: 1080 }] })).toBeNull();
    expect(() => createProxyServer({ listen: [] })).toThrow(TypeError);
  });
});

describe('fuzz: random bytes on live connections', () => {
  it('every connection ends (reply and close, or the 300 ms handshake timeout); the server lives on', async () => {
    // Deny everything and resolve nothing: a random request that happens to parse must go nowhere.
    const proxy = await p.startProxy({
      ...baseOptions(),
      rules: [parseRule('deny', '*')],
      lookup: async (name) => {
        throw Object.assign(new Error(`no lookups in the fuzz (${name})`), { code: 'ENOTFOUND' });
      },
      timeouts: { handshake: 300, connect: 500 },
    });
    const head = fc.oneof(fc.constant(Buffer.alloc(0)), fc.constant(Buffer.of(0x04)), fc.constant(Buffer.of(0x05)), fc.constant(Buffer.from('C')));
    const body = fc.uint8Array({ minLength: 0, maxLength: 300 }).map((a) => Buffer.from(a));
    const splits = fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 8 });
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(head, body, splits, fc.boolean(), async (first, rest, sizes, fin) => {
        runs++;
        const bytes = Buffer.concat([first, rest]);
        const client = await p.rawConnect(proxy.port);
        let pos = 0;
        for (let i = 0; pos < bytes.length && !client.socket.destroyed; i++) {
          const n = sizes[i % sizes.length];
          client.socket.write(bytes.subarray(pos, pos + n));
          pos += n;
          await h.sleep(i % 3);
        }
        if (fin && !client.socket.destroyed) client.socket.end();
        // Closed by the server: at once for a bad message or a FIN mid-handshake, else at the handshake
        // timeout (300 ms), plus the 2 s the server gives a client to read a final reply.
        await h.within(client.finished, 30_000, `the server to close the connection after ${bytes.toString('hex')} (fin ${fin})`);
        client.socket.destroy();
        const record = await proxy.recordOf(client.localPort, 5_000);
        expect(record.outcome).not.toBe('internal-error');
        expect(['eof', 'open']).not.toContain(record.outcome);
      }),
      { numRuns: 200, endOnFailure: true },
    );
    expect(runs).toBe(200);
    // Still serving: a well-formed request gets its (denied) reply.
    await p.expectReplyThenEnd(proxy.port, Buffer.concat([GREETING_NO_AUTH, p.socks5Connect(HOST, echo.port)]), Buffer.concat([METHOD_NO_AUTH, p.socks5Failure(0x02)]));
    expect(proxy.records.items.filter((r) => r.outcome === 'internal-error')).toEqual([]);
    await h.waitFor(() => proxy.server.activeConnections === 0, 5_000);
    expect(proxy.server.activeConnections).toBe(0);
  }, 600_000);
});

describe('teardown', () => {
  it('leaves no fds open', async () => {
    await p.closeProxies();
    await h.closeAll();
    await spliceEngine?.close();
    const settled = await h.waitFor(() => h.openFdCount() <= fdBaseline, 10_000);
    const now = h.openFdCount();
    expect(settled, `fds: baseline ${fdBaseline}, now ${now}; new: ${JSON.stringify(h.fdDiff(fdTable, h.fdTable()))}`).toBe(true);
  });
});
