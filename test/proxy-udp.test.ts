// SOCKS5 UDP ASSOCIATE through a real ProxyServer, driven by the npm `socks` client.
import dgram from 'node:dgram';
import type net from 'node:net';
import { SocksClient } from 'socks';
import { afterEach, describe, expect, it } from 'vitest';
import { parseRule } from '../src/index.js';
import { Arrivals, closeAll, fdDiff, fdTable, HOST, onCleanup, openFdCount, sleep, track, waitFor, within } from './helpers.js';
import { closeProxies, startProxy } from './proxy-helpers.js';

// Sockets first, then the proxies: a proxy closed under open client sockets resets them.
afterEach(async () => {
  await closeAll();
  await closeProxies();
});

interface Udp {
  socket: dgram.Socket;
  port: number;
  messages: Arrivals<{ msg: Buffer; rinfo: dgram.RemoteInfo }>;
}

async function udpSocket(host = HOST, onMessage?: (msg: Buffer, rinfo: dgram.RemoteInfo, socket: dgram.Socket) => void): Promise<Udp> {
  const socket = dgram.createSocket('udp4');
  const messages = new Arrivals<{ msg: Buffer; rinfo: dgram.RemoteInfo }>();
  socket.on('error', () => {});
  socket.on('message', (msg, rinfo) => {
    messages.push({ msg, rinfo });
    onMessage?.(msg, rinfo, socket);
  });
  await new Promise<void>((resolve) => socket.bind(0, host, resolve));
  onCleanup(() => {
    try {
      socket.close();
    } catch {
      // already closed
    }
  });
  return { socket, port: socket.address().port, messages };
}

const udpEcho = () => udpSocket(HOST, (msg, rinfo, socket) => socket.send(msg, rinfo.port, rinfo.address));

/** An association: the TCP control socket and the relay address from the reply. */
async function associate(proxyPort: number, hint = { host: '0.0.0.0', port: 0 }) {
  const client = new SocksClient({ proxy: { host: HOST, port: proxyPort, type: 5 }, command: 'associate', destination: hint });
  const established = new Promise<{ control: net.Socket; relay: { host: string; port: number } }>((resolve, reject) => {
    client.once('established', (info) => {
      const control = track(info.socket as net.Socket);
      control.on('error', () => {});
      resolve({ control, relay: info.remoteHost as { host: string; port: number } });
    });
    client.once('error', reject);
  });
  client.connect();
  return within(established, 5000, 'associate reply');
}

const frame = (host: string, port: number, data: string | Buffer, frameNumber = 0) =>
  SocksClient.createUDPFrame({ remoteHost: { host, port }, data: Buffer.from(data), frameNumber });

function sendTo(from: Udp, port: number, datagram: Buffer): void {
  from.socket.send(datagram, port, HOST);
}

/**
 * Nothing new arrives within ms: for a drop with no later datagram to wait for. Elsewhere a
 * datagram sent after the dropped one is awaited instead: the relay socket reads in order, so once
 * the later one is through, the earlier one was handled.
 */
async function quiet(messages: { items: readonly unknown[] }, ms = 200): Promise<number> {
  const before = messages.items.length;
  await sleep(ms);
  return messages.items.length - before;
}

describe('UDP ASSOCIATE', () => {
  it('relays 100 datagrams both ways with the target in the header, and dies with the control connection', async () => {
    const proxy = await startProxy();
    const echo = await udpEcho();
    const client = await udpSocket();
    const { control, relay } = await associate(proxy.port);
    expect(relay.host).toBe(HOST);

    const payloads = Array.from({ length: 100 }, (_, i) => `datagram ${i} `.repeat(1 + (i % 7)));
    for (const payload of payloads) sendTo(client, relay.port, frame(HOST, echo.port, payload));
    await waitFor(() => client.messages.items.length === 100, 5000);
    const replies = client.messages.items.map(({ msg, rinfo }) => ({ from: rinfo.port, ...SocksClient.parseUDPFrame(msg) }));
    expect(replies.map((r) => r.data.toString()).sort()).toEqual([...payloads].sort());
    for (const reply of replies) {
      expect(reply).toMatchObject({ from: relay.port, frameNumber: 0, remoteHost: { host: HOST, port: echo.port } });
    }
    // The echo saw the proxy's outbound socket, not the client.
    expect(new Set(echo.messages.items.map((m) => m.rinfo.port))).not.toContain(client.port);

    control.destroy();
    const record = await proxy.records.find((r) => r.command === 'udp', 'record');
    const bytes = payloads.reduce((n, p) => n + Buffer.byteLength(p), 0);
    expect(record).toMatchObject({ protocol: 'socks5', outcome: 'eof', reply: 0, bytesUp: bytes, bytesDown: bytes });
    expect(record.engine).toBeUndefined();

    sendTo(client, relay.port, frame(HOST, echo.port, 'after close'));
    expect(await quiet(echo.messages)).toBe(0);
    // The relay port is closed: a connected socket hears ECONNREFUSED.
    const probe = dgram.createSocket('udp4');
    const refused = new Promise<string>((resolve) => probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? '')));
    probe.connect(relay.port, HOST, () => probe.send(frame(HOST, echo.port, 'probe')));
    expect(await within(refused, 5000, 'ECONNREFUSED')).toBe('ECONNREFUSED');
    probe.close();
  });

  it('advertises udpAdvertise as BND.ADDR', async () => {
    const proxy = await startProxy({ udpAdvertise: '203.0.113.7' });
    const { relay } = await associate(proxy.port);
    expect(relay.host).toBe('203.0.113.7');
    expect(relay.port).toBeGreaterThan(0);
  });

  it('locks to the first source port; other local sockets are not relayed', async () => {
    const proxy = await startProxy();
    const echo = await udpEcho();
    const [client, other] = [await udpSocket(), await udpSocket()];
    const { relay } = await associate(proxy.port);
    sendTo(client, relay.port, frame(HOST, echo.port, 'first'));
    await client.messages.find(() => true, 'echo of first');
    sendTo(other, relay.port, frame(HOST, echo.port, 'intruder'));
    sendTo(client, relay.port, frame(HOST, echo.port, 'second'));
    await client.messages.find((m) => m.msg.toString().endsWith('second'), 'echo of second');
    expect(echo.messages.items.map((m) => m.msg.toString())).toEqual(['first', 'second']);
    expect(other.messages.items).toEqual([]);
  });

  it('a non-zero port in the request pins the source before any datagram; a non-zero address must match', async () => {
    const proxy = await startProxy();
    const echo = await udpEcho();
    const [client, other] = [await udpSocket(), await udpSocket()];
    const pinned = await associate(proxy.port, { host: HOST, port: client.port });
    sendTo(other, pinned.relay.port, frame(HOST, echo.port, 'wrong port'));
    sendTo(client, pinned.relay.port, frame(HOST, echo.port, 'right port'));
    await client.messages.find(() => true, 'echo');
    expect(echo.messages.items.map((m) => m.msg.toString())).toEqual(['right port']);

    const elsewhere = await associate(proxy.port, { host: '127.0.0.2', port: 0 });
    sendTo(client, elsewhere.relay.port, frame(HOST, echo.port, 'wrong address'));
    expect(await quiet(echo.messages)).toBe(0);
  });

  it('drops fragments (FRAG != 0) and datagrams with a bad header', async () => {
    const proxy = await startProxy();
    const echo = await udpEcho();
    const client = await udpSocket();
    const { relay } = await associate(proxy.port);
    sendTo(client, relay.port, frame(HOST, echo.port, 'fragment', 1));
    sendTo(client, relay.port, Buffer.from([0, 0, 0, 9, 1, 2]));
    sendTo(client, relay.port, frame(HOST, echo.port, 'whole'));
    await echo.messages.find(() => true, 'whole');
    expect(echo.messages.items.map((m) => m.msg.toString())).toEqual(['whole']);
  });

  it('resolves domain targets once per association and checks the rules per destination', async () => {
    const echo = await udpEcho();
    const blocked = await udpEcho();
    const lookups: string[] = [];
    const proxy = await startProxy({
      lookup: async (name) => (lookups.push(name), [{ address: HOST, family: 4 }]),
      rules: [parseRule('deny', `cmd=udp port=${blocked.port}`), parseRule('deny', 'cmd=udp to=denied.test')],
    });
    const client = await udpSocket();
    const { relay } = await associate(proxy.port);
    sendTo(client, relay.port, frame(HOST, blocked.port, 'denied by port'));
    sendTo(client, relay.port, frame('denied.test', echo.port, 'denied by name'));
    for (let i = 0; i < 3; i++) sendTo(client, relay.port, frame('echo.test', echo.port, `by name ${i}`));
    await waitFor(() => client.messages.items.length === 3, 5000);
    expect(client.messages.items.map((m) => SocksClient.parseUDPFrame(m.msg).remoteHost)).toEqual(Array(3).fill({ host: HOST, port: echo.port }));
    expect(blocked.messages.items).toEqual([]);
    expect(echo.messages.items.map((m) => m.msg.toString())).not.toContain('denied by name');
    expect(lookups).toEqual(['echo.test']);
  });

  it('drops datagrams to the outbound socket from hosts the client never sent to', async () => {
    const proxy = await startProxy();
    const echo = await udpEcho();
    const [client, stranger] = [await udpSocket(), await udpSocket()];
    const { relay } = await associate(proxy.port);
    sendTo(client, relay.port, frame(HOST, echo.port, 'hello'));
    const seen = await echo.messages.find(() => true, 'hello');
    await client.messages.find(() => true, 'echo of hello');
    stranger.socket.send('unsolicited', seen.rinfo.port, HOST);
    // The echo's answer reaches the outbound socket after the stranger's datagram did.
    sendTo(client, relay.port, frame(HOST, echo.port, 'again'));
    await client.messages.find((m) => m.msg.toString().endsWith('again'), 'echo of again');
    expect(client.messages.items.map((m) => SocksClient.parseUDPFrame(m.msg).data.toString())).toEqual(['hello', 'again']);
  });

  it('ends on the idle timeout', async () => {
    const idle = await startProxy({ timeouts: { idle: 300 } });
    const first = await associate(idle.port);
    const closed = new Promise((resolve) => first.control.once('close', resolve));
    expect(await idle.records.find((r) => r.command === 'udp', 'idle record')).toMatchObject({ outcome: 'timeout' });
    await within(closed, 5000, 'control closed');
  });

  it('ends when the server shuts down', async () => {
    const proxy = await startProxy();
    const { control, relay } = await associate(proxy.port);
    const closed = new Promise((resolve) => control.once('close', resolve));
    await within(proxy.server.close(), 5000, 'server close');
    expect(await proxy.records.find((r) => r.command === 'udp', 'record')).toMatchObject({ outcome: 'aborted', reply: 0 });
    await within(closed, 5000, 'control closed');
    const probe = await udpSocket();
    const refused = new Promise<string>((resolve) => probe.socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? '')));
    probe.socket.connect(relay.port, HOST, () => probe.socket.send(frame(HOST, 9, 'probe')));
    expect(await within(refused, 5000, 'ECONNREFUSED')).toBe('ECONNREFUSED');
  });

  it('leaves no fd open', async () => {
    const proxy = await startProxy();
    const echo = await udpEcho();
    const client = await udpSocket();
    const before = fdTable();
    const count = openFdCount();
    for (let i = 0; i < 3; i++) {
      const { control, relay } = await associate(proxy.port);
      sendTo(client, relay.port, frame(HOST, echo.port, `round ${i}`));
      await client.messages.find((m) => m.msg.toString().endsWith(`round ${i}`), 'echo');
      control.destroy();
      await waitFor(() => proxy.records.items.length === i + 1, 5000);
    }
    const settled = await waitFor(() => openFdCount() <= count, 5000);
    expect(settled ? {} : fdDiff(before, fdTable())).toEqual({});
  });
});
