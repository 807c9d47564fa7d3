// The proxy's mux listeners (ProxyOptions.muxListen): every stream of a yamux session served as a
// connection is, SOCKS and HTTP by the first byte, bytes hashed end to end through a real
// destination on 127.0.0.1; auth, rules and the per-client limit applied with the session's peer
// as the client; BIND and UDP ASSOCIATE refused; TLS; GoAway on close; listen changes on reconfigure.
import fs from 'node:fs';
import http from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Credentials } from '../src/proxy/auth.js';
import { parseRule } from '../src/proxy/rules.js';
import { createProxyServer, ExposureError } from '../src/proxy/server.js';
import * as h from './helpers.js';
import { HOST, KiB } from './helpers.js';
import { closedPort, closeProxies, rawConnect, startOrigin, startProxy } from './proxy-helpers.js';
import { hashStream, writePattern } from './mux-helpers.js';
import { muxClient, socks5Stream, startMuxProxy, StreamBytes, streamClosed } from './proxy-mux-helpers.js';
import * as t from './tunnel-helpers.js';

afterEach(async () => {
  await closeProxies();
  await h.closeAll();
});

const SOCKS5_NO_AUTH = Buffer.from([5, 1, 0]);
const socks5Request = (cmd: number, port: number) => Buffer.from([5, cmd, 0, 1, 127, 0, 0, 1, port >> 8, port & 0xff]);
const connectHead = (port: number, extra = '') => `CONNECT ${HOST}:${port} HTTP/1.1\r\nHost: ${HOST}:${port}\r\n${extra}\r\n`;

describe('proxy --listen mux://', () => {
  it('serves SOCKS5 and HTTP CONNECT on streams of one session, every byte hashed both ways, on the JS engine', async () => {
    const echo = await h.startEchoServer();
    const { muxPort, records } = await startMuxProxy();
    const client = await muxClient(muxPort);
    const viaSocks = Array.from({ length: 6 }, async (_, i) => {
      const stream = await socks5Stream(client, echo.port);
      const received = hashStream(stream);
      const sent = await writePattern(stream, 100 + i, 256 * KiB + i * 999);
      expect(await received).toEqual(sent);
    });
    const viaConnect = Array.from({ length: 4 }, async (_, i) => {
      const stream = client.session.openStream();
      const bytes = new StreamBytes(stream);
      stream.write(connectHead(echo.port));
      expect((await bytes.readThrough('\r\n\r\n')).toString('latin1')).toMatch(/^HTTP\/1\.1 200 /);
      stream.removeAllListeners('data');
      const received = hashStream(stream);
      const sent = await writePattern(stream, 200 + i, 128 * KiB + i);
      expect(await received).toEqual(sent);
    });
    await h.within(Promise.all([...viaSocks, ...viaConnect]), 60_000, 'ten streams through the proxy');
    expect(echo.conns.items).toHaveLength(10);
    await records.nth(9);
    for (const record of records.items) {
      // The client of every stream is the peer of the connection that carries the session.
      expect(record.client).toBe(client.peer);
      expect(record.muxStream! % 2).toBe(1);
      expect(record).toMatchObject({ engine: 'js', outcome: 'eof', command: 'connect', destination: `${HOST}:${echo.port}` });
    }
    expect(records.items.filter((r) => r.protocol === 'socks5')).toHaveLength(6);
    expect(records.items.filter((r) => r.protocol === 'http')).toHaveLength(4);
  });

  it('proxies a plain HTTP request (absolute URI) on a stream, the body intact', async () => {
    const origin = await startOrigin(300 * KiB);
    const { muxPort, records } = await startMuxProxy();
    const client = await muxClient(muxPort);
    const body = await h.within(
      new Promise<Buffer>((resolve, reject) => {
        const req = http.request({
          createConnection: () => client.session.openStream() as never,
          method: 'GET',
          path: `http://${HOST}:${origin.port}/file`,
          headers: { Host: `${HOST}:${origin.port}` },
        });
        req.on('response', (res) => {
          expect(res.statusCode).toBe(200);
          const parts: Buffer[] = [];
          res.on('data', (chunk: Buffer) => parts.push(chunk));
          res.on('end', () => resolve(Buffer.concat(parts)));
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end();
      }),
      20_000,
      'the response through the proxy',
    );
    expect(h.sha256(body)).toBe(origin.sha);
    const record = await records.nth(0);
    expect(record).toMatchObject({ client: client.peer, protocol: 'http', reply: 200, bytesDown: 300 * KiB });
    await origin.close();
  });

  it('asks for the users: SOCKS5 with a wrong password gets 01 01, CONNECT without credentials 407, the right ones pass', async () => {
    const echo = await h.startEchoServer();
    const { muxPort, records } = await startMuxProxy({ credentials: Credentials.fromEntries(['alice:s3cret']) });
    const client = await muxClient(muxPort);

    const wrong = client.session.openStream();
    const wrongBytes = new StreamBytes(wrong);
    wrong.write(Buffer.from([5, 1, 2]));
    expect(await wrongBytes.read(2)).toEqual(Buffer.from([5, 2]));
    wrong.write(Buffer.concat([Buffer.from([1, 5]), Buffer.from('alice'), Buffer.from([5]), Buffer.from('wrong')]));
    expect(await wrongBytes.read(2)).toEqual(Buffer.from([1, 1]));
    wrong.end();
    await wrongBytes.rest();

    const noAuth = client.session.openStream();
    const noAuthBytes = new StreamBytes(noAuth);
    noAuth.write(connectHead(echo.port));
    const refused = (await noAuthBytes.readThrough('\r\n\r\n')).toString('latin1');
    expect(refused).toMatch(/^HTTP\/1\.1 407 /);
    expect(refused).toMatch(/Proxy-Authenticate: Basic/i);
    noAuth.end();

    const right = await socks5Stream(client, echo.port, { user: 'alice', pass: 's3cret' });
    const received = hashStream(right);
    const sent = await writePattern(right, 7, 64 * KiB);
    expect(await received).toEqual(sent);

    await records.nth(2);
    expect(records.items.find((r) => r.protocol === 'socks5' && r.outcome === 'auth-failed')).toMatchObject({ client: client.peer, user: 'alice' });
    expect(records.items.find((r) => r.protocol === 'http')).toMatchObject({ client: client.peer, outcome: 'auth-failed', reply: 407 });
    expect(records.items.find((r) => r.outcome === 'eof')).toMatchObject({ client: client.peer, user: 'alice', reply: 0 });
  });

  it('applies the rules to the session peer: a from= deny refuses with SOCKS5 02 and HTTP 403', async () => {
    const echo = await h.startEchoServer();
    const { muxPort, records } = await startMuxProxy({ rules: [parseRule('deny', `from=127.0.0.1/32 port=${echo.port}`)] });
    const client = await muxClient(muxPort);
    const socks = client.session.openStream();
    const socksBytes = new StreamBytes(socks);
    socks.write(Buffer.concat([SOCKS5_NO_AUTH, socks5Request(1, echo.port)]));
    expect(await socksBytes.read(2)).toEqual(Buffer.from([5, 0]));
    expect((await socksBytes.read(10))[1]).toBe(0x02);
    socks.end();
    const connect = client.session.openStream();
    const connectBytes = new StreamBytes(connect);
    connect.write(connectHead(echo.port));
    expect((await connectBytes.readThrough('\r\n\r\n')).toString('latin1')).toMatch(/^HTTP\/1\.1 403 /);
    connect.end();
    await records.nth(1);
    expect(records.items.map((r) => [r.client, r.outcome])).toEqual([
      [client.peer, 'denied'],
      [client.peer, 'denied'],
    ]);
    expect(echo.conns.items).toHaveLength(0);
  });

  it('refuses BIND and UDP ASSOCIATE on a stream: SOCKS5 07, SOCKS4 5B', async () => {
    const { muxPort, records } = await startMuxProxy();
    const client = await muxClient(muxPort);
    for (const cmd of [2, 3]) {
      const stream = client.session.openStream();
      const bytes = new StreamBytes(stream);
      stream.write(Buffer.concat([SOCKS5_NO_AUTH, socks5Request(cmd, 1)]));
      expect(await bytes.read(2)).toEqual(Buffer.from([5, 0]));
      const reply = await bytes.read(10);
      expect(reply[1]).toBe(0x07);
      await bytes.rest();
    }
    const socks4 = client.session.openStream();
    const socks4Bytes = new StreamBytes(socks4);
    socks4.write(Buffer.from([4, 2, 0, 21, 127, 0, 0, 1, 0]));
    expect((await socks4Bytes.read(8))[1]).toBe(0x5b);
    await records.nth(2);
    expect(records.items.map((r) => [r.command, r.outcome])).toEqual([
      ['bind', 'unsupported'],
      ['udp', 'unsupported'],
      ['bind', 'unsupported'],
    ]);
  });

  it("counts a stream against the per-client limit by the session's peer, with plain connections from the same IP", async () => {
    const proxy = await startProxy({ muxListen: [{ host: HOST, port: 0, tls: false }], limits: { perClient: 2 } });
    const muxPort = proxy.server.muxAddresses()[0].port;
    const client = await muxClient(muxPort);
    // Two streams in their handshake hold the client's two places.
    const first = client.session.openStream();
    const second = client.session.openStream();
    first.write(Buffer.from([5]));
    second.write(Buffer.from([5]));
    await h.waitFor(() => proxy.server.activeConnections === 2, 10_000);
    const third = client.session.openStream();
    third.write(Buffer.from([5]));
    expect(await h.within(streamClosed(third), 10_000, 'the third stream closed')).toEqual({ reset: true });
    const limited = await proxy.records.find((r) => r.outcome === 'limit', 'the limit record');
    expect(limited).toMatchObject({ client: client.peer, muxStream: 5 });
    // A plain connection from 127.0.0.1 is the same client.
    const plain = await rawConnect(proxy.port);
    expect(await h.within(plain.finished, 10_000, 'the plain connection closed')).toBeTruthy();
    expect(proxy.records.items.filter((r) => r.outcome === 'limit')).toHaveLength(2);
    // One place freed: the next stream is served.
    first.destroy();
    await h.waitFor(() => proxy.server.activeConnections === 1, 10_000);
    const echo = await h.startEchoServer();
    const fourth = await socks5Stream(client, echo.port);
    const received = hashStream(fourth);
    const sent = await writePattern(fourth, 9, 32 * KiB);
    expect(await received).toEqual(sent);
  });
});

describe('proxy --listen mux:// and the server', () => {
  it('bounds the connections that carry sessions by the same limits: one past --max-per-client is closed, the one within serves', async () => {
    const echo = await h.startEchoServer();
    const { server, muxPort } = await startMuxProxy({ limits: { perClient: 1 } });
    const first = await muxClient(muxPort);
    // Connected, then closed by the proxy without a frame: a second session from the same IP.
    const second = await muxClient(muxPort);
    await h.within(new Promise((resolve) => second.session.once('close', resolve)), 10_000, 'the second session closed');
    expect(server.muxSessions).toBe(1);
    const stream = await socks5Stream(first, echo.port);
    const received = hashStream(stream);
    const sent = await writePattern(stream, 3, 64 * KiB);
    expect(await received).toEqual(sent);
    // Its place is free again once the first connection has gone.
    first.session.destroy();
    expect(await h.waitFor(() => server.muxSessions === 0, 10_000)).toBe(true);
    const third = await muxClient(muxPort);
    const again = await socks5Stream(third, echo.port);
    const back = hashStream(again);
    const more = await writePattern(again, 4, 16 * KiB);
    expect(await back).toEqual(more);
  });

  it('sends GoAway on close: a stream mid-transfer finishes within the grace, the session opens no more', async () => {
    const echo = await h.startEchoServer();
    const { server, muxPort, records } = await startMuxProxy();
    const client = await muxClient(muxPort);
    const stream = await socks5Stream(client, echo.port);
    const received = hashStream(stream);
    const goAway = new Promise<number>((resolve) => client.session.once('goaway', resolve));
    const first = await writePattern(stream, 11, 128 * KiB, { end: false });
    const closing = server.close(10_000);
    expect(await h.within(goAway, 5_000, 'GoAway')).toBe(0);
    expect(() => client.session.openStream()).toThrow(/GoAway/);
    // The stream goes on: the rest of its bytes, then its end.
    const rest = await writePattern(stream, 12, 128 * KiB);
    const got = await h.within(received, 10_000, 'the echo after GoAway');
    expect(got.bytes).toBe(first.bytes + rest.bytes);
    await h.within(closing, 10_000, 'close()');
    expect(await records.nth(0)).toMatchObject({ outcome: 'eof', bytesUp: first.bytes + rest.bytes });
    // The connection that carried the session is closed.
    await h.within(new Promise((resolve) => (client.socket.destroyed ? resolve(0) : client.socket.once('close', resolve))), 10_000, 'the session closed');
  });

  it.runIf(process.platform === 'linux')('leaves no fd open: streams served, reset mid-transfer and refused, then the server closed', async () => {
    const echo = await h.startEchoServer();
    const before = h.fdTable();
    const { server, muxPort } = await startMuxProxy();
    const client = await muxClient(muxPort);
    await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const stream = await socks5Stream(client, echo.port);
        const received = hashStream(stream);
        const sent = await writePattern(stream, 500 + i, 32 * KiB);
        expect(await received).toEqual(sent);
      }),
    );
    const cut = await socks5Stream(client, echo.port);
    cut.on('error', () => {});
    await writePattern(cut, 9, 16 * KiB, { end: false });
    cut.destroy();
    const denied = client.session.openStream();
    denied.on('error', () => {});
    denied.end(Buffer.from([4, 2, 0, 21, 127, 0, 0, 1, 0]));
    await h.waitFor(() => server.activeConnections === 0, 10_000);
    client.session.destroy();
    await server.close(0);
    for (const socket of echo.conns.items) socket.destroy();
    const settled = await h.waitFor(() => Object.keys(h.fdDiff(before, h.fdTable())).length === 0, 5_000);
    expect(settled ? {} : h.fdDiff(before, h.fdTable())).toEqual({});
  });

  it('binds added mux addresses and stops accepting on removed ones at reconfigure; new users apply to new streams', async () => {
    const echo = await h.startEchoServer();
    const { server, muxPort } = await startMuxProxy();
    const before = await muxClient(muxPort);
    const nextPort = await closedPort();
    await server.reconfigure({ listen: [], muxListen: [{ host: HOST, port: nextPort, tls: false }], credentials: Credentials.fromEntries(['bob:builder']) });
    expect(server.muxAddresses()).toEqual([{ host: HOST, port: nextPort, tls: false }]);
    // The removed address accepts no more; the session opened on it goes on, under the new users.
    await expect(muxClient(muxPort)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    const stream = before.session.openStream();
    const bytes = new StreamBytes(stream);
    stream.write(Buffer.from([5, 1, 0]));
    expect(await bytes.read(2)).toEqual(Buffer.from([5, 0xff]));
    const after = await muxClient(nextPort);
    const served = await socks5Stream(after, echo.port, { user: 'bob', pass: 'builder' });
    const received = hashStream(served);
    const sent = await writePattern(served, 5, 64 * KiB);
    expect(await received).toEqual(sent);
  });

  it('refuses an exposed mux listener with no auth and no allow rule, and options that cannot work', () => {
    const exposed = { listen: [], muxListen: [{ host: '0.0.0.0', port: 0, tls: false }] };
    expect(() => createProxyServer(exposed)).toThrow(ExposureError);
    expect(() => createProxyServer(exposed)).toThrow(/mux:\/\/0\.0\.0\.0:0/);
    expect(() => createProxyServer({ ...exposed, credentials: Credentials.fromEntries(['a:b']) })).not.toThrow();
    expect(() => createProxyServer({ ...exposed, rules: [parseRule('allow', 'from=10.0.0.0/8')] })).not.toThrow();
    expect(() => createProxyServer({ ...exposed, open: true })).not.toThrow();
    expect(() => createProxyServer({ listen: [], muxListen: [{ host: HOST, port: 0, tls: true }] })).toThrow(/tls/);
    expect(() => createProxyServer({ listen: [], muxListen: [{ host: HOST, port: 0, tls: false }], acceptProxyProtocol: true })).toThrow(/acceptProxyProtocol/);
    expect(() => createProxyServer({ listen: [], muxListen: [] })).toThrow(/at least one listen address/);
  });
});

describe.runIf(t.hasOpenssl)('proxy --listen mux+tls://', () => {
  let cert: t.TestCert;
  beforeAll(() => {
    cert = t.makeCert();
  });
  afterAll(() => fs.rmSync(cert.dir, { recursive: true, force: true }));

  it('serves SOCKS5 streams of a session over TLS (a self-signed certificate, trusted), hashed both ways', async () => {
    const echo = await h.startEchoServer();
    const { muxPort, records } = await startMuxProxy({ muxListen: [{ host: HOST, port: 0, tls: true }], tls: { cert: cert.cert, key: cert.key } });
    const client = await muxClient(muxPort, { ca: cert.cert });
    await h.within(
      Promise.all(
        Array.from({ length: 4 }, async (_, i) => {
          const stream = await socks5Stream(client, echo.port);
          const received = hashStream(stream);
          const sent = await writePattern(stream, 300 + i, 200 * KiB);
          expect(await received).toEqual(sent);
        }),
      ),
      30_000,
      'streams over TLS',
    );
    await records.nth(3);
    expect(new Set(records.items.map((r) => `${r.client} ${r.engine} ${r.outcome}`))).toEqual(new Set([`${client.peer} js eof`]));
  });

  it('drops a client that does not speak TLS, having served it nothing', async () => {
    const { muxPort, records } = await startMuxProxy({ muxListen: [{ host: HOST, port: 0, tls: true }], tls: { cert: cert.cert, key: cert.key } });
    const client = await muxClient(muxPort);
    const stream = client.session.openStream();
    stream.on('error', () => {});
    stream.write(SOCKS5_NO_AUTH);
    const closed = new Promise((resolve) => client.session.once('close', resolve));
    await h.within(closed, 10_000, 'the session closed');
    expect(records.items).toHaveLength(0);
  });
});
