// The tunnel end to end on loopback: a local service, a tunnel client, a tunnel server, and public
// clients connecting to the published port.
import net from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTunnelClient, createTunnelServer, defaultSpliceEngine, SpliceEngine, type TunnelClient } from '../src/index.js';
import * as h from './helpers.js';
import { KiB } from './helpers.js';
import * as t from './tunnel-helpers.js';
import { parseDataReply } from '../src/tunnel/protocol.js';
import { spliceAvailable, spliceSkipReason } from './policy.js';
import { freePort } from './cli-harness.js';

const expectedEngine = spliceSkipReason ? 'js' : 'splice';

afterEach(async () => {
  await t.closeTunnels();
  await h.closeAll();
});

beforeAll(() => {
  // The shared splice engine holds its own fds: made before any baseline is taken.
  if (spliceAvailable) defaultSpliceEngine();
});

// With the splice engine the streams run on the addon's connections (native) or on net.Socket
// (node), at the server and at the client: each of the four carries the same streams.
const dataPaths = spliceAvailable ? (['native', 'node'] as const) : (['auto'] as const);
const serverPaths = dataPaths;
const pathPairs = serverPaths.flatMap((server) => dataPaths.map((client) => [server, client] as const));

describe.each(pathPairs)('streams through the tunnel (server data path: %s, client data path: %s)', (serverPath, clientPath) => {
  beforeEach(() => {
    t.serverDefaults.dataPath = serverPath;
    t.clientDefaults.dataPath = clientPath;
  });
  afterEach(() => {
    delete t.serverDefaults.dataPath;
    delete t.clientDefaults.dataPath;
  });

  it(`carries 200 concurrent public connections, every byte intact both ways, on the ${expectedEngine} engine at both ends`, async () => {
    const N = 200;
    const sizeFor = (seed: number) => 16 * KiB + Math.floor(h.prng(seed)() * 240 * KiB);
    const service = await h.startHashServer({ replyBytes: (i) => sizeFor(5000 + i), when: 'connect' });
    // 200 public clients at once each wait for a data connection: on a loaded machine that takes
    // longer than the quick 1 s the other tests use.
    const { address, records: serverRecords } = await t.startServer({ dataTimeout: 15_000 });
    const { client, records: clientRecords } = t.startClient(address, { service: [service.port] });
    const port = await t.publicPort(client);

    const publics = await Promise.all(Array.from({ length: N }, () => h.connectTo(port)));
    const results = await Promise.all(
      publics.map(async (socket, i) => {
        const [sent, got] = await Promise.all([h.writeRandom(socket, 100 + i, sizeFor(100 + i)), h.hashUntilEnd(socket)]);
        return { sent, got };
      }),
    );
    // Each public connection maps to one service connection; match them by what they carried.
    const serverSide = await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const rec = await service.records.nth(i);
        return { received: await rec.received, sent: await rec.sent };
      }),
    );
    const upstream = new Set(serverSide.map((s) => `${s.received.sha}/${s.sent.sha}`));
    const problems = results.filter((r) => !upstream.has(`${r.sent.sha}/${r.got.sha}`)).length;
    expect(problems, 'public connections whose bytes did not arrive intact both ways').toBe(0);

    await serverRecords.nth(N - 1, 'all server records', 20_000);
    await clientRecords.nth(N - 1, 'all client records', 20_000);
    expect(serverRecords.items.filter((r) => r.reason !== 'eof' || r.engine !== expectedEngine)).toEqual([]);
    expect(clientRecords.items.filter((r) => r.reason !== 'eof' || r.engine !== expectedEngine)).toEqual([]);
    const up = (rs: { bytesUp: number }[]) => rs.reduce((n, r) => n + r.bytesUp, 0);
    const total = results.reduce((n, r) => n + r.sent.bytes, 0);
    expect(up(serverRecords.items)).toBe(total);
    expect(up(clientRecords.items)).toBe(total);
    expect(new Set(serverRecords.items.map((r) => r.streamId)).size).toBe(N);
  }, 60_000);

  it('keeps half-close: a request ended by FIN still gets the whole reply', async () => {
    const service = await h.startHashServer({ replyBytes: 512 * KiB, when: 'end' });
    const { address } = await t.startServer();
    const { client } = t.startClient(address, { service: [service.port] });
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
    const { client } = t.startClient(address, { service: [service.port] });
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

  it('delivers what a public client sent before the data path was ready, first and in order', async () => {
    const service = await h.startHashServer({ replyBytes: 1000, when: 'end' });
    const { address, records } = await t.startServer();
    const { client } = t.startClient(address, { service: [service.port] });
    const port = await t.publicPort(client);
    // Written and ended at once, before any data connection exists (pool 0: the server must ask for one).
    const early = h.patternBytes(4, 96 * KiB);
    const socket = h.track(net.connect({ host: h.HOST, port, allowHalfOpen: true }));
    socket.end(early);
    const reply = await h.collectUntilEnd(socket);
    const rec = await service.records.nth(0);
    expect((await rec.received).sha).toBe(h.sha256(early));
    expect(reply).toHaveLength(1000);
    expect((await records.nth(0)).waitMs).toBeGreaterThan(0);
  });

  it('keeps a pool of authenticated data connections warm, and refills it', async () => {
    const service = await h.startEchoServer();
    const { server, address, records } = await t.startServer();
    let opened = 0;
    const rejected: unknown[] = [];
    server.on('rejected', (r) => rejected.push(r));
    const { client } = t.startClient(address, { service: [service.port], pool: 3 });
    client.on('connectionOpen', () => opened++);
    const port = await t.publicPort(client);
    for (let i = 0; i < 5; i++) {
      const socket = await h.connectTo(port);
      socket.end(`ping ${i}`);
      expect((await h.collectUntilEnd(socket)).toString()).toBe(`ping ${i}`);
    }
    expect(opened).toBe(5);
    const waits = (await Promise.all([0, 1, 2, 3, 4].map((i) => records.nth(i)))).map((r) => r.waitMs);
    // Taken from the pool: no round trip to the client while the public client waits.
    expect(Math.min(...waits)).toBeLessThan(5);
    expect(rejected).toEqual([]);
  });

  it('asks a client that reads count for its pool in one connect, carries streams on it, refills it, and lets each id in once', async () => {
    const { address } = await t.startServer();
    const raw = await t.rawLogin(address, { pool: 8, batch: true, tunnels: [{ name: 'web', port: 0 }] });
    const registered = raw.peer.messages.items.find((m) => m.type === 'registered');
    const port = registered?.type === 'registered' && registered.tunnels[0]!.ok ? registered.tunnels[0]!.port : 0;
    expect(port).toBeGreaterThan(0);
    const connects = () => raw.peer.messages.items.filter((m) => m.type === 'connect');
    expect(await raw.peer.next('connect')).toEqual({ type: 'connect', id: 1, count: 8 });
    // Each data connection records what the server sends it: START, then the public client's bytes.
    const datas = await Promise.all(Array.from({ length: 8 }, (_, i) => raw.dataConnection(1 + i)));
    const got = datas.map(() => [] as Buffer[]);
    datas.forEach((d, i) => d.on('data', (chunk: Buffer) => got[i]!.push(chunk)));
    let index = -1;
    for (let n = 0; n < 4; n++) {
      const payload = h.patternBytes(60 + n, 1000 + n);
      const socket = await h.connectTo(port);
      socket.write(payload);
      // START and the payload reach one of the pooled data connections; its answer reaches the public client.
      expect(await h.waitFor(() => (index = got.findIndex((parts) => Buffer.concat(parts).subarray(-payload.length).equals(payload))) >= 0, 5000)).toBe(true);
      const answer = h.collectUntilEnd(socket);
      datas[index]!.end(`answer ${n}`);
      socket.end();
      expect((await answer).toString()).toBe(`answer ${n}`);
    }
    // Refilled (when and by how many: the request policy test in tunnel-protocol.test.ts), from id 9 on.
    expect(await h.waitFor(() => connects().length >= 2, 5000)).toBe(true);
    expect(connects()[1]).toMatchObject({ type: 'connect', id: 9 });
    // The id of a data connection that carried a stream is used up.
    const again = t.received(await raw.dataConnection(index + 1));
    expect(parseDataReply((await again).data)).toMatchObject({ status: 'ok', type: 'error', name: 'unknown-request' });
  });

  it('asks a client that does not read count for one data connection per connect, as before', async () => {
    const { address } = await t.startServer();
    const raw = await t.rawLogin(address, { pool: 4, tunnels: [{ name: 'web', port: 0 }] });
    expect(await h.waitFor(() => raw.peer.messages.items.filter((m) => m.type === 'connect').length === 4, 5000)).toBe(true);
    expect(raw.peer.messages.items.filter((m) => m.type === 'connect')).toEqual([1, 2, 3, 4].map((id) => ({ type: 'connect', id })));
  });

  it('resets the public client when the service refuses, and logs why on the client', async () => {
    const closed = await h.startServer();
    const deadPort = closed.port;
    await closed.close();
    const { address } = await t.startServer();
    const { client, records } = t.startClient(address, { service: [deadPort] });
    const outcome = await t.publicOutcome(await t.publicPort(client));
    expect(outcome.outcome).toBe('reset');
    expect(await records.nth(0)).toMatchObject({ reason: 'connect-failed', code: 'ECONNREFUSED' });
  });
});

// The server's side of every test below runs on both its data paths: the acceptor's (native)
// and net.Server's (node).
describe.each(serverPaths)('server data path: %s', (serverPath) => {
  beforeEach(() => {
    t.serverDefaults.dataPath = serverPath;
  });
  afterEach(() => {
    delete t.serverDefaults.dataPath;
  });

  describe('connection records', () => {
    /** A server and a client with nothing listening to their events, logging at `level` into `lines`. */
    async function unwatched(level: 'info' | 'silent', servicePort: number) {
      const lines: Record<string, unknown>[] = [];
      const sink = new Writable({
        write(chunk: Buffer, _encoding, done) {
          for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
          done();
        },
      });
      const logger = pino({ level, base: undefined }, sink);
      const server = createTunnelServer({ listen: { host: h.HOST, port: 0 }, token: t.TOKEN, ...t.QUICK_SERVER, logger });
      h.onCleanup(() => void server.close());
      const address = await server.listen();
      const client = createTunnelClient({ server: address, token: t.TOKEN, clientId: 'quiet', tunnels: [{ name: 'web', local: { host: h.HOST, port: servicePort } }], reconnect: t.QUICK_RECONNECT, logger });
      h.onCleanup(() => void client.close());
      client.start();
      const port = (await client.ready(10_000)).find((x) => x.name === 'web')!.remote!.port;
      return { lines, port, close: () => Promise.all([client.close(), server.close()]) };
    }

    it('carry the same streams whether or not anything takes the records, and say who, where and how much once logged', async () => {
      const service = await h.startHashServer({ replyBytes: 40 * KiB, when: 'connect' });
      for (const level of ['silent', 'info'] as const) {
        const tunnel = await unwatched(level, service.port);
        for (let i = 0; i < 3; i++) {
          const socket = await h.connectTo(tunnel.port);
          const [sent, got] = await Promise.all([h.writeRandom(socket, 700 + i, 30 * KiB + i), h.hashUntilEnd(socket)]);
          const rec = await service.records.nth(service.records.items.length - 1);
          expect(await rec.received).toEqual(sent);
          expect(got).toEqual(await rec.sent);
        }
        if (level === 'silent') {
          expect(tunnel.lines).toEqual([]);
        } else {
          const closed = (field: 'public' | 'local') => tunnel.lines.filter((l) => l.msg === 'connection closed' && field in l);
          expect(await h.waitFor(() => closed('public').length >= 3 && closed('local').length >= 3, 5000), 'three records on each side').toBe(true);
          const serverLines = closed('public');
          expect(serverLines.map((l) => l.bytesUp).sort()).toEqual([30 * KiB, 30 * KiB + 1, 30 * KiB + 2]);
          for (const l of serverLines) {
            expect(l).toMatchObject({ tunnel: 'web', public: `${h.HOST}:${tunnel.port}`, client: expect.stringMatching(/^127\.0\.0\.1:\d+$/), clientId: 'quiet', reason: 'eof', bytesDown: 40 * KiB });
            const other = closed('local').find((c) => c.streamId === l.streamId);
            expect(other).toMatchObject({ tunnel: 'web', local: `${h.HOST}:${service.port}`, client: l.client, reason: 'eof', bytesUp: l.bytesUp, bytesDown: 40 * KiB });
          }
        }
        await tunnel.close();
      }
    });
  });

  describe('registration', () => {
    it('publishes on the port asked for, refuses one outside --ports or already taken, and says why', async () => {
      const service = await h.startEchoServer();
      const probe = await h.startServer();
      const free = probe.port;
      await probe.close();
      const { address, server } = await t.startServer({ ports: [{ from: free, to: free }] });
      const refusals: string[] = [];
      server.on('tunnelRefused', (r) => refusals.push(r.code));
      const a = t.startClient(address, { clientId: 'a', tunnels: [{ name: 'web', local: { host: h.HOST, port: service.port }, remotePort: free }] });
      expect(await t.publicPort(a.client, 'web')).toBe(free);

      const b = t.startClient(address, {
        clientId: 'b',
        tunnels: [
          { name: 'same', local: { host: h.HOST, port: service.port }, remotePort: free },
          { name: 'outside', local: { host: h.HOST, port: service.port }, remotePort: free === 65535 ? free - 1 : free + 1 },
          { name: 'any', local: { host: h.HOST, port: service.port }, remotePort: 0 },
        ],
      });
      const seen = new Map<string, { code: string; message: string }>();
      b.client.on('tunnelRefused', (r) => seen.set(r.name, r));
      await h.waitFor(() => seen.size >= 3, 5000);
      expect(seen.get('same')).toMatchObject({ code: 'port-in-use', message: expect.stringMatching(/taken by another tunnel/) });
      expect(seen.get('outside')).toMatchObject({ code: 'port-not-allowed', message: expect.stringMatching(/outside the ports/) });
      expect(seen.get('any')).toMatchObject({ code: 'no-free-port' });
      expect(b.client.tunnels().map((x) => x.state)).toEqual(['refused', 'refused', 'refused']);

      // Once a frees the port, b's retry of the taken port succeeds on its own.
      await a.client.close();
      t.forget(a.client);
      const up = await new Promise<string>((resolve) => b.client.once('tunnelUp', ({ name }) => resolve(name)));
      expect(['same', 'any']).toContain(up);
      expect(refusals).toContain('port-in-use');
    });

    it('refuses a wrong token, keeps retrying with backoff, never exits', async () => {
      const { server, address } = await t.startServer();
      const rejected: string[] = [];
      server.on('rejected', (r) => rejected.push(r.code));
      const { client } = t.startClient(address, { token: 'wrong-token-wrong-token', service: [1] });
      const failures: { code: string; delayMs: number }[] = [];
      client.on('connectFailed', (f) => failures.push(f));
      await h.waitFor(() => failures.length >= 3, 5000);
      expect(failures[0].code).toBe('auth-failed');
      expect(failures[2].delayMs).toBeGreaterThan(failures[0].delayMs);
      expect(rejected.filter((c) => c === 'auth-failed').length).toBeGreaterThanOrEqual(3);
      expect(server.sessions()).toEqual([]);
    });

    it('a client does not register with a server that cannot prove it knows the token', async () => {
      // An impostor that lets anyone in: its welcome carries a proof made with another token.
      let registered = false;
      const impostor = await t.startFakeServer({ token: 'impostor-token-impostor', onLogin: () => void (registered = true) });
      const { client } = t.startClient({ host: h.HOST, port: impostor.port }, { service: [1] });
      const failure = await new Promise<{ code: string; message: string }>((resolve) => client.once('connectFailed', resolve));
      expect(failure).toMatchObject({ code: 'server-auth-failed', message: expect.stringMatching(/does not know the token/) });
      expect(client.connected).toBe(false);
      await h.sleep(100);
      expect(registered).toBe(false);
    });

    it('a real server refuses a client with another token before proving anything itself', async () => {
      const other = await t.startServer({ token: 'another-token-another' });
      const { client } = t.startClient(other.address, { service: [1] });
      const failure = await new Promise<{ code: string }>((resolve) => client.once('connectFailed', resolve));
      expect(failure.code).toBe('auth-failed');
      expect(other.server.tunnels()).toEqual([]);
    });
  });

  describe('when the client is away', () => {
    it('resets public clients (no data connection within the timeout), and refuses them once the port is freed', async () => {
      const { address, records, server } = await t.startServer({ dataTimeout: 400 });
      // Logged in and registered, but never opens a data connection: a client that hangs.
      const raw = await t.rawLogin(address, { tunnels: [{ name: 'web', port: 0 }] });
      const port = server.tunnels()[0].port;
      const outcome = await t.publicOutcome(port);
      expect(outcome).toMatchObject({ outcome: 'reset' });
      expect(outcome.ms).toBeGreaterThan(300);
      expect(await records.nth(0)).toMatchObject({ reason: 'no-data-connection', tunnel: 'web' });
      // The raw client answers no pings: the server drops it and frees the port.
      await raw.peer.closed;
      expect(server.tunnels()).toEqual([]);
      expect(await t.publicOutcome(port)).toMatchObject({ outcome: 'reset', code: 'ECONNREFUSED' });
    });

    it('notices a dead client within the heartbeat timeout, and a dead server likewise', async () => {
      const { address, server } = await t.startServer({ heartbeatInterval: 100, heartbeatTimeout: 500 });
      const raw = await t.rawLogin(address, { tunnels: [{ name: 'web', port: 0 }] });
      const started = performance.now();
      const closed = await new Promise<{ code: string }>((resolve) => server.once('sessionClose', resolve));
      expect(closed.code).toBe('heartbeat-timeout');
      expect(performance.now() - started).toBeLessThan(5000);
      await raw.peer.closed;

      // A server that logs the client in and then falls silent: no pings, no pongs.
      const silent = await t.startFakeServer({ heartbeat: { interval: 100, timeout: 500 } });
      const { client } = t.startClient({ host: h.HOST, port: silent.port }, { service: [1] });
      await new Promise((resolve) => client.once('connected', resolve));
      const loggedIn = performance.now();
      const gone = await new Promise<{ code: string }>((resolve) => client.once('disconnected', resolve));
      expect(gone.code).toBe('heartbeat-timeout');
      expect(performance.now() - loggedIn).toBeLessThan(5000);
      // And it tries again.
      expect(await h.waitFor(() => silent.logins() >= 2, 5000)).toBe(true);
    });

    it('keeps a session whose own process stalled past the heartbeat timeout, and serves the public client that came meanwhile', async () => {
      const service = await h.startHashServer({ replyBytes: 64 * KiB, when: 'connect' });
      // The public client may wait for its data connection longer than the stall: only the heartbeat is under test.
      const { server, address, records } = await t.startServer({ dataTimeout: 15_000 });
      const { client, records: clientRecords } = t.startClient(address, { service: [service.port] });
      const port = await t.publicPort(client);
      const [session] = server.sessions();
      const disconnects: { code: string }[] = [];
      client.on('disconnected', (e) => disconnects.push(e));

      const socket = await h.connectTo(port);
      // Server, client and service share this process, as a busy one would share its loop with a burst
      // of synchronous work: nobody reads a ping while it is blocked, though every peer is alive.
      blockEventLoop(3 * t.QUICK_SERVER.heartbeatTimeout);
      const [sent, got] = await Promise.all([h.writeRandom(socket, 1, 64 * KiB), h.hashUntilEnd(socket)]);
      const rec = await service.records.nth(0);
      expect(await rec.received).toEqual(sent);
      expect(got).toEqual(await rec.sent);
      expect(await records.nth(0)).toMatchObject({ reason: 'eof', engine: expectedEngine });
      expect(await clientRecords.nth(0)).toMatchObject({ reason: 'eof', engine: expectedEngine });
      expect(disconnects).toEqual([]);
      expect(server.sessions()).toEqual([session]);
    });

    it('gives up a login that stalls, and tries again', async () => {
      const stalled = net.createServer((socket) => {
        h.track(socket);
        socket.on('error', () => {});
        socket.resume();
      });
      const port = await h.listen(stalled);
      const { client } = t.startClient({ host: h.HOST, port }, { service: [1], handshakeTimeout: 300 });
      const failure = await new Promise<{ code: string }>((resolve) => client.once('connectFailed', resolve));
      expect(failure.code).toBe('handshake-timeout');
    });
  });

  describe('recovery', () => {
    it('comes back by itself after a server restart, on the same port', async () => {
      const service = await h.startEchoServer();
      const first = await t.startServer();
      const listen = first.address;
      const { client } = t.startClient(listen, { service: [service.port] });
      const port = await t.publicPort(client);
      const down = new Promise((resolve) => client.once('disconnected', resolve));
      await first.server.close();
      await down;
      expect(await t.publicOutcome(port)).toMatchObject({ outcome: 'reset', code: 'ECONNREFUSED' });

      const second = await t.startServer({ listen });
      await new Promise((resolve) => client.once('tunnelUp', resolve));
      const again = (await client.ready()).find((x) => x.name === 's0')!.remote!.port;
      const socket = await h.connectTo(again);
      socket.end('after restart');
      expect((await h.collectUntilEnd(socket)).toString()).toBe('after restart');
      expect(second.server.sessions()).toHaveLength(1);
    });

    it('frees a session\'s ports at once, while its streams go on', async () => {
      const service = await h.startEchoServer();
      // The JS engine keeps Node's sockets for the whole stream: the case where a listener's close
      // lingers. The native path's streams are the engine's fds, outside any listener.
      const { address, server } = await t.startServer(serverPath === 'native' ? {} : { engine: 'js' });
      const a = t.startClient(address, { clientId: 'box-2', service: [service.port], engine: 'js', reconnect: { ...t.QUICK_RECONNECT, maxDelay: 60_000 } });
      const port = await t.publicPort(a.client);
      const stream = await h.connectTo(port);
      stream.write('one ');
      await h.readBytes(stream, 4);
      // The same client id logs in again elsewhere: the old session goes, its stream stays.
      const b = t.startClient(address, { clientId: 'box-2', service: [service.port] });
      const started = performance.now();
      expect(await t.publicPort(b.client)).toBe(port);
      expect(performance.now() - started).toBeLessThan(20_000); // not the old session's 60 s backoff
      expect(server.sessions()).toHaveLength(1);
      stream.end('two');
      expect((await h.collectUntilEnd(stream)).toString()).toBe('two');
    });

    it('a restarted client replaces its stale session and gets its port back', async () => {
      const service = await h.startEchoServer();
      const { address, server } = await t.startServer({ heartbeatTimeout: 10_000, heartbeatInterval: 1000 });
      // The stale self: a session that is still open on the server (its process hung, or its network went).
      const stale = await t.rawLogin(address, { clientId: 'box-1', tunnels: [{ name: 's0', port: 0 }] });
      const stalePort = server.tunnels()[0].port;
      const { client } = t.startClient(address, { clientId: 'box-1', service: [service.port] });
      expect(await t.publicPort(client)).toBe(stalePort);
      const said = await stale.peer.next('error');
      expect(said.code).toBe('replaced');
      expect(server.sessions().map((s) => s.clientId)).toEqual(['box-1']);
      const socket = await h.connectTo(stalePort);
      socket.end('hello again');
      expect((await h.collectUntilEnd(socket)).toString()).toBe('hello again');
    });
  });

  describe('bad input', () => {
    it('answers garbage, oversized frames and bad data headers with an error and a close, and keeps serving', async () => {
      const service = await h.startEchoServer();
      const { address, server } = await t.startServer();
      const rejected: { kind: string; code: string }[] = [];
      server.on('rejected', (r) => rejected.push({ kind: r.kind, code: r.code }));
      const raw = async (bytes: Buffer) => {
        const socket = h.track(net.connect({ host: h.HOST, port: address.port }));
        const result = t.received(socket);
        socket.on('connect', () => socket.write(bytes));
        return result;
      };
      const frameOf = (text: string) => {
        const body = Buffer.from(text);
        const head = Buffer.alloc(4);
        head.writeUInt32BE(body.length, 0);
        return Buffer.concat([head, body]);
      };
      const preamble = Buffer.from('SPTN\x01C\x00\x00', 'latin1');
      /** The error message among the frames a connection got (a ping before login is answered with a pong). */
      const errorFrame = (data: Buffer) => {
        for (let pos = 0; pos + 4 <= data.length; pos += 4 + data.readUInt32BE(pos)) {
          const message = JSON.parse(data.subarray(pos + 4, pos + 4 + data.readUInt32BE(pos)).toString());
          if (message.type === 'error') return message;
        }
        return undefined;
      };

      // Not our protocol at all.
      const http = await raw(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      expect(http.data).toHaveLength(0);
      // A control connection with a garbage message, with a frame over the limit, with an unknown version.
      expect(errorFrame((await raw(Buffer.concat([preamble, frameOf('{not json')]))).data)).toMatchObject({ type: 'error', code: 'bad-message' });
      expect(errorFrame((await raw(Buffer.concat([preamble, frameOf('{"type":"hello"}')]))).data)).toMatchObject({ code: 'bad-message', message: expect.stringMatching(/nonce/) });
      expect(errorFrame((await raw(Buffer.concat([preamble, Buffer.from([0x7f, 0xff, 0xff, 0xff])]))).data)).toMatchObject({ code: 'frame-too-large' });
      expect(errorFrame((await raw(Buffer.from('SPTN\x07C\x00\x00', 'latin1'))).data)).toMatchObject({ code: 'unsupported-version', message: expect.stringMatching(/supported: 1/) });
      // A message out of turn.
      expect(errorFrame((await raw(Buffer.concat([preamble, frameOf('{"type":"ping"}'), frameOf('{"type":"register","tunnels":[{"name":"x","port":1}]}')]))).data)).toMatchObject({ code: 'unexpected-message' });

      // Data connections that do not authenticate.
      const session = await t.rawLogin(address, { clientId: 'raw', tunnels: [{ name: 'web', port: 0 }] });
      const dataReply = async (hello: Buffer) => (await raw(hello)).data;
      const { encodeDataHello, dataMac, parseDataReply } = await import('../src/tunnel/protocol.js');
      const reply = (data: Buffer) => parseDataReply(data);
      expect(reply(await dataReply(encodeDataHello(Buffer.alloc(16, 1), 1, Buffer.alloc(32))))).toMatchObject({ type: 'error', name: 'unknown-session' });
      expect(reply(await dataReply(encodeDataHello(session.sessionId, 1, Buffer.alloc(32))))).toMatchObject({ type: 'error', name: 'bad-mac' });
      expect(reply(await dataReply(encodeDataHello(session.sessionId, 99, dataMac(session.key, session.sessionId, 99))))).toMatchObject({ type: 'error', name: 'unknown-request', message: expect.stringMatching(/99/) });
      expect(reply((await raw(Buffer.from('SPTN\x02D\x00\x00', 'latin1'))).data)).toMatchObject({ type: 'error', name: 'unsupported-version' });

      expect(rejected).toEqual(
        expect.arrayContaining([
          { kind: 'unknown', code: 'bad-magic' },
          { kind: 'control', code: 'bad-message' },
          { kind: 'control', code: 'frame-too-large' },
          { kind: 'control', code: 'unsupported-version' },
          { kind: 'data', code: 'unknown-session' },
          { kind: 'data', code: 'bad-mac' },
          { kind: 'data', code: 'unknown-request' },
        ]),
      );

      // And the server still serves a real client.
      const { client } = t.startClient(address, { service: [service.port] });
      const socket = await h.connectTo(await t.publicPort(client));
      socket.end('still here');
      expect((await h.collectUntilEnd(socket)).toString()).toBe('still here');
    });

    it('a client resets a stream for a tunnel it does not have, and survives a garbage server', async () => {
      const { encodeStart } = await import('../src/tunnel/protocol.js');
      // A server that knows the token, logs the client in, then names a tunnel the client never registered.
      const dataSockets = new h.Arrivals<Promise<{ data: Buffer; error?: string }>>();
      const fake = await t.startFakeServer({
        onData: (socket) => {
          socket.write(encodeStart(1, 'nope', { host: '192.0.2.7', port: 1234 }));
          socket.write('early bytes');
          dataSockets.push(t.received(socket));
        },
        onLogin: async (peer, login) => {
          if (login !== 1) return;
          peer.send({ type: 'connect', id: 1 });
          await dataSockets.nth(0);
          // Then garbage on the control connection.
          peer.socket.write(Buffer.from([0, 0, 0, 5, 0x7b, 0x7b, 0x7b, 0x7b, 0x7b]));
        },
      });
      const service = await h.startEchoServer();
      const { client, records } = t.startClient({ host: h.HOST, port: fake.port }, { service: [service.port] });
      const disconnected = new Promise<{ code: string }>((resolve) => client.once('disconnected', resolve));
      expect(await records.nth(0)).toMatchObject({ tunnel: 'nope', reason: 'unknown-tunnel', client: '192.0.2.7:1234', engine: null });
      expect((await dataSockets.nth(0)).error).toBe('ECONNRESET');
      expect(service.conns.items).toHaveLength(0);
      expect(await disconnected).toMatchObject({ code: 'bad-message' });
      // It logs in again by itself.
      expect(await h.waitFor(() => fake.logins() === 2, 5000)).toBe(true);
    });
  });

  describe('resources', () => {
    it('returns to the fd baseline after streams, client restarts, a server restart and closes', async () => {
      const service = await h.startEchoServer();
      const baseline = h.fdTable();
      // An engine of its own, closed at the end: the shared one keeps idle pipes pooled for the next pair.
      const spliceEngine = spliceAvailable ? new SpliceEngine() : undefined;
      const first = await t.startServer({ spliceEngine });
      const traffic = async (port: number, n: number) =>
        Promise.all(
          Array.from({ length: n }, async (_, i) => {
            const socket = await h.connectTo(port);
            socket.end(h.patternBytes(i, 20 * KiB));
            expect((await h.collectUntilEnd(socket)).length).toBe(20 * KiB);
          }),
        );
      // Clients come and go under one id (each replacing or succeeding the last), with a pool each.
      // A replaced client that stayed would come back and take the session again in the middle of
      // the next round's traffic, so it goes once its successor is up.
      let replaced: TunnelClient | undefined;
      for (let round = 0; round < 5; round++) {
        const { client } = t.startClient(first.address, { clientId: 'churn', service: [service.port], pool: 2, spliceEngine });
        const port = await t.publicPort(client);
        if (replaced) {
          await replaced.close();
          t.forget(replaced);
        }
        await traffic(port, 10);
        if (round % 2 === 1) {
          await client.close();
          t.forget(client);
          replaced = undefined;
        } else {
          replaced = client;
        }
      }
      // And the server restarts under a client that stays.
      await first.server.close();
      const second = await t.startServer({ listen: first.address, spliceEngine });
      const { client } = t.startClient(second.address, { clientId: 'stays', service: [service.port], spliceEngine });
      await traffic(await t.publicPort(client), 10);
      // The replaced 'churn' clients still run: one of them logs in to the new server too.
      expect(await h.waitFor(() => second.server.sessions().some((s) => s.clientId === 'churn'), 5000)).toBe(true);
      await t.closeTunnels();
      await h.closeAll();
      if (spliceEngine) expect(spliceEngine.stats()).toMatchObject({ pairs: 0, pipesInUse: 0 });
      await spliceEngine?.close();
      const settled = await h.waitFor(() => Object.keys(h.fdDiff(baseline, h.fdTable())).length === 0, 5000);
      expect(settled, `fds left: ${JSON.stringify(h.fdDiff(baseline, h.fdTable()))}`).toBe(true);
    });
  });

  describe('reload and close', () => {
    it('reconfigure(): a new registration gets the new ports, a running stream goes on, the data path stays', async () => {
      const service = await h.startEchoServer();
      const [portA, portB] = [await freePort(), await freePort()];
      const { address, server } = await t.startServer({ ports: [{ from: portA, to: portA }] });
      const a = t.startClient(address, { clientId: 'first', service: [service.port] });
      expect(await t.publicPort(a.client)).toBe(portA);
      const stream = await h.connectTo(portA);
      stream.write('before ');
      await h.readBytes(stream, 7);
      server.reconfigure({ listen: address, token: t.TOKEN, ...t.QUICK_SERVER, ports: [{ from: portB, to: portB }], dataPath: serverPath === 'native' ? 'node' : 'native' });
      expect(server.dataPath).toBe(serverPath === 'auto' ? server.dataPath : serverPath);
      const b = t.startClient(address, { clientId: 'second', service: [service.port] });
      expect(await t.publicPort(b.client)).toBe(portB);
      const other = await h.connectTo(portB);
      other.end('new port');
      expect((await h.collectUntilEnd(other)).toString()).toBe('new port');
      stream.end('after');
      expect((await h.collectUntilEnd(stream)).toString()).toBe('after');
    });

    it('close(grace): a running stream carries bytes during the grace, then ends; new public clients are refused at once', async () => {
      const service = await h.startEchoServer();
      const { address, server } = await t.startServer();
      const { client } = t.startClient(address, { service: [service.port], reconnect: { ...t.QUICK_RECONNECT, maxDelay: 60_000 } });
      const port = await t.publicPort(client);
      const stream = await h.connectTo(port);
      stream.write('one ');
      await h.readBytes(stream, 4);
      const closed = server.close(1500);
      // The published port stops at once.
      let refused = false;
      for (let i = 0; i < 40 && !refused; i++) {
        refused = await h.connectTo(port).then((s) => (s.destroy(), false), () => true);
        if (!refused) await h.sleep(50);
      }
      expect(refused, 'the published port still accepts during close()').toBe(true);
      stream.write('two ');
      expect((await h.readBytes(stream, 4)).toString()).toBe('two ');
      const over = h.collectUntilEnd(stream).then(() => 'ended', () => 'reset');
      await closed;
      expect(await Promise.race([over, h.sleep(3000).then(() => 'still open')])).not.toBe('still open');
      expect(server.activeConnections).toBe(0);
    });
  });
});

/** Blocks this thread as a burst of synchronous work would, without spinning a core. */
function blockEventLoop(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
