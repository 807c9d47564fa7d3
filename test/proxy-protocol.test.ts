// --accept-proxy-protocol and --send-proxy-protocol on real sockets (loopback only): the proxy on
// both accept paths, the forwarder and the relay on each engine. The header and the first bytes
// of the stream are sent in one write, so a byte lost after the header would show in the hashes;
// the client the header names is checked where a user sees it: records, `from=` rules, limits.
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SpliceEngine } from '../src/engine/splice/engine.js';
import { Forwarder, type ConnectionRecord } from '../src/forwarder/server.js';
import { createRelay } from '../src/relay/create.js';
import type { RelayConnectionRecord } from '../src/relay/relay.js';
import { parseRule } from '../src/proxy/rules.js';
import { encodeProxyHeader, parseProxyHeader, type ProxyHeader } from '../src/protocol/proxy-protocol.js';
import * as h from './helpers.js';
import * as p from './proxy-helpers.js';
import { testEngines } from './policy.js';
import { runCli } from './cli-harness.js';

const { HOST, KiB } = h;

let fdBaseline = 0;
let fdTable = new Map<string, string>();
beforeAll(() => {
  fdBaseline = h.openFdCount();
  fdTable = h.fdTable();
});

const conn = (source: string, sourcePort: number, destination = '198.51.100.1', destinationPort = 1080) => ({
  source: { address: source, port: sourcePort },
  destination: { address: destination, port: destinationPort },
});

/** SOCKS5: greeting (no auth), CONNECT to 127.0.0.1:port. */
function socks5Connect(port: number): Buffer {
  const request = Buffer.from([0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0, 0]);
  request.writeUInt16BE(port, 8);
  return Buffer.concat([Buffer.from([0x05, 0x01, 0x00]), request]);
}

/**
 * One write: the PROXY header, a SOCKS5 greeting and CONNECT, and `payload` (optimistic data);
 * then the rest of the payload. Returns the client and what the proxy replied, and the echo's hash.
 */
async function socksThroughHeader(proxyPort: number, header: Buffer | null, echoPort: number, payload: Buffer) {
  const client = await p.rawConnect(proxyPort);
  const first = payload.subarray(0, 1000);
  client.socket.write(Buffer.concat([header ?? Buffer.alloc(0), socks5Connect(echoPort), first]));
  return client;
}

/** An upstream that reads a PROXY header off each connection, then echoes the rest. */
async function startHeaderEcho() {
  const headers = new h.Arrivals<{ header: ProxyHeader; remotePort: number }>();
  const server = await h.startServer((socket) => {
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const parsed = parseProxyHeader(buffered);
      if (parsed.status === 'incomplete') return;
      socket.off('data', onData);
      if (parsed.status === 'error') return void socket.destroy();
      headers.push({ header: parsed.header, remotePort: socket.remotePort! });
      socket.write(buffered.subarray(parsed.consumed));
      socket.pipe(socket);
    };
    socket.on('data', onData);
  });
  return { ...server, headers };
}

/** Sends `data` (in one write with `header` in front), half-closes, and hashes the echo. */
async function echoedThrough(port: number, header: Buffer | null, data: Buffer) {
  const socket = h.track(net.connect({ host: HOST, port, allowHalfOpen: true }));
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const received = h.hashUntilEnd(socket);
  socket.end(Buffer.concat([header ?? Buffer.alloc(0), data]));
  return { localPort: socket.localPort!, received: await h.within(received, 20_000, 'the echo') };
}

const VARIANTS = testEngines.flatMap((engine): { engine: 'splice' | 'js'; accept: 'native' | 'node' }[] =>
  engine === 'splice' ? [{ engine, accept: 'native' }, { engine, accept: 'node' }] : [{ engine, accept: 'node' }],
);

describe.each(VARIANTS)('proxy --accept-proxy-protocol, $engine engine, $accept accept path', ({ engine, accept }) => {
  let echo: h.TestServer;
  let spliceEngine: SpliceEngine | undefined;

  beforeAll(async () => {
    echo = await h.startEchoServer();
    if (engine === 'splice') spliceEngine = new SpliceEngine();
  });
  afterEach(() => p.closeProxies());
  afterAll(async () => {
    await p.closeProxies();
    await h.closeAll();
    await spliceEngine?.close();
  });

  const start = async (extra: Parameters<typeof p.startProxy>[0] = {}) => {
    const proxy = await p.startProxy({ engine, spliceEngine, accept, acceptProxyProtocol: true, ...extra });
    expect(proxy.server.acceptPath).toBe(accept);
    return proxy;
  };

  it.each([1, 2] as const)('v%i: the header, handshake and payload in one write: every byte echoed, the record names the header\'s client', async (version) => {
    const proxy = await start();
    const payload = h.patternBytes(version, 256 * KiB);
    const client = await socksThroughHeader(proxy.port, encodeProxyHeader(version, conn('192.0.2.33', 40001)), echo.port, payload);
    await client.waitBytes(2 + 10);
    expect(client.received().subarray(0, 4)).toEqual(Buffer.from([0x05, 0x00, 0x05, 0x00]));
    await h.writeBuffer(client.socket, payload.subarray(1000));
    await h.within(client.finished, 20_000, 'the echo to end');
    expect(h.sha256(client.received().subarray(12))).toBe(h.sha256(payload));
    const record = await proxy.records.nth(0);
    expect(record).toMatchObject({ client: '192.0.2.33:40001', protocol: 'socks5', outcome: 'eof', bytesUp: payload.length, bytesDown: payload.length });
  });

  it('a `from=` rule sees the header\'s client, not the peer (127.0.0.1)', async () => {
    const proxy = await start({ rules: [parseRule('deny', 'from=203.0.113.0/24'), parseRule('allow', 'from=127.0.0.1')] });
    const denied = await socksThroughHeader(proxy.port, encodeProxyHeader(2, conn('203.0.113.9', 5000)), echo.port, Buffer.alloc(0));
    await h.within(denied.finished, 10_000, 'the denied client to be closed');
    // 05 02: not allowed by the ruleset.
    expect(denied.received().subarray(2, 4)).toEqual(Buffer.from([0x05, 0x02]));
    expect(await proxy.records.nth(0)).toMatchObject({ client: '203.0.113.9:5000', outcome: 'denied', reply: 2 });
    // The allow rule names the real peer: a header naming another client is not let in by it.
    const other = await socksThroughHeader(proxy.port, encodeProxyHeader(1, conn('198.51.100.7', 5001)), echo.port, Buffer.alloc(0));
    await h.within(other.finished, 10_000, 'the second client to be closed');
    expect(await proxy.records.nth(1)).toMatchObject({ client: '198.51.100.7:5001', outcome: 'denied' });
    // LOCAL: the connection speaks for itself, and the peer (127.0.0.1) is allowed.
    const local = await socksThroughHeader(proxy.port, encodeProxyHeader(2, null), echo.port, Buffer.from('x'));
    await local.waitBytes(13);
    expect(local.received().subarray(12)).toEqual(Buffer.from('x'));
    local.socket.end();
    await h.within(local.finished, 10_000, 'the LOCAL client to end');
    expect((await proxy.records.nth(2)).client).toBe(`${HOST}:${local.localPort}`);
  });

  it('a connection without a header is closed, unserved: no reply, outcome bad-proxy-header', async () => {
    const proxy = await start();
    const client = await socksThroughHeader(proxy.port, null, echo.port, Buffer.from('payload'));
    await h.within(client.finished, 10_000, 'the headerless client to be closed');
    expect(client.received()).toHaveLength(0);
    expect(await proxy.records.nth(0)).toMatchObject({ client: `${HOST}:${client.localPort}`, outcome: 'bad-proxy-header' });
  });

  it('silence gets the handshake timeout', async () => {
    const proxy = await start({ timeouts: { handshake: 300 } });
    const client = await p.rawConnect(proxy.port);
    client.socket.write('PROXY TCP4 192.0.2.1'); // part of a header, never finished
    await h.within(client.finished, 10_000, 'the client to be closed');
    expect(await proxy.records.nth(0)).toMatchObject({ outcome: 'handshake-timeout' });
  });

  it('the per-client limit counts the header\'s client', async () => {
    const proxy = await start({ limits: { perClient: 1 } });
    const first = await socksThroughHeader(proxy.port, encodeProxyHeader(2, conn('192.0.2.50', 1)), echo.port, Buffer.alloc(0));
    await first.waitBytes(12);
    // Same claimed client, from another port of the same peer: over the limit.
    const second = await socksThroughHeader(proxy.port, encodeProxyHeader(2, conn('192.0.2.50', 2)), echo.port, Buffer.alloc(0));
    await h.within(second.finished, 10_000, 'the client over its limit to be closed');
    expect(second.received()).toHaveLength(0);
    expect(await proxy.records.nth(0)).toMatchObject({ client: '192.0.2.50:2', outcome: 'limit' });
    // Another claimed client, from the same peer: served.
    const third = await socksThroughHeader(proxy.port, encodeProxyHeader(2, conn('192.0.2.51', 3)), echo.port, Buffer.from('ok'));
    await third.waitBytes(14);
    first.socket.end();
    third.socket.end();
    await h.within(Promise.all([first.finished, third.finished]), 10_000, 'both to end');
  });

  it('HTTP CONNECT after a header: the rules see the header\'s client', async () => {
    const proxy = await start({ rules: [parseRule('deny', 'from=203.0.113.0/24')] });
    const client = await p.rawConnect(proxy.port);
    client.socket.write(Buffer.concat([encodeProxyHeader(1, conn('203.0.113.1', 9)), Buffer.from(`CONNECT ${HOST}:${echo.port} HTTP/1.1\r\nHost: x\r\n\r\n`)]));
    await h.within(client.finished, 10_000, 'the denied client to be closed');
    expect(client.received().toString()).toMatch(/^HTTP\/1\.1 403/);
    expect(await proxy.records.nth(0)).toMatchObject({ client: '203.0.113.1:9', protocol: 'http', outcome: 'denied' });
  });
});

describe.each(testEngines)('forward with PROXY protocol, %s engine', (engine) => {
  let upstream: Awaited<ReturnType<typeof startHeaderEcho>>;
  let spliceEngine: SpliceEngine | undefined;
  const forwarders: Forwarder[] = [];

  beforeAll(async () => {
    upstream = await startHeaderEcho();
    if (engine === 'splice') spliceEngine = new SpliceEngine();
  });
  afterEach(async () => {
    await Promise.all(forwarders.splice(0).map((f) => f.close()));
  });
  afterAll(async () => {
    await h.closeAll();
    await spliceEngine?.close();
  });

  const start = async (extra: Partial<ConstructorParameters<typeof Forwarder>[0]>) => {
    const forwarder = new Forwarder({ listen: [{ host: HOST, port: 0 }], to: { host: HOST, port: upstream.port }, engine, spliceEngine, ...extra });
    forwarders.push(forwarder);
    const records = new h.Arrivals<ConnectionRecord>();
    forwarder.on('connection', (record) => records.push(record));
    const [address] = await forwarder.listen();
    expect(forwarder.acceptPath).toBe('node');
    return { forwarder, port: address.port, records };
  };

  it.each([1, 2] as const)('--send-proxy-protocol v%i: the upstream learns the client and the address it reached, then gets every byte', async (version) => {
    const { port, records } = await start({ sendProxyProtocol: version });
    const data = h.patternBytes(7, 512 * KiB);
    const { localPort, received } = await echoedThrough(port, null, data);
    expect(received).toEqual({ bytes: data.length, sha: h.sha256(data) });
    const seen = await upstream.headers.find((x) => x.header.command === 'proxy' && x.header.source.port === localPort);
    expect(seen.header).toEqual({ version, command: 'proxy', family: 'tcp4', source: { address: HOST, port: localPort }, destination: { address: HOST, port } });
    expect(await records.nth(0)).toMatchObject({ client: `${HOST}:${localPort}`, reason: 'eof', bytesUp: data.length, bytesDown: data.length, engine });
  });

  it('--accept-proxy-protocol with --send-proxy-protocol: the accepted header is passed on, the bytes after it kept', async () => {
    const { port, records } = await start({ acceptProxyProtocol: true, sendProxyProtocol: 2 });
    const data = h.patternBytes(8, 300 * KiB);
    const { received } = await echoedThrough(port, encodeProxyHeader(1, conn('2001:db8::5', 6000, '2001:db8::1', 443)), data);
    expect(received).toEqual({ bytes: data.length, sha: h.sha256(data) });
    const seen = await upstream.headers.find((x) => x.header.command === 'proxy' && x.header.source.port === 6000);
    expect(seen.header).toMatchObject({ version: 2, family: 'tcp6', source: { address: '2001:db8::5' }, destination: { address: '2001:db8::1', port: 443 } });
    expect(await records.nth(0)).toMatchObject({ client: '[2001:db8::5]:6000', reason: 'eof', bytesUp: data.length });
  });

  it('--accept-proxy-protocol: no header, no upstream connection; a bad one is closed with its reason', async () => {
    const { port, records } = await start({ acceptProxyProtocol: true });
    const before = upstream.conns.items.length;
    const plain = await p.rawConnect(port);
    plain.socket.write('GET / HTTP/1.1\r\n\r\n');
    await h.within(plain.finished, 10_000, 'the headerless client to be closed');
    expect(await records.nth(0)).toMatchObject({ reason: 'proxy-header', code: 'ERR_PROXY_HEADER' });
    const quiet = await start({ acceptProxyProtocol: true, proxyHeaderTimeout: 200 });
    const silent = await p.rawConnect(quiet.port);
    await h.within(silent.finished, 10_000, 'the silent client to be closed');
    expect(await quiet.records.nth(0)).toMatchObject({ reason: 'proxy-header', code: 'ETIMEDOUT' });
    expect(upstream.conns.items.length, 'no upstream connection was made').toBe(before);
  });

  it('a header and a FIN in one segment: the bytes after the header still arrive, and the FIN', async () => {
    const { port } = await start({ acceptProxyProtocol: true, sendProxyProtocol: 1 });
    const { received } = await echoedThrough(port, encodeProxyHeader(2, conn('192.0.2.9', 9)), Buffer.from('tail'));
    expect(received).toEqual({ bytes: 4, sha: h.sha256('tail') });
    // Nothing after the header but the FIN: the stream has ended before the pair starts, and the FIN still goes on.
    const empty = await echoedThrough(port, encodeProxyHeader(1, conn('192.0.2.9', 10)), Buffer.alloc(0));
    expect(empty.received).toEqual({ bytes: 0, sha: h.sha256('') });
  });

  it('refuses the native accept path with a PROXY protocol option, saying why', () => {
    expect(() => new Forwarder({ listen: [{ host: HOST, port: 0 }], to: { host: HOST, port: 1 }, accept: 'native', acceptProxyProtocol: true })).toThrow(
      /node accept path, not --accept native/,
    );
  });
});

describe.each(testEngines)('relay with PROXY protocol, %s engine', (engine) => {
  let upstream: Awaited<ReturnType<typeof startHeaderEcho>>;

  beforeAll(async () => {
    upstream = await startHeaderEcho();
  });
  afterAll(() => h.closeAll());

  it.each([
    ['no toxic', [] as string[]],
    ['a latency toxic', ['latency']],
  ])('accepts a v1 header and sends v2, %s: the header first, then every byte', async (_, toxics) => {
    const relay = await createRelay({
      relays: [{ name: 'pp', listen: `${HOST}:0`, upstream: `${HOST}:${upstream.port}`, toxics: toxics.map(() => ({ type: 'latency' as const, attributes: { latency: 20 } })) }],
      engine,
      acceptProxyProtocol: true,
      sendProxyProtocol: 2,
      seed: 1,
    });
    const records = new h.Arrivals<RelayConnectionRecord>();
    relay.on('connection', (record) => records.push(record));
    try {
      const port = relay.address('pp').port;
      const data = h.patternBytes(9, 200 * KiB);
      const { received } = await echoedThrough(port, encodeProxyHeader(1, conn('192.0.2.77', 7777)), data);
      expect(received).toEqual({ bytes: data.length, sha: h.sha256(data) });
      const seen = await upstream.headers.find((x) => x.header.command === 'proxy' && x.header.source.address === '192.0.2.77');
      expect(seen.header).toMatchObject({ version: 2, source: { port: 7777 } });
      expect(await records.nth(0)).toMatchObject({ client: '192.0.2.77:7777', reason: 'eof', bytesUp: data.length });
      const plain = await p.rawConnect(port);
      plain.socket.write('no header');
      await h.within(plain.finished, 10_000, 'the headerless client to be closed');
      expect(await records.nth(1)).toMatchObject({ reason: 'proxy-header', code: 'ERR_PROXY_HEADER' });
    } finally {
      await relay.close();
    }
  });
});

describe('fds', () => {
  it('every fd opened by this file is closed again', async () => {
    await p.closeProxies();
    await h.closeAll();
    const settled = await h.waitFor(() => h.openFdCount() <= fdBaseline, 10_000);
    expect(settled, `fds: baseline ${fdBaseline}, now ${h.openFdCount()}; new: ${JSON.stringify(h.fdDiff(fdTable, h.fdTable()))}`).toBe(true);
  });
});

describe('CLI refusals', () => {
  it('names what was wrong: a version other than v1/v2, and forward --accept native with a PROXY protocol flag', () => {
    const badVersion = runCli(['forward', '--to', `${HOST}:1`, '--send-proxy-protocol', 'v3'], { timeout: 20_000 });
    expect(badVersion.status).not.toBe(0);
    expect(badVersion.stderr).toContain('--send-proxy-protocol must be v1 or v2');
    const native = runCli(['forward', '--to', `${HOST}:1`, '--listen', `${HOST}:0`, '--accept', 'native', '--accept-proxy-protocol'], { timeout: 20_000 });
    expect(native.status).toBe(1);
    expect(native.stderr).toContain('served on the node accept path, not --accept native');
  });
});
