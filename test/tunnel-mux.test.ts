// The tunnel client's mux connection (`mux: true`, `tunnel client --mux`): one yamux session to the
// server carries every public connection as a stream. Real sockets on loopback: a service, a
// client, a server, public clients; a relay between client and server counts and cuts the
// connections the client makes.
import fs from 'node:fs';
import net from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { defaultSpliceEngine, SpliceEngine } from '../src/index.js';
import { createMuxSession, type MuxStream } from '../src/mux/index.js';
import { dataMac, encodeDataHello, parseDataReply, parseMuxReply, REPLY } from '../src/tunnel/protocol.js';
import { readHeader } from '../src/tunnel/header.js';
import * as h from './helpers.js';
import { KiB } from './helpers.js';
import * as t from './tunnel-helpers.js';
import { spliceAvailable, spliceSkipReason } from './policy.js';

const expectedEngine = spliceSkipReason ? 'js' : 'splice';

afterEach(async () => {
  await t.closeTunnels();
  await h.closeAll();
});

beforeAll(() => {
  // The shared splice engine holds its own fds: made before any baseline is taken.
  if (spliceAvailable) defaultSpliceEngine();
});

describe('streams on a mux connection', () => {
  it('carries 100 concurrent public connections, every byte intact both ways, on the JS engine at both ends', async () => {
    const N = 100;
    const sizeFor = (seed: number) => 8 * KiB + Math.floor(h.prng(seed)() * 120 * KiB);
    const service = await h.startHashServer({ replyBytes: (i) => sizeFor(9000 + i), when: 'connect' });
    const { server, address, records: serverRecords } = await t.startServer({ dataTimeout: 15_000 });
    const { client, records: clientRecords } = t.startClient(address, { service: [service.port], mux: true });
    const port = await t.publicPort(client);
    expect(server.sessions()).toEqual([expect.objectContaining({ mux: true, pool: 0 })]);

    const publics = await Promise.all(Array.from({ length: N }, () => h.connectTo(port)));
    const results = await Promise.all(
      publics.map(async (socket, i) => {
        const [sent, got] = await Promise.all([h.writeRandom(socket, 300 + i, sizeFor(300 + i)), h.hashUntilEnd(socket)]);
        return { sent, got };
      }),
    );
    const serverSide = await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const rec = await service.records.nth(i);
        return `${(await rec.received).sha}/${(await rec.sent).sha}`;
      }),
    );
    const upstream = new Set(serverSide);
    expect(results.filter((r) => !upstream.has(`${r.sent.sha}/${r.got.sha}`)).length, 'public connections not intact both ways').toBe(0);

    await serverRecords.nth(N - 1, 'all server records', 20_000);
    await clientRecords.nth(N - 1, 'all client records', 20_000);
    expect(serverRecords.items.filter((r) => r.reason !== 'eof' || r.engine !== 'js')).toEqual([]);
    expect(clientRecords.items.filter((r) => r.reason !== 'eof' || r.engine !== 'js')).toEqual([]);
    const up = (rs: { bytesUp: number }[]) => rs.reduce((n, r) => n + r.bytesUp, 0);
    const total = results.reduce((n, r) => n + r.sent.bytes, 0);
    expect(up(serverRecords.items)).toBe(total);
    expect(up(clientRecords.items)).toBe(total);
    // One stream id per public connection, the same on both sides.
    expect(new Set(serverRecords.items.map((r) => r.streamId)).size).toBe(N);
    expect(new Set(clientRecords.items.map((r) => r.streamId))).toEqual(new Set(serverRecords.items.map((r) => r.streamId)));
  }, 60_000);
});

/** A relay between client and server (JS engine): each pair is one TCP connection the client made. */
async function relayTo(address: { port: number }) {
  const relay = await h.startForwarder(address, { engine: 'js' });
  const live = () => relay.pairs.items.filter((p) => p.outcome === undefined).length;
  return { relay, address: { host: h.HOST, port: relay.port }, live };
}

/** Resets both sides of a relayed connection, as a lost connection (a dead NAT mapping) would. */
function cut(pair: h.Pair): void {
  pair.client.resetAndDestroy();
  pair.upstream.resetAndDestroy();
}

describe('streams on a mux connection: semantics', () => {
  it('keeps half-close: a request ended by FIN still gets the whole reply', async () => {
    const service = await h.startHashServer({ replyBytes: 512 * KiB, when: 'end' });
    const { address } = await t.startServer();
    const { client } = t.startClient(address, { service: [service.port], mux: true });
    const socket = await h.connectTo(await t.publicPort(client));
    const got = h.hashUntilEnd(socket);
    const sent = await h.writeRandom(socket, 3, 300 * KiB);
    const rec = await service.records.nth(0);
    expect(await rec.received).toEqual(sent);
    // The service replies only after our FIN reached it: the other direction was still open.
    expect(await got).toEqual(await rec.sent);
  });

  it('keeps half-close the other way: the service ends first, the public client goes on sending', async () => {
    const banner = Buffer.from('220 ready\r\n');
    const collected: Buffer[] = [];
    const service = await h.startServer((socket) => {
      socket.end(banner);
      socket.on('data', (chunk: Buffer) => collected.push(chunk));
    });
    const { address } = await t.startServer();
    const { client } = t.startClient(address, { service: [service.port], mux: true });
    const socket = await h.connectTo(await t.publicPort(client));
    const w = h.watch(socket);
    const got: Buffer[] = [];
    socket.on('data', (c: Buffer) => got.push(c));
    await w.ended;
    expect(Buffer.concat(got)).toEqual(banner);
    const late = h.patternBytes(9, 200 * KiB);
    await h.writeBuffer(socket, late);
    const serviceSocket = await service.conns.nth(0);
    await new Promise<void>((resolve) => (serviceSocket.readableEnded ? resolve() : serviceSocket.once('end', () => resolve())));
    expect(Buffer.concat(collected).equals(late)).toBe(true);
  });

  it('passes resets across the hop both ways: the service resets → the public client sees a reset, and the reverse', async () => {
    const serviceSockets = new h.Arrivals<net.Socket>();
    const service = await h.startServer((socket) => {
      socket.on('error', () => {});
      serviceSockets.push(socket);
    });
    const { address } = await t.startServer();
    const { client } = t.startClient(address, { service: [service.port], mux: true });
    const port = await t.publicPort(client);

    const first = await h.connectTo(port);
    const firstEnd = h.watch(first);
    first.write('hello');
    const a = await serviceSockets.nth(0);
    await new Promise<void>((resolve) => a.once('data', () => resolve()));
    a.resetAndDestroy();
    expect(h.sawReset(await firstEnd.closed)).toBe(true);

    const second = await h.connectTo(port);
    second.write('hello');
    const b = await serviceSockets.nth(1);
    const bEnd = h.watch(b);
    await new Promise<void>((resolve) => b.once('data', () => resolve()));
    second.resetAndDestroy();
    expect(h.sawReset(await bEnd.closed)).toBe(true);
  });

  it('resets the public client when the service refuses, and records why on the client', async () => {
    const closed = await h.startServer();
    const deadPort = closed.port;
    await closed.close();
    const { address, records: serverRecords } = await t.startServer();
    const { client, records } = t.startClient(address, { service: [deadPort], mux: true });
    const outcome = await t.publicOutcome(await t.publicPort(client));
    expect(outcome.outcome).toBe('reset');
    expect(await records.nth(0)).toMatchObject({ reason: 'connect-failed', code: 'ECONNREFUSED', engine: null });
    expect(await serverRecords.nth(0)).toMatchObject({ engine: 'js', reason: 'reset' });
  });

  it('serves a mux client and a client with data connections on one server at once', async () => {
    const service = await h.startHashServer({ replyBytes: (i) => 20 * KiB + i, when: 'end' });
    const { server, address, records } = await t.startServer();
    const muxed = t.startClient(address, { clientId: 'muxed', tunnels: [{ name: 'm', local: { host: h.HOST, port: service.port } }], mux: true });
    const plain = t.startClient(address, { clientId: 'plain', tunnels: [{ name: 'p', local: { host: h.HOST, port: service.port } }] });
    const ports = { m: await t.publicPort(muxed.client, 'm'), p: await t.publicPort(plain.client, 'p') };
    expect(server.sessions().map((s) => `${s.clientId}:${s.mux === true}`).sort()).toEqual(['muxed:true', 'plain:false']);
    const results = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const socket = await h.connectTo(i % 2 === 0 ? ports.m : ports.p);
        const got = h.hashUntilEnd(socket);
        const sent = await h.writeRandom(socket, 70 + i, 40 * KiB + i);
        return { sent, got: await got };
      }),
    );
    const seen = await Promise.all(results.map((_, i) => service.records.nth(i).then(async (r) => `${(await r.received).sha}/${(await r.sent).sha}`)));
    for (const r of results) expect(seen).toContain(`${r.sent.sha}/${r.got.sha}`);
    await records.nth(19);
    const engines = (tunnel: string) => new Set(records.items.filter((r) => r.tunnel === tunnel).map((r) => `${r.engine}/${r.reason}`));
    expect(engines('m')).toEqual(new Set(['js/eof']));
    expect(engines('p')).toEqual(new Set([`${expectedEngine}/eof`]));
  });
});

describe('the mux connection', () => {
  it('is one TCP connection next to the control connection, however many public clients there are', async () => {
    const service = await h.startEchoServer();
    const { address } = await t.startServer();
    const { relay, address: via, live } = await relayTo(address);
    const { client } = t.startClient(via, { service: [service.port], mux: true });
    const port = await t.publicPort(client);
    // 50 public clients, all open at once, each echoed before any is closed.
    const publics = await Promise.all(Array.from({ length: 50 }, () => h.connectTo(port)));
    await Promise.all(
      publics.map(async (socket, i) => {
        const line = `public ${i}\n`;
        socket.write(line);
        expect((await h.readBytes(socket, line.length)).toString()).toBe(line);
      }),
    );
    expect(client.activeConnections).toBe(50);
    expect(relay.pairs.items.length).toBe(2);
    expect(live()).toBe(2);
    for (const socket of publics) socket.end();
  });

  it('is dialled again when lost: its streams fail, the session stays, new public clients get through', async () => {
    const service = await h.startEchoServer();
    const { server, address, records } = await t.startServer();
    const { relay, address: via } = await relayTo(address);
    const { client } = t.startClient(via, { service: [service.port], mux: true });
    let logins = 0;
    client.on('connected', () => logins++);
    const port = await t.publicPort(client);
    const first = await h.connectTo(port);
    first.write('before');
    expect((await h.readBytes(first, 6)).toString()).toBe('before');
    // Pair 0 is the control connection (dialled first), pair 1 the mux connection (dialled when asked for).
    const muxPair = await relay.pairs.nth(1);
    const firstEnd = h.watch(first);
    cut(muxPair);
    // The stream that ran on it fails: its public client is reset, as when a data connection is lost.
    const observed = await firstEnd.closed;
    expect(h.sawReset(observed)).toBe(true);
    // The client dials a new one when the server asks (no new login), and it carries new streams.
    await relay.pairs.nth(2, 'a new mux connection', 10_000);
    const second = await h.connectTo(port);
    second.end('after');
    expect((await h.collectUntilEnd(second)).toString()).toBe('after');
    expect(logins).toBe(1);
    expect(server.sessions()).toHaveLength(1);
    expect(await records.find((r) => r.reason === 'eof')).toMatchObject({ engine: 'js', bytesUp: 5, bytesDown: 5 });
  });

  it('waits for a public client that came while there was none, then opens its stream with START, and resets it after the data timeout', async () => {
    // Long enough for the steps below to fit in one request's life on a loaded machine.
    const { server, address, records } = await t.startServer({ dataTimeout: 2500 });
    const raw = await t.rawLogin(address, { mux: true, tunnels: [{ name: 'web', port: 0 }] });
    // Any frame is a sign of life: the session outlives the heartbeat timeout.
    const beat = setInterval(() => raw.peer.send({ type: 'ping' }), 100);
    h.onCleanup(() => clearInterval(beat));
    const welcome = raw.peer.messages.items.find((m) => m.type === 'welcome');
    expect(welcome).toMatchObject({ pool: 0, mux: true });
    const connect = await raw.peer.next('connect');
    expect(connect).toEqual({ type: 'connect', id: connect.id, mux: true });
    const registered = raw.peer.messages.items.find((m) => m.type === 'registered');
    const port = registered?.type === 'registered' && registered.tunnels[0]!.ok ? registered.tunnels[0]!.port : 0;
    const rejected: string[] = [];
    server.on('rejected', (r) => rejected.push(`${r.kind}:${r.code}`));

    // Nobody has dialled: the public client waits, and after --data-timeout is reset.
    const late = await t.publicOutcome(port, 8000);
    expect(late.outcome).toBe('reset');
    expect(await records.nth(0)).toMatchObject({ reason: 'no-data-connection', streamId: null });
    // The request expired with it: the server asks again.
    const again = await raw.peer.messages.find((m) => m.type === 'connect' && m.id !== connect.id, 'a second connect', 5000);
    expect(again).toMatchObject({ mux: true });
    const id = (again as { id: number }).id;

    const waiting = await h.connectTo(port);
    waiting.write('early bytes');
    // A data connection may not take the mux connection's request; a data MAC does not open a mux connection.
    expect(parseDataReply((await t.received(await raw.dataConnection(id))).data)).toMatchObject({ type: 'error', name: 'unknown-request' });
    expect(parseMuxReply((await t.received(await dialMux(address, raw, id, 'data'))).data)).toMatchObject({ type: 'error', name: 'bad-mac' });
    expect(rejected).toEqual(['data:unknown-request', 'mux:bad-mac']);

    const socket = await dialMux(address, raw, id, 'mux');
    const reply = await readHeader(socket, parseMuxReply, { timeoutMs: 5000 });
    expect(reply).toMatchObject({ status: 'ok', type: 'mux' });
    const mux = createMuxSession(socket, { role: 'client' });
    socket.resume();
    h.onCleanup(() => mux.destroy());
    const stream = await new Promise<MuxStream>((resolve) => mux.once('stream', resolve));
    const head = await readHeader(stream as unknown as net.Socket, parseDataReply, { timeoutMs: 5000 });
    expect(head).toMatchObject({ type: 'start', tunnel: 'web', client: { host: h.HOST, port: waiting.localPort } });
    stream.resume();
    const got: Buffer[] = [];
    stream.on('data', (c: Buffer) => got.push(c));
    expect(await h.waitFor(() => Buffer.concat(got).toString() === 'early bytes', 5000)).toBe(true);
    stream.end('answer');
    waiting.end();
    expect((await h.collectUntilEnd(waiting)).toString()).toBe('answer');
    // One mux connection per session: another request id there is not.
    expect(parseMuxReply((await t.received(await dialMux(address, raw, id, 'mux'))).data)).toMatchObject({ type: 'error', name: 'unknown-request' });
  });

  it.runIf(t.hasOpenssl)('carries streams over TLS with a pinned certificate (skipped without openssl, which makes the certificate)', async () => {
    const cert = t.makeCert();
    try {
      const service = await h.startHashServer({ replyBytes: (i) => 64 * KiB + i, when: 'end' });
      const { address, records } = await t.startServer({ tls: { cert: cert.cert, key: cert.key } });
      const { relay, address: via } = await relayTo(address);
      const { client } = t.startClient(via, { service: [service.port], tls: { fingerprint: cert.fingerprint }, mux: true });
      const port = await t.publicPort(client);
      const results = await Promise.all(
        Array.from({ length: 10 }, async (_, i) => {
          const socket = await h.connectTo(port);
          const got = h.hashUntilEnd(socket);
          const sent = await h.writeRandom(socket, 40 + i, 64 * KiB + i * 1000);
          return { sent, got: await got };
        }),
      );
      const seen = await Promise.all(results.map((_, i) => service.records.nth(i).then(async (r) => `${(await r.received).sha}/${(await r.sent).sha}`)));
      for (const r of results) expect(seen).toContain(`${r.sent.sha}/${r.got.sha}`);
      await records.nth(9);
      expect(new Set(records.items.map((r) => `${r.engine}/${r.reason}`))).toEqual(new Set(['js/eof']));
      // Control and mux connection, both TLS (nothing of the protocol in the clear).
      expect(relay.pairs.items.length).toBe(2);
    } finally {
      fs.rmSync(cert.dir, { recursive: true, force: true });
    }
  });

  it('returns to the fd baseline after streams, a lost mux connection and closes', async () => {
    const service = await h.startEchoServer();
    const baseline = h.fdTable();
    const spliceEngine = spliceAvailable ? new SpliceEngine() : undefined;
    const { address } = await t.startServer({ spliceEngine });
    const { relay, address: via } = await relayTo(address);
    const { client } = t.startClient(via, { service: [service.port], mux: true, spliceEngine });
    const port = await t.publicPort(client);
    const traffic = (n: number) =>
      Promise.all(
        Array.from({ length: n }, async (_, i) => {
          const socket = await h.connectTo(port);
          socket.end(h.patternBytes(i, 20 * KiB));
          expect((await h.collectUntilEnd(socket)).length).toBe(20 * KiB);
        }),
      );
    await traffic(10);
    cut(await relay.pairs.nth(1));
    await relay.pairs.nth(2, 'a new mux connection', 10_000);
    await traffic(10);
    // One left open: closing the client and server ends it.
    const open = await h.connectTo(port);
    open.write('x');
    await h.readBytes(open, 1);
    await t.closeTunnels();
    await h.closeAll();
    await spliceEngine?.close();
    const settled = await h.waitFor(() => Object.keys(h.fdDiff(baseline, h.fdTable())).length === 0, 5000);
    expect(settled, `fds left: ${JSON.stringify(h.fdDiff(baseline, h.fdTable()))}`).toBe(true);
  });
});

describe('a mux client and a server that does not speak mux', () => {
  it('says mux in hello, and opens data connections when the server asks for those instead', async () => {
    const service = await h.startEchoServer();
    const hellos: unknown[] = [];
    const datas = new h.Arrivals<net.Socket>();
    const fake = await t.startFakeServer({
      onLogin: async (peer) => {
        hellos.push(peer.messages.items.find((m) => m.type === 'hello'));
        // What a server of before mux does: its welcome has no mux, and it asks for a data connection.
        peer.send({ type: 'connect', id: 1 });
      },
      onData: (socket) => datas.push(socket),
    });
    t.startClient({ host: h.HOST, port: fake.port }, { service: [service.port], mux: true });
    const data = await datas.nth(0, 'a data connection', 5000);
    expect(hellos[0]).toMatchObject({ type: 'hello', mux: true });
    // START for tunnel s0, then the bytes reach the service and its echo comes back.
    const start = Buffer.from([REPLY.START, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0x73, 0x30, 0, 0, 0]);
    data.write(start);
    data.end('echo me');
    expect((await h.collectUntilEnd(data)).toString()).toBe('echo me');
  });
});

/** Dials a mux connection by hand for request `id`, its MAC under the mux label or (wrongly) the data one. */
async function dialMux(address: { host: string; port: number }, raw: t.RawSession, id: number, label: 'mux' | 'data'): Promise<net.Socket> {
  const socket = h.track(net.connect({ host: address.host, port: address.port, allowHalfOpen: true }));
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.write(encodeDataHello(raw.sessionId, id, dataMac(raw.key, raw.sessionId, id, label), 'mux'));
  return socket;
}
