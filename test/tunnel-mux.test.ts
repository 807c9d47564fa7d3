// The tunnel client's mux connection (`mux: true`, `tunnel client --mux`): one yamux session to the
// server carries every public connection as a stream. Real sockets on loopback: a service, a
// client, a server, public clients; a relay between client and server counts and cuts the
// connections the client makes.
import net from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { defaultSpliceEngine } from '../src/index.js';
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
