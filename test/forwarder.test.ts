// The Forwarder (what `splicer forward` runs) as a library: bytes intact, one record per connection
// for whoever takes it, none made for nobody, and close(grace) ending what outlives the grace.
import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Forwarder, type ConnectionRecord } from '../src/index.js';
import * as h from './helpers.js';
import { KiB } from './helpers.js';
import { spliceSkipReason } from './policy.js';

const expectedEngine = spliceSkipReason ? 'js' : 'splice';

afterEach(h.closeAll);

// With the addon: both accept paths (the addon's, no net.Socket; and net.Server's). Without: net.Server.
const ACCEPT_PATHS = spliceSkipReason ? (['node'] as const) : (['native', 'node'] as const);
let accept: 'native' | 'node' = 'node';

async function startForwarder(to: number): Promise<{ forwarder: Forwarder; port: number }> {
  const forwarder = new Forwarder({ listen: [{ host: h.HOST, port: 0 }], to: { host: h.HOST, port: to }, accept });
  h.onCleanup(() => void forwarder.close());
  expect(forwarder.acceptPath).toBe(accept);
  const [{ port }] = await forwarder.listen();
  return { forwarder, port };
}

/** One connection through `port`: `bytes` up, the service's reply back, both hashed. */
async function exchange(port: number, service: h.HashServer, seed: number, bytes: number): Promise<net.Socket> {
  const socket = await h.connectTo(port);
  const index = service.records.items.length;
  const [sent, got] = await Promise.all([h.writeRandom(socket, seed, bytes), h.hashUntilEnd(socket)]);
  const rec = await service.records.nth(index);
  expect(await rec.received).toEqual(sent);
  expect(got).toEqual(await rec.sent);
  return socket;
}

describe.each(ACCEPT_PATHS)('Forwarder, %s accept path', (path) => {
  beforeEach(() => {
    accept = path;
  });

  it('carries the same bytes with nobody taking records, and reports every connection to a listener', async () => {
    const service = await h.startHashServer({ replyBytes: 48 * KiB, when: 'connect' });
    const { forwarder, port } = await startForwarder(service.port);
    for (let i = 0; i < 3; i++) await exchange(port, service, 900 + i, 20 * KiB + i);
    expect(await h.waitFor(() => forwarder.activeConnections === 0, 5000)).toBe(true);

    const records: ConnectionRecord[] = [];
    forwarder.on('connection', (r) => records.push(r));
    const sockets = [];
    for (let i = 0; i < 3; i++) sockets.push(await exchange(port, service, 910 + i, 30 * KiB + i));
    expect(await h.waitFor(() => records.length === 3, 5000)).toBe(true);
    for (const [i, r] of records.entries()) {
      expect(r).toMatchObject({
        client: `${h.HOST}:${h.portsOf(sockets[i])!.local}`,
        upstream: `${h.HOST}:${service.port}`,
        engine: expectedEngine,
        bytesUp: 30 * KiB + i,
        bytesDown: 48 * KiB,
        reason: 'eof',
      });
      expect(r.code).toBeUndefined();
    }
    expect(forwarder.activeConnections).toBe(0);
  });

  it('resets the client and reports connect-failed when the upstream refuses', async () => {
    const gone = await h.startServer();
    const closedPort = gone.port;
    await gone.close();
    const { forwarder, port } = await startForwarder(closedPort);
    const records: ConnectionRecord[] = [];
    forwarder.on('connection', (r) => records.push(r));
    const socket = await h.connectTo(port);
    const seen = h.watch(socket);
    expect(await h.waitFor(() => records.length === 1, 5000)).toBe(true);
    expect(records[0]).toMatchObject({ engine: null, reason: 'connect-failed', code: 'ECONNREFUSED', bytesUp: 0, bytesDown: 0 });
    expect(h.sawReset(await seen.closed)).toBe(true);
  });

  it('close(grace) lets a pair run for the grace, then ends it (aborted), and counts it gone', async () => {
    const service = await h.startServer(() => {});
    const { forwarder, port } = await startForwarder(service.port);
    const records: ConnectionRecord[] = [];
    forwarder.on('connection', (r) => records.push(r));
    const socket = await h.connectTo(port);
    const seen = h.watch(socket);
    expect(await h.waitFor(() => forwarder.activeConnections === 1, 5000)).toBe(true);
    const started = performance.now();
    await h.within(forwarder.close(300), 5000, 'close(300)');
    expect(performance.now() - started).toBeGreaterThanOrEqual(250);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ engine: expectedEngine, reason: 'aborted' });
    expect(forwarder.activeConnections).toBe(0);
    await seen.closed;
  });
});
