// SOCKS4 and SOCKS5 BIND through a real ProxyServer, driven by the npm `socks` client.
import net from 'node:net';
import { SocksClient, type SocksClientOptions } from 'socks';
import { afterEach, describe, expect, it } from 'vitest';
import { parseRule } from '../src/index.js';
import {
  closeAll,
  fdDiff,
  fdTable,
  hashUntilEnd,
  HOST,
  MiB,
  openFdCount,
  patternBytes,
  readBytes,
  sha256,
  track,
  waitFor,
  within,
  writeBuffer,
} from './helpers.js';
import { closeProxies, startProxy } from './proxy-helpers.js';
import { testEngines } from './policy.js';

// Sockets first, then the proxies: a proxy closed under open client sockets resets them.
afterEach(async () => {
  await closeAll();
  await closeProxies();
});


type Remote = { host: string; port: number };

/** A BIND request; `bound` is the first reply, `established` the second (both reject on a failure reply). */
function socksBind(proxyPort: number, type: 4 | 5, destination: Remote, timeout = 10_000) {
  const options: SocksClientOptions = { proxy: { host: HOST, port: proxyPort, type }, command: 'bind', destination, timeout };
  const client = new SocksClient(options);
  const bound = new Promise<{ remoteHost: Remote; socket: net.Socket }>((resolve, reject) => {
    client.once('bound', (info) => {
      const socket = track(info.socket as net.Socket);
      // A test that ends with the pair open sees it reset in teardown: not a failure.
      socket.on('error', () => {});
      resolve({ remoteHost: info.remoteHost as Remote, socket });
    });
    client.once('error', reject);
  });
  const established = new Promise<{ remoteHost: Remote; socket: net.Socket }>((resolve, reject) => {
    client.once('established', (info) => resolve({ remoteHost: info.remoteHost as Remote, socket: info.socket as net.Socket }));
    client.once('error', reject);
  });
  bound.catch(() => {});
  established.catch(() => {});
  client.connect();
  return { bound, established };
}

function connectPeer(port: number, localAddress = HOST): Promise<net.Socket> {
  const socket = track(net.connect({ host: HOST, port, localAddress, allowHalfOpen: true }));
  socket.on('error', () => {});
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Resolves with the error code of a connect to 127.0.0.1:port, or 'connected'. */
function probe(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });
}

describe.each(testEngines)('BIND with engine %s', (engine) => {
  it.each([4, 5] as const)('SOCKS%i: both replies, then a byte stream both ways', async (type) => {
    const proxy = await startProxy({ engine });
    const { bound, established } = socksBind(proxy.port, type, { host: HOST, port: 0 });
    const first = await within(bound, 5000, 'first reply');
    expect(first.remoteHost.host).toBe(HOST);
    expect(first.remoteHost.port).toBeGreaterThan(0);
    // Bytes sent before the peer arrives reach it first.
    const early = Buffer.from('before the peer');
    first.socket.write(early);

    const peer = await connectPeer(first.remoteHost.port);
    const peerPort = peer.localPort;
    const second = await within(established, 5000, 'second reply');
    expect(second.remoteHost).toEqual({ host: HOST, port: peerPort });
    expect((await readBytes(peer, early.length)).toString()).toBe(early.toString());

    const up = patternBytes(1, 4 * MiB);
    const down = patternBytes(2, 3 * MiB);
    const atPeer = hashUntilEnd(peer);
    const atClient = hashUntilEnd(second.socket);
    await Promise.all([writeBuffer(second.socket, up), writeBuffer(peer, down)]);
    expect(await within(atPeer, 20_000, 'peer receives')).toEqual({ bytes: up.length, sha: sha256(up) });
    expect(await within(atClient, 20_000, 'client receives')).toEqual({ bytes: down.length, sha: sha256(down) });

    const record = await proxy.records.find((r) => r.command === 'bind', 'record');
    expect(record).toMatchObject({
      protocol: type === 4 ? 'socks4' : 'socks5',
      engine,
      outcome: 'eof',
      reply: type === 4 ? 0x5a : 0,
      destination: `${HOST}:${peerPort}`,
      bytesUp: up.length + early.length,
      bytesDown: down.length,
    });
    expect(await probe(first.remoteHost.port)).toBe('ECONNREFUSED');
  });
});

describe('BIND to 0.0.0.0: any peer, the rules still applied to it', () => {
  // The rule names the address a refused peer comes from; any other peer is let in.
  const rules = [parseRule('deny', 'to=127.0.0.2 cmd=bind')];

  it.each([4, 5] as const)('SOCKS%i: the npm socks client binds to 0.0.0.0:0, a peer connects, bytes flow both ways', async (type) => {
    const proxy = await startProxy({ rules });
    const { bound, established } = socksBind(proxy.port, type, { host: '0.0.0.0', port: 0 });
    const first = await within(bound, 5000, 'first reply');
    expect(first.remoteHost.host).toBe(HOST);
    const peer = await connectPeer(first.remoteHost.port);
    const peerPort = peer.localPort;
    const second = await within(established, 5000, 'second reply');
    expect(second.remoteHost).toEqual({ host: HOST, port: peerPort });

    const up = patternBytes(3, 2 * MiB);
    const down = patternBytes(4, 1 * MiB);
    const atPeer = hashUntilEnd(peer);
    const atClient = hashUntilEnd(second.socket);
    await Promise.all([writeBuffer(second.socket, up), writeBuffer(peer, down)]);
    expect(await within(atPeer, 20_000, 'peer receives')).toEqual({ bytes: up.length, sha: sha256(up) });
    expect(await within(atClient, 20_000, 'client receives')).toEqual({ bytes: down.length, sha: sha256(down) });
    expect(await proxy.records.find((r) => r.command === 'bind', 'record')).toMatchObject({
      protocol: type === 4 ? 'socks4' : 'socks5',
      outcome: 'eof',
      reply: type === 4 ? 0x5a : 0,
      destination: `${HOST}:${peerPort}`,
      bytesUp: up.length,
      bytesDown: down.length,
    });
  });

  it.each([4, 5] as const)('SOCKS%i: a peer a deny rule names is refused with the failure reply and closed', async (type) => {
    const proxy = await startProxy({ rules });
    const { bound, established } = socksBind(proxy.port, type, { host: '0.0.0.0', port: 0 });
    const { remoteHost } = await within(bound, 5000, 'first reply');
    const peer = await connectPeer(remoteHost.port, '127.0.0.2');
    const peerPort = peer.localPort;
    const closed = new Promise((resolve) => (peer.once('end', resolve), peer.once('close', resolve)));
    await expect(within(established, 5000, 'second reply')).rejects.toThrow(/rejected|NotAllowed/i);
    await within(closed, 5000, 'peer closed');
    expect(await proxy.records.find((r) => r.command === 'bind', 'record')).toMatchObject({
      outcome: 'denied',
      reply: type === 4 ? 0x5b : 2,
      destination: `127.0.0.2:${peerPort}`,
    });
    expect(await probe(remoteHost.port)).toBe('ECONNREFUSED');
  });
});

describe('BIND peer filter, failures and cleanup', () => {
  it.each([4, 5] as const)('SOCKS%i: a peer from another IP than DST is refused and both are closed', async (type) => {
    const proxy = await startProxy();
    const { bound, established } = socksBind(proxy.port, type, { host: '127.0.0.2', port: 0 });
    const { remoteHost } = await within(bound, 5000, 'first reply');
    const peer = await connectPeer(remoteHost.port, '127.0.0.1');
    const peerPort = peer.localPort;
    // The proxy closes the peer: a FIN, or an RST if the peer's bytes were unread.
    const closed = new Promise((resolve) => (peer.once('end', resolve), peer.once('close', resolve)));
    await expect(within(established, 5000, 'second reply')).rejects.toThrow(/rejected|NotAllowed/i);
    await within(closed, 5000, 'peer closed');
    const record = await proxy.records.find((r) => r.command === 'bind', 'record');
    expect(record).toMatchObject({ outcome: 'denied', reply: type === 4 ? 0x5b : 2, destination: `127.0.0.1:${peerPort}` });
    expect(await probe(remoteHost.port)).toBe('ECONNREFUSED');
  });

  it('accepts a peer from the DST address (127.0.0.2)', async () => {
    const proxy = await startProxy();
    const { bound, established } = socksBind(proxy.port, 5, { host: '127.0.0.2', port: 0 });
    const { remoteHost } = await within(bound, 5000, 'first reply');
    const peer = await connectPeer(remoteHost.port, '127.0.0.2');
    const second = await within(established, 5000, 'second reply');
    expect(second.remoteHost).toEqual({ host: '127.0.0.2', port: peer.localPort });
    second.socket.end('hi');
    expect((await readBytes(peer, 2)).toString()).toBe('hi');
  });

  it('a domain DST is resolved and the peer compared with its addresses', async () => {
    const proxy = await startProxy({ lookup: async (name) => [{ address: name === 'good.test' ? HOST : '127.0.0.3', family: 4 }] });
    const good = socksBind(proxy.port, 5, { host: 'good.test', port: 0 });
    await connectPeer((await within(good.bound, 5000, 'first reply')).remoteHost.port);
    expect((await within(good.established, 5000, 'second reply')).remoteHost.host).toBe(HOST);
    const bad = socksBind(proxy.port, 5, { host: 'bad.test', port: 0 });
    await connectPeer((await within(bad.bound, 5000, 'first reply')).remoteHost.port);
    await expect(within(bad.established, 5000, 'second reply')).rejects.toThrow(/NotAllowed/);
  });

  it.each([
    [4, 0x5b],
    [5, 6],
  ] as const)('SOCKS%i: no peer within the connect timeout gives failure reply %i and closes the listener', async (type, reply) => {
    const proxy = await startProxy({ timeouts: { connect: 300 } });
    const { bound, established } = socksBind(proxy.port, type, { host: HOST, port: 0 });
    const { remoteHost } = await within(bound, 5000, 'first reply');
    await expect(within(established, 5000, 'second reply')).rejects.toThrow(/rejected|TTLExpired/i);
    expect(await proxy.records.find((r) => r.command === 'bind', 'record')).toMatchObject({ outcome: 'ETIMEDOUT', reply });
    expect(await probe(remoteHost.port)).toBe('ECONNREFUSED');
  });

  it('a client that goes away while waiting closes the listener', async () => {
    const proxy = await startProxy();
    const { bound } = socksBind(proxy.port, 5, { host: HOST, port: 0 });
    const { remoteHost, socket } = await within(bound, 5000, 'first reply');
    socket.destroy();
    expect(await proxy.records.find((r) => r.command === 'bind', 'record')).toMatchObject({ outcome: 'client-closed' });
    expect(await probe(remoteHost.port)).toBe('ECONNREFUSED');
  });

  it('server shutdown ends a BIND that is waiting for its peer', async () => {
    const proxy = await startProxy();
    const { bound } = socksBind(proxy.port, 5, { host: HOST, port: 0 });
    const { remoteHost, socket } = await within(bound, 5000, 'first reply');
    const closed = new Promise((resolve) => socket.once('close', resolve));
    await within(proxy.server.close(), 5000, 'server close');
    expect(await proxy.records.find((r) => r.command === 'bind', 'record')).toMatchObject({ outcome: 'aborted' });
    await within(closed, 5000, 'client closed');
    expect(await probe(remoteHost.port)).toBe('ECONNREFUSED');
  });

  it('a deny rule for bind gives SOCKS5 reply 02 (and SOCKS4 5B) before any listener', async () => {
    const proxy = await startProxy({ rules: [parseRule('deny', 'cmd=bind')] });
    await expect(within(socksBind(proxy.port, 5, { host: HOST, port: 0 }).bound, 5000, 'reply')).rejects.toThrow(/NotAllowed/);
    await expect(within(socksBind(proxy.port, 4, { host: HOST, port: 0 }).bound, 5000, 'reply')).rejects.toThrow(/rejected/i);
    await proxy.records.find((r) => r.protocol === 'socks4', 'socks4 record');
    expect(proxy.records.items.map((r) => [r.outcome, r.reply])).toEqual([
      ['denied', 2],
      ['denied', 0x5b],
    ]);
  });

  it('leaves no fd open after success, refusal, timeout and a vanished client', async () => {
    const proxy = await startProxy({ engine: testEngines[0], timeouts: { connect: 300 } });
    const once = async (dst: string, peerFrom?: string) => {
      const { bound, established } = socksBind(proxy.port, 5, { host: dst, port: 0 });
      const { remoteHost, socket } = await within(bound, 5000, 'first reply');
      if (peerFrom === undefined) return established.catch(() => {});
      const peer = await connectPeer(remoteHost.port, peerFrom);
      const second = await established.catch(() => undefined);
      if (second) {
        second.socket.end('x');
        peer.end('y');
        await Promise.all([hashUntilEnd(peer), hashUntilEnd(second.socket)]);
      }
      socket.destroy();
      peer.destroy();
    };
    await once(HOST, HOST); // warm up: the splice engine's own fds are opened once
    await proxy.records.find(() => true, 'warm-up record');
    await waitFor(() => proxy.server.activeConnections === 0, 5000);
    const before = fdTable();
    const count = openFdCount();
    await once(HOST, HOST);
    await once('127.0.0.2', HOST);
    await once(HOST);
    const gone = socksBind(proxy.port, 5, { host: HOST, port: 0 });
    (await within(gone.bound, 5000, 'first reply')).socket.destroy();
    await waitFor(() => proxy.records.items.length === 5 && proxy.server.activeConnections === 0, 5000);
    const settled = await waitFor(() => openFdCount() <= count, 5000);
    expect(settled ? {} : fdDiff(before, fdTable())).toEqual({});
  });
});
