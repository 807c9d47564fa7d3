// The proxy server against real clients: curl, the npm `socks` client, ncat, and raw clients that
// send optimistic data or feed the handshake byte by byte. Every transfer is checked by SHA-256,
// every connection by its record. Loopback only.
import net from 'node:net';
import { SocksClient } from 'socks';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Credentials } from '../src/proxy/auth.js';
import type { ProxyConnectionRecord } from '../src/proxy/options.js';
import { SpliceEngine } from '../src/engine/splice/engine.js';
import * as h from './helpers.js';
import * as p from './proxy-helpers.js';
import { needsTool, testEngines } from './policy.js';

const { HOST, MiB, KiB } = h;


let fdBaseline = 0;
let fdTable = new Map<string, string>();
beforeAll(() => {
  fdBaseline = h.openFdCount();
  fdTable = h.fdTable();
});

// The splice engine behind both accept paths: the addon's (no net.Socket for a CONNECT) and net.Server's.
const VARIANTS = testEngines.flatMap((engine): { engine: 'splice' | 'js'; accept: 'native' | 'node' }[] =>
  engine === 'splice' ? [{ engine, accept: 'native' }, { engine, accept: 'node' }] : [{ engine, accept: 'node' }],
);

describe.each(VARIANTS)('proxy with the $engine engine, $accept accept path, and real clients', ({ engine, accept }) => {
  let origin: p.Origin;
  let echo: h.TestServer;
  let spliceEngine: SpliceEngine | undefined;

  beforeAll(async () => {
    origin = await p.startOrigin(4 * MiB);
    echo = await h.startEchoServer();
    if (engine === 'splice') spliceEngine = new SpliceEngine();
  });
  afterEach(async () => {
    await p.closeProxies();
  });
  afterAll(async () => {
    await p.closeProxies();
    await origin?.close();
    await h.closeAll();
    await spliceEngine?.close();
  });

  const start = async (extra: Parameters<typeof p.startProxy>[0] = {}) => {
    const proxy = await p.startProxy({ engine, spliceEngine, accept, ...extra });
    expect(proxy.server.acceptPath, 'the accept path asked for').toBe(accept);
    return proxy;
  };
  const withAuth = () => start({ credentials: Credentials.fromEntries(['alice:s3cret']) });

  /** The only record of this proxy (one client connection per test). */
  const onlyRecord = async (proxy: p.RunningProxy): Promise<ProxyConnectionRecord> => {
    const record = await proxy.records.nth(0, 'the connection record');
    await h.sleep(50);
    expect(proxy.records.items, 'one connection, one record').toHaveLength(1);
    return record;
  };

  describe('curl', () => {
    const runCurl = (args: string[]) =>
      p.runTool('curl', ['-sS', '--noproxy', '', '--max-time', '60', ...args], { timeoutMs: 90_000 });

    type Case = { name: string; args: (port: number) => string[]; host: string; protocol: string; engine?: 'js' };
    const cases: Case[] = [
      { name: '--socks4', args: (port) => ['--socks4', `${HOST}:${port}`], host: HOST, protocol: 'socks4' },
      { name: '--socks4a (proxy resolves localhost)', args: (port) => ['--socks4a', `${HOST}:${port}`], host: 'localhost', protocol: 'socks4a' },
      { name: '--socks5', args: (port) => ['--socks5', `${HOST}:${port}`], host: HOST, protocol: 'socks5' },
      { name: '--socks5-hostname (proxy resolves localhost)', args: (port) => ['--socks5-hostname', `${HOST}:${port}`], host: 'localhost', protocol: 'socks5' },
      // Plain forwarding goes through node:http on both sides: the js engine by design.
      { name: '--proxy http:// (absolute-URI forward)', args: (port) => ['--proxy', `http://${HOST}:${port}`], host: HOST, protocol: 'http', engine: 'js' },
      { name: '-p --proxy http:// (CONNECT)', args: (port) => ['-p', '--proxy', `http://${HOST}:${port}`], host: HOST, protocol: 'http' },
    ];

    for (const c of cases) {
      it(`${c.name}: 4 MiB body, SHA-256 identical`, async (ctx) => {
        needsTool(ctx, 'curl');
        const proxy = await start();
        const res = await runCurl([...c.args(proxy.port), '-o', '-', `http://${c.host}:${origin.port}/body`]);
        expect(res.code, res.stderr).toBe(0);
        expect(res.stdout.length).toBe(origin.body.length);
        expect(h.sha256(res.stdout)).toBe(origin.sha);
        const record = await onlyRecord(proxy);
        expect(record).toMatchObject({
          protocol: c.protocol,
          command: 'connect',
          outcome: 'eof',
          engine: c.engine ?? engine,
          destination: `${c.host}:${origin.port}`,
        });
        expect(record.bytesDown).toBeGreaterThanOrEqual(origin.body.length);
        expect(record.user).toBeUndefined();
      });
    }

    describe('with credentials alice:s3cret', () => {
      const okCases: Array<{ name: string; args: (port: number) => string[]; protocol: string; engine?: 'js' }> = [
        { name: '--socks5 with --proxy-user', args: (port) => ['--socks5', `${HOST}:${port}`, '--proxy-user', 'alice:s3cret'], protocol: 'socks5' },
        { name: 'socks5h://alice:s3cret@', args: (port) => ['--proxy', `socks5h://alice:s3cret@${HOST}:${port}`], protocol: 'socks5' },
        { name: 'HTTP forward with --proxy-user', args: (port) => ['--proxy', `http://${HOST}:${port}`, '--proxy-user', 'alice:s3cret'], protocol: 'http', engine: 'js' },
        { name: 'HTTP CONNECT with --proxy-user', args: (port) => ['-p', '--proxy', `http://${HOST}:${port}`, '--proxy-user', 'alice:s3cret'], protocol: 'http' },
      ];
      for (const c of okCases) {
        it(`${c.name}: authenticated, body intact`, async (ctx) => {
          needsTool(ctx, 'curl');
          const proxy = await withAuth();
          const res = await runCurl([...c.args(proxy.port), '-o', '-', `http://${HOST}:${origin.port}/`]);
          expect(res.code, res.stderr).toBe(0);
          expect(h.sha256(res.stdout)).toBe(origin.sha);
          const record = await onlyRecord(proxy);
          expect(record).toMatchObject({ protocol: c.protocol, command: 'connect', outcome: 'eof', user: 'alice', engine: c.engine ?? engine });
        });
      }

      it('SOCKS5 with a wrong password: curl fails, record auth-failed', async (ctx) => {
        needsTool(ctx, 'curl');
        const proxy = await withAuth();
        const res = await runCurl(['--socks5', `${HOST}:${proxy.port}`, '--proxy-user', 'alice:wrong', '-o', '-', `http://${HOST}:${origin.port}/`]);
        // curl >= 7.73 exits 97 (CURLE_PROXY) on a SOCKS5 authentication failure; older ones 7.
        expect(res.code, res.stderr).not.toBe(0);
        expect(res.stdout.length).toBe(0);
        expect(await onlyRecord(proxy)).toMatchObject({ protocol: 'socks5', outcome: 'auth-failed', user: 'alice' });
      });

      it('SOCKS5 with no credentials: curl fails (no acceptable method), record auth-failed', async (ctx) => {
        needsTool(ctx, 'curl');
        const proxy = await withAuth();
        const res = await runCurl(['--socks5', `${HOST}:${proxy.port}`, '-o', '-', `http://${HOST}:${origin.port}/`]);
        expect(res.code, res.stderr).not.toBe(0);
        expect(await onlyRecord(proxy)).toMatchObject({ protocol: 'socks5', outcome: 'auth-failed' });
      });

      it('HTTP forward with a wrong password: 407, record auth-failed', async (ctx) => {
        needsTool(ctx, 'curl');
        const proxy = await withAuth();
        const res = await runCurl(['--proxy', `http://${HOST}:${proxy.port}`, '--proxy-user', 'alice:wrong', '-o', '/dev/null', '-w', '%{http_code}', `http://${HOST}:${origin.port}/`]);
        expect(res.code, res.stderr).toBe(0);
        expect(res.stdout.toString()).toBe('407');
        expect(await onlyRecord(proxy)).toMatchObject({ protocol: 'http', outcome: 'auth-failed', reply: 407, user: 'alice' });
      });

      it('HTTP CONNECT with a wrong password: curl fails, CONNECT got 407, record auth-failed', async (ctx) => {
        needsTool(ctx, 'curl');
        const proxy = await withAuth();
        const res = await runCurl(['-p', '--proxy', `http://${HOST}:${proxy.port}`, '--proxy-user', 'alice:wrong', '-o', '/dev/null', '-w', '%{http_connect}', `http://${HOST}:${origin.port}/`]);
        expect(res.code, res.stderr).not.toBe(0);
        expect(res.stdout.toString()).toBe('407');
        expect(await onlyRecord(proxy)).toMatchObject({ protocol: 'http', command: 'connect', outcome: 'auth-failed', reply: 407 });
      });
    });
  });

  describe('npm socks client', () => {
    const echo2MiB = async (proxy: p.RunningProxy, type: 4 | 5, host: string, port: number, seed: number) => {
      const { socket } = await SocksClient.createConnection({
        proxy: { host: HOST, port: proxy.port, type },
        command: 'connect',
        destination: { host, port },
        timeout: 30_000,
      });
      h.track(socket);
      const clientPort = socket.localPort!;
      const received = h.hashUntilEnd(socket);
      const sent = await h.writeRandom(socket, seed, 2 * MiB);
      const got = await h.within(received, 60_000, 'the echo of 2 MiB');
      expect(got.bytes).toBe(sent.bytes);
      expect(got.sha).toBe(sent.sha);
      return proxy.recordOf(clientPort);
    };

    it('SOCKS4 CONNECT to an IPv4 address: 2 MiB echoed intact', async () => {
      const proxy = await start();
      const record = await echo2MiB(proxy, 4, HOST, echo.port, 41);
      expect(record).toMatchObject({ protocol: 'socks4', command: 'connect', outcome: 'eof', engine, bytesUp: 2 * MiB, bytesDown: 2 * MiB });
    });

    it('SOCKS4a CONNECT to a host name: 2 MiB echoed intact', async () => {
      const proxy = await start();
      const record = await echo2MiB(proxy, 4, 'localhost', echo.port, 42);
      expect(record).toMatchObject({ protocol: 'socks4a', destination: `localhost:${echo.port}`, outcome: 'eof', engine, bytesUp: 2 * MiB, bytesDown: 2 * MiB });
    });

    it('SOCKS5 CONNECT to an IPv4 address: 2 MiB echoed intact', async () => {
      const proxy = await start();
      const record = await echo2MiB(proxy, 5, HOST, echo.port, 51);
      expect(record).toMatchObject({ protocol: 'socks5', destination: `${HOST}:${echo.port}`, outcome: 'eof', engine, bytesUp: 2 * MiB, bytesDown: 2 * MiB });
    });

    it('SOCKS5 CONNECT to a host name: 2 MiB echoed intact', async () => {
      const proxy = await start();
      const record = await echo2MiB(proxy, 5, 'localhost', echo.port, 52);
      expect(record).toMatchObject({ protocol: 'socks5', destination: `localhost:${echo.port}`, outcome: 'eof', engine });
    });

    it('SOCKS5 CONNECT with username/password: 2 MiB echoed intact', async () => {
      const proxy = await withAuth();
      const { socket } = await SocksClient.createConnection({
        proxy: { host: HOST, port: proxy.port, type: 5, userId: 'alice', password: 's3cret' },
        command: 'connect',
        destination: { host: HOST, port: echo.port },
        timeout: 30_000,
      });
      h.track(socket);
      const clientPort = socket.localPort!;
      const received = h.hashUntilEnd(socket);
      const sent = await h.writeRandom(socket, 53, 2 * MiB);
      expect((await received).sha).toBe(sent.sha);
      expect(await proxy.recordOf(clientPort)).toMatchObject({ protocol: 'socks5', user: 'alice', outcome: 'eof', engine });
    });

    it('SOCKS5 CONNECT to an IPv6 address (::1): 2 MiB echoed intact', async (ctx) => {
      if (!(await p.canListenOnV6Loopback())) ctx.skip('::1 is not available on this host (no IPv6 loopback)');
      const echo6 = h.track(net.createServer({ allowHalfOpen: true }, (s) => s.on('error', () => {}).pipe(s)));
      await new Promise<void>((resolve) => echo6.listen(0, '::1', () => resolve()));
      const port6 = (echo6.address() as net.AddressInfo).port;
      const proxy = await start();
      const record = await echo2MiB(proxy, 5, '::1', port6, 54);
      expect(record).toMatchObject({ protocol: 'socks5', destination: `[::1]:${port6}`, outcome: 'eof', engine, bytesUp: 2 * MiB, bytesDown: 2 * MiB });
      await h.closeServer(echo6);
    });
  });

  describe('ncat (half-closes after its input)', () => {
    for (const type of ['socks5', 'socks4', 'http'] as const) {
      it(`--proxy-type ${type}: the whole echo arrives after ncat's FIN`, async (ctx) => {
        needsTool(ctx, 'ncat');
        const proxy = await start();
        const input = h.patternBytes(60 + type.length, 1 * MiB);
        const res = await p.runTool('ncat', ['--proxy', `${HOST}:${proxy.port}`, '--proxy-type', type, HOST, String(echo.port)], { input, timeoutMs: 60_000 });
        expect(res.code, res.stderr).toBe(0);
        expect(res.stdout.length).toBe(input.length);
        expect(h.sha256(res.stdout)).toBe(h.sha256(input));
        const record = await onlyRecord(proxy);
        expect(record).toMatchObject({
          protocol: type,
          command: 'connect',
          outcome: 'eof',
          engine,
          destination: `${HOST}:${echo.port}`,
          bytesUp: input.length,
          bytesDown: input.length,
        });
      });
    }
  });

  describe('optimistic data and piecemeal handshakes (raw clients)', () => {
    const payload = h.patternBytes(77, 200 * KiB);

    /**
     * Sends `handshake + payload` in one write (and FIN at once when `fin`), expects exactly
     * `replyLength` bytes of handshake replies (checked by `checkReply`) and then the payload echoed.
     */
    const oneWrite = async (
      proxy: p.RunningProxy,
      handshake: Buffer,
      replyLength: number,
      checkReply: (reply: Buffer) => void,
      fin: boolean,
    ): Promise<ProxyConnectionRecord> => {
      const client = await p.rawConnect(proxy.port);
      client.socket.write(Buffer.concat([handshake, payload]));
      if (fin) client.socket.end();
      const all = await client.waitBytes(replyLength + payload.length, 30_000);
      checkReply(all.subarray(0, replyLength));
      expect(h.sha256(all.subarray(replyLength)), 'the payload comes back after the reply, in order').toBe(h.sha256(payload));
      if (!fin) client.socket.end();
      expect(await h.within(client.finished, 10_000, 'the echo server FIN through the proxy')).toBe('end');
      expect(client.received().length, 'nothing past the echo').toBe(replyLength + payload.length);
      const record = await proxy.recordOf(client.localPort);
      expect(record).toMatchObject({ outcome: 'eof', engine, bytesUp: payload.length, bytesDown: payload.length });
      return record;
    };

    const socks5Reply = (reply: Buffer) => {
      expect(reply.subarray(0, 2).toString('hex'), 'method selection').toBe('0500');
      expect(reply.subarray(2, 10).toString('hex'), 'CONNECT reply: success, IPv4 BND').toBe('050000017f000001');
      expect(reply.readUInt16BE(10), 'BND.PORT is the outbound socket port').toBeGreaterThan(0);
    };
    const socks4Reply = (reply: Buffer) => {
      expect(reply.subarray(0, 2).toString('hex'), 'VN 0, CD 5A').toBe('005a');
    };
    const httpReply = (reply: Buffer) => expect(reply.toString('latin1')).toBe(p.HTTP_200_CONNECT.toString('latin1'));

    for (const fin of [false, true]) {
      const how = fin ? ', FIN right behind it' : '';
      it(`SOCKS5 greeting + request + payload in one write${how}`, async () => {
        const proxy = await start();
        const handshake = Buffer.concat([Buffer.of(0x05, 0x01, 0x00), p.socks5Connect(HOST, echo.port)]);
        const record = await oneWrite(proxy, handshake, 2 + 10, socks5Reply, fin);
        expect(record.protocol).toBe('socks5');
      });

      it(`SOCKS5 with auth: greeting + auth + request + payload in one write${how}`, async () => {
        const proxy = await withAuth();
        const handshake = Buffer.concat([Buffer.of(0x05, 0x01, 0x02), p.socks5Auth('alice', 's3cret'), p.socks5Connect(HOST, echo.port)]);
        const record = await oneWrite(proxy, handshake, 2 + 2 + 10, (reply) => {
          expect(reply.subarray(0, 4).toString('hex'), 'method 02, then auth status 00').toBe('05020100');
          expect(reply.subarray(4, 12).toString('hex')).toBe('050000017f000001');
        }, fin);
        expect(record).toMatchObject({ protocol: 'socks5', user: 'alice' });
      });

      it(`SOCKS4 request + payload in one write${how}`, async () => {
        const proxy = await start();
        const record = await oneWrite(proxy, p.socks4Connect(HOST, echo.port, 'me'), 8, socks4Reply, fin);
        expect(record).toMatchObject({ protocol: 'socks4', user: 'me' });
      });

      it(`SOCKS4a request + payload in one write${how}`, async () => {
        const proxy = await start();
        const record = await oneWrite(proxy, p.socks4Connect('localhost', echo.port), 8, socks4Reply, fin);
        expect(record.protocol).toBe('socks4a');
      });

      it(`HTTP CONNECT head + payload in one write${how}`, async () => {
        const proxy = await start();
        const record = await oneWrite(proxy, p.httpConnect(HOST, echo.port), p.HTTP_200_CONNECT.length, httpReply, fin);
        expect(record).toMatchObject({ protocol: 'http', command: 'connect', reply: 200 });
      });
    }

    /** Feeds `handshake` one byte at a time (setTimeout between bytes), then echoes a payload. */
    const byteByByte = async (proxy: p.RunningProxy, handshake: Buffer, replyLength: number, checkReply: (reply: Buffer) => void) => {
      const client = await p.rawConnect(proxy.port);
      client.socket.setNoDelay(true);
      await p.writeSlowly(client.socket, handshake, 1, 3);
      checkReply(await client.waitBytes(replyLength, 30_000));
      const small = payload.subarray(0, 10 * KiB);
      client.socket.end(small);
      const all = await client.waitBytes(replyLength + small.length, 30_000);
      expect(all.subarray(replyLength).equals(small)).toBe(true);
      expect(await h.within(client.finished, 10_000, 'FIN')).toBe('end');
      return proxy.recordOf(client.localPort);
    };

    it('SOCKS5 with auth, fed byte by byte', async () => {
      const proxy = await withAuth();
      const handshake = Buffer.concat([Buffer.of(0x05, 0x02, 0x00, 0x02), p.socks5Auth('alice', 's3cret'), p.socks5Connect('localhost', echo.port)]);
      const record = await byteByByte(proxy, handshake, 2 + 2 + 10, (reply) => expect(reply.subarray(0, 5).toString('hex')).toBe('0502010005'));
      expect(record).toMatchObject({ protocol: 'socks5', user: 'alice', outcome: 'eof', destination: `localhost:${echo.port}` });
    });

    it('SOCKS4a fed byte by byte', async () => {
      const proxy = await start();
      const record = await byteByByte(proxy, p.socks4Connect('localhost', echo.port, 'bob'), 8, socks4Reply);
      expect(record).toMatchObject({ protocol: 'socks4a', user: 'bob', outcome: 'eof' });
    });

    it('HTTP CONNECT fed byte by byte', async () => {
      const proxy = await start();
      const record = await byteByByte(proxy, p.httpConnect(HOST, echo.port, ['User-Agent: slow']), p.HTTP_200_CONNECT.length, httpReply);
      expect(record).toMatchObject({ protocol: 'http', outcome: 'eof', reply: 200 });
    });
  });
});

describe('teardown', () => {
  it('leaves no fds open', async () => {
    await h.closeAll();
    const settled = await h.waitFor(() => h.openFdCount() <= fdBaseline, 10_000);
    const now = h.openFdCount();
    expect(settled, `fds: baseline ${fdBaseline}, now ${now}; new: ${JSON.stringify(h.fdDiff(fdTable, h.fdTable()))}`).toBe(true);
  });
});
