// The relay's control layer: RelayRegistry's Toxiproxy semantics against a recording data path,
// then the HTTP API over the real data path (relayDataPath), driven by the real
// toxiproxy-node-client and by raw requests.
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Toxiproxy, type ICreateToxicBody, type Latency } from 'toxiproxy-node-client';
import { startRelayApi } from '../src/relay/api.js';
import { PopulateError, RelayError } from '../src/relay/control-errors.js';
import { RelayRegistry } from '../src/relay/registry.js';
import { relayDataPath } from '../src/relay/relay.js';
import { closeAll, HOST, onCleanup, waitFor, watch } from './helpers.js';
import { busyPort, captureLogger, connect, fakeDataPath, request, roundTrip, startEcho } from './relay-api-helpers.js';

afterEach(closeAll);

/** The RelayError a promise rejects with (fails the test if it resolves or throws something else). */
async function failure(p: Promise<unknown>): Promise<RelayError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RelayError);
  return err as RelayError;
}

describe('RelayRegistry', () => {
  let data: ReturnType<typeof fakeDataPath>;
  let registry: RelayRegistry;
  beforeEach(() => {
    data = fakeDataPath();
    registry = new RelayRegistry({ openListener: data.open });
  });

  it('creates an enabled relay, reporting the bound listen address', async () => {
    const view = await registry.create({ name: 'db', listen: '127.0.0.1:0', upstream: '127.0.0.1:5432' });
    expect(view).toEqual({ name: 'db', listen: '127.0.0.1:41000', upstream: '127.0.0.1:5432', enabled: true, toxics: [] });
    expect(data.calls).toEqual(['open db 127.0.0.1:0 -> 127.0.0.1:5432 []']);
    expect(registry.get('db')).toEqual(view);
    expect(registry.list()).toEqual({ db: view });
  });

  it('reads listen and upstream as host:port, [v6]:port, :port, localhost:port or empty', async () => {
    await registry.create({ name: 'a', listen: 'localhost:7001', upstream: 'localhost:9' });
    await registry.create({ name: 'b', listen: ':7002', upstream: ':9' });
    await registry.create({ name: 'c', listen: '[::1]:7003', upstream: '[::1]:9' });
    await registry.create({ name: 'd', upstream: 'db.internal:5432' });
    expect(Object.values(registry.list()).map((v) => [v.listen, v.upstream])).toEqual([
      ['127.0.0.1:7001', 'localhost:9'],
      ['127.0.0.1:7002', '127.0.0.1:9'],
      ['[::1]:7003', '[::1]:9'],
      ['127.0.0.1:41000', 'db.internal:5432'],
    ]);
  });

  it('refuses a listen address beyond loopback unless opened, naming the flag', async () => {
    for (const listen of ['0.0.0.0:8080', '[::]:8080', '10.1.2.3:80', 'example.com:80']) {
      const err = await failure(registry.create({ name: 'x', listen, upstream: '127.0.0.1:9' }));
      expect(err.status).toBe(403);
      expect(err.message).toContain('--open');
    }
    expect(data.calls).toEqual([]);
    const open = new RelayRegistry({ openListener: data.open, open: true });
    expect((await open.create({ name: 'x', listen: '0.0.0.0:8080', upstream: '127.0.0.1:9' })).listen).toBe('0.0.0.0:8080');
  });

  it("answers bad input with 400 and Toxiproxy's messages", async () => {
    const cases: [unknown, string][] = [
      [{ upstream: '127.0.0.1:9' }, 'missing required field: name'],
      [{ name: '', upstream: '127.0.0.1:9' }, 'missing required field: name'],
      [{ name: 'x' }, 'missing required field: upstream'],
      [{ name: 'x', upstream: '127.0.0.1' }, 'upstream: "127.0.0.1": expected HOST:PORT'],
      [{ name: 'x', upstream: '127.0.0.1:0' }, 'port 0 is out of range'],
      [{ name: 'x', upstream: '127.0.0.1:9', listen: '::1:80' }, 'in brackets'],
      [{ name: 'x', upstream: '127.0.0.1:9', enabled: 'yes' }, 'enabled: expected true or false'],
      [{ name: 7, upstream: '127.0.0.1:9' }, 'name: expected a string'],
      [{ name: null, upstream: '127.0.0.1:9' }, 'missing required field: name'],
      [[], 'expected a JSON object'],
      [null, 'missing required field: name'],
    ];
    for (const [input, message] of cases) {
      const err = await failure(registry.create(input as never));
      expect(err.status, JSON.stringify(input)).toBe(400);
      expect(err.message).toContain(message);
    }
    expect(data.calls).toEqual([]);
  });

  it('409 on a taken name, 404 on an unknown one, 500 when the data path cannot listen', async () => {
    await registry.create({ name: 'db', upstream: '127.0.0.1:9' });
    expect((await failure(registry.create({ name: 'db', upstream: '127.0.0.1:10' }))).status).toBe(409);
    expect(() => registry.get('nope')).toThrow('proxy not found');
    for (const p of [registry.update('nope', {}), registry.remove('nope'), registry.addToxic('nope', { type: 'latency' })]) {
      expect((await failure(p)).status).toBe(404);
    }
    data.busy.add(7000);
    const err = await failure(registry.create({ name: 'busy', listen: '127.0.0.1:7000', upstream: '127.0.0.1:9' }));
    expect([err.status, err.code]).toEqual([500, 'ERR_RELAY_LISTEN']);
    expect(err.message).toBe('listen tcp 127.0.0.1:7000: bind: address already in use');
    expect(Object.keys(registry.list())).toEqual(['db']);
  });

  it('opens on enable and closes on disable, re-listening on the port it had', async () => {
    const created = await registry.create({ name: 'db', upstream: '127.0.0.1:9', enabled: false });
    // Until it has listened, listen is reported as given (here not at all), as Toxiproxy does.
    expect(created).toMatchObject({ enabled: false, listen: '' });
    expect(data.calls).toEqual([]);
    expect(await registry.update('db', { enabled: true })).toMatchObject({ enabled: true, listen: '127.0.0.1:41000' });
    expect(await registry.update('db', { enabled: false })).toMatchObject({ enabled: false, listen: '127.0.0.1:41000' });
    await registry.update('db', { enabled: true });
    expect(data.calls).toEqual(['open db 127.0.0.1:0 -> 127.0.0.1:9 []', 'close db', 'open db 127.0.0.1:41000 -> 127.0.0.1:9 []']);
  });

  it('changes the upstream of a live relay without closing it, and moves it on a new listen', async () => {
    await registry.create({ name: 'db', listen: '127.0.0.1:7000', upstream: '127.0.0.1:9' });
    await registry.update('db', { upstream: '127.0.0.1:10' });
    // The client sends the whole proxy back; an unchanged listen is no move.
    await registry.update('db', { name: 'db', listen: '127.0.0.1:7000', upstream: '127.0.0.1:10', enabled: true });
    expect(await registry.update('db', { listen: 'localhost:7001' })).toMatchObject({ listen: '127.0.0.1:7001', upstream: '127.0.0.1:10' });
    expect(data.calls).toEqual([
      'open db 127.0.0.1:7000 -> 127.0.0.1:9 []',
      'upstream db 127.0.0.1:10',
      'close db',
      'open db 127.0.0.1:7001 -> 127.0.0.1:10 []',
    ]);
    // Toxiproxy ignores a new name; strict refuses it.
    expect((await registry.update('db', { name: 'other' })).name).toBe('db');
    const strict = new RelayRegistry({ openListener: data.open, strictApi: true });
    await strict.create({ name: 'db', listen: '127.0.0.1:7010', upstream: '127.0.0.1:9' });
    expect((await failure(strict.update('db', { name: 'other' }))).message).toContain('cannot be renamed');
  });

  it('goes back to the old address when a move cannot listen', async () => {
    await registry.create({ name: 'db', listen: '127.0.0.1:7000', upstream: '127.0.0.1:9' });
    await registry.addToxic('db', { type: 'latency', attributes: { latency: 5 } });
    data.busy.add(7001);
    expect((await failure(registry.update('db', { listen: '127.0.0.1:7001', upstream: '127.0.0.1:10' }))).status).toBe(500);
    expect(registry.get('db')).toMatchObject({ listen: '127.0.0.1:7000', upstream: '127.0.0.1:9', enabled: true });
    expect(data.calls.slice(-3)).toEqual([
      'close db',
      'open db 127.0.0.1:7001 -> 127.0.0.1:10 [latency_downstream]',
      'open db 127.0.0.1:7000 -> 127.0.0.1:9 [latency_downstream]',
    ]);
  });

  it('hands the full toxic list to the live listener after each toxic change', async () => {
    await registry.create({ name: 'db', upstream: '127.0.0.1:9' });
    const latency = await registry.addToxic('db', { type: 'latency', attributes: { latency: 100 } });
    expect(latency).toEqual({ name: 'latency_downstream', type: 'latency', stream: 'downstream', toxicity: 1, attributes: { latency: 100, jitter: 0 } });
    await registry.addToxic('db', { name: 'slow', type: 'bandwidth', stream: 'upstream', attributes: { rate: 10 } });
    // Toxiproxy lists the upstream chain first, then the downstream one.
    expect(registry.toxics('db').map((t) => t.name)).toEqual(['slow', 'latency_downstream']);
    const updated = await registry.updateToxic('db', 'latency_downstream', { attributes: { jitter: 7 }, toxicity: 0.5 });
    expect(updated).toMatchObject({ toxicity: 0.5, attributes: { latency: 100, jitter: 7 } });
    expect(registry.toxic('db', 'latency_downstream')).toEqual(updated);
    await registry.removeToxic('db', 'slow');
    expect(data.calls.slice(1)).toEqual([
      'toxics db [latency_downstream]',
      'toxics db [slow,latency_downstream]',
      'toxics db [slow,latency_downstream]',
      'toxics db [latency_downstream]',
    ]);
    expect(data.live.get('db')?.toxics[0]).toMatchObject({ attributes: { latency: 100, jitter: 7 } });
  });

  it('keeps toxics of a disabled relay and opens with them', async () => {
    await registry.create({ name: 'db', upstream: '127.0.0.1:9', enabled: false });
    await registry.addToxic('db', { type: 'timeout', attributes: { timeout: 10 } });
    await registry.update('db', { enabled: true });
    expect(data.calls).toEqual(['open db 127.0.0.1:0 -> 127.0.0.1:9 [timeout_downstream]']);
  });

  it('validates toxics: 400 naming the field, 409 on a taken name, 404 on an unknown one', async () => {
    await registry.create({ name: 'db', upstream: '127.0.0.1:9' });
    await registry.addToxic('db', { type: 'latency' });
    const bad: [unknown, string][] = [
      [{ type: 'latency', attributes: { latency: -1 } }, 'attributes.latency'],
      [{ type: 'latency', name: 'x', stream: 'sideways' }, 'stream'],
      [{ type: 'teleport' }, 'unknown toxic type'],
      [{ type: 'latency', name: 'x', toxicity: '1' }, 'toxicity'],
    ];
    for (const [input, field] of bad) {
      const err = await failure(registry.addToxic('db', input));
      expect(err.status).toBe(400);
      expect(err.message).toContain(field);
    }
    expect((await failure(registry.addToxic('db', { type: 'latency' }))).status).toBe(409);
    expect((await failure(registry.updateToxic('db', 'nope', {}))).status).toBe(404);
    expect((await failure(registry.removeToxic('db', 'nope'))).status).toBe(404);
    expect(() => registry.toxic('db', 'nope')).toThrow('toxic not found');
    expect((await failure(registry.updateToxic('db', 'latency_downstream', { attributes: { latency: 'x' } }))).message).toContain('attributes.latency');
    // A changed name, type or stream is ignored, as Toxiproxy does; so is an unknown attribute.
    expect(await registry.updateToxic('db', 'latency_downstream', { type: 'bandwidth', name: 'x', stream: 'upstream', attributes: { latncy: 1 } })).toEqual(
      registry.toxic('db', 'latency_downstream'),
    );
    expect(registry.toxics('db')).toEqual([{ attributes: { latency: 0, jitter: 0 }, name: 'latency_downstream', type: 'latency', stream: 'downstream', toxicity: 1 }]);
  });

  it('with strictApi, refuses what Toxiproxy lets through', async () => {
    const strict = new RelayRegistry({ openListener: data.open, strictApi: true });
    await strict.create({ name: 'db', upstream: '127.0.0.1:9' });
    await strict.addToxic('db', { type: 'latency' });
    const bad: [() => Promise<unknown>, string][] = [
      [() => strict.create({ name: 'x', upstream: '127.0.0.1:9', upsteam: 'typo' } as never), 'unknown field "upsteam"'],
      [() => strict.addToxic('db', { type: 'latency', name: 'x', toxicity: 2 }), 'toxicity: must be between 0 and 1'],
      [() => strict.addToxic('db', { type: 'latency', name: 'x', stream: 'UpStream' as never }), 'stream'],
      [() => strict.addToxic('db', { type: 'latency', name: 'x', attributes: { latncy: 1 } as never }), 'latncy'],
      [() => strict.addToxic('db', { type: 'slicer', name: 'x', attributes: { average_size: 8, size_variation: 8 } }), 'size_variation'],
      [() => strict.addToxic('db', { type: 'latency', name: 'x', extra: true } as never), 'extra'],
      [() => strict.updateToxic('db', 'latency_downstream', { type: 'bandwidth' }), 'type: cannot be changed'],
      [() => strict.updateToxic('db', 'latency_downstream', { attributes: { latncy: 1 } }), 'latncy'],
      [() => strict.populate([{ name: 'n', upstream: '127.0.0.1:9' }, { name: 'n', upstream: '127.0.0.1:9' }]), 'duplicate proxy name "n" at proxy 2'],
    ];
    for (const [call, message] of bad) {
      const err = await failure(call());
      expect(err.status, message).toBe(400);
      expect(err.message).toContain(message);
    }
    // null is absent in strict mode too: it is how Toxiproxy's clients say "not set".
    expect(await strict.create({ name: 'n', upstream: '127.0.0.1:9', enabled: null } as never)).toMatchObject({ enabled: true });
    expect(Object.keys(strict.list())).toEqual(['db', 'n']);
    expect(strict.toxics('db').map((t) => t.name)).toEqual(['latency_downstream']);
  });

  it('resets: every relay enabled again, every toxic removed', async () => {
    await registry.create({ name: 'a', upstream: '127.0.0.1:9' });
    await registry.create({ name: 'b', upstream: '127.0.0.1:9', enabled: false });
    await registry.addToxic('a', { type: 'latency' });
    await registry.addToxic('b', { type: 'latency' });
    await registry.reset();
    expect(Object.values(registry.list()).map((v) => [v.enabled, v.toxics.length])).toEqual([
      [true, 0],
      [true, 0],
    ]);
    expect(data.calls.slice(-2)).toEqual(['toxics a []', 'open b 127.0.0.1:0 -> 127.0.0.1:9 []']);
  });

  it('populates: keeps identical relays, replaces changed ones, adds new ones, leaves others', async () => {
    await registry.create({ name: 'same', listen: '127.0.0.1:0', upstream: '127.0.0.1:9' });
    await registry.create({ name: 'changed', upstream: '127.0.0.1:9' });
    await registry.create({ name: 'untouched', upstream: '127.0.0.1:9' });
    await registry.addToxic('same', { type: 'latency' });
    data.calls.length = 0;
    const views = await registry.populate([
      { name: 'same', listen: '127.0.0.1:0', upstream: '127.0.0.1:9' },
      { name: 'changed', upstream: '127.0.0.1:10' },
      { name: 'new', upstream: '127.0.0.1:9', enabled: false },
    ]);
    expect(views.map((v) => [v.name, v.upstream, v.enabled, v.toxics.length])).toEqual([
      ['same', '127.0.0.1:9', true, 1],
      ['changed', '127.0.0.1:10', true, 0],
      ['new', '127.0.0.1:9', false, 0],
    ]);
    expect(data.calls).toEqual(['close changed', 'open changed 127.0.0.1:0 -> 127.0.0.1:10 []']);
    expect(Object.keys(registry.list()).sort()).toEqual(['changed', 'new', 'same', 'untouched']);
    // The bound address counts as the same listen too (a populate file fed back from GET).
    await registry.populate([{ name: 'same', listen: registry.get('same').listen, upstream: '127.0.0.1:9' }]);
    expect(registry.get('same').toxics).toHaveLength(1);
  });

  it('populate applies entries in order and stops at one that cannot listen, keeping those before it', async () => {
    await registry.create({ name: 'a', listen: '127.0.0.1:7000', upstream: '127.0.0.1:9' });
    const missing = await failure(registry.populate([{ name: 'n', upstream: '127.0.0.1:9' }, { name: 'm' } as never]));
    expect(missing.message).toBe('missing required field: upstream at proxy 2');
    expect(data.calls).toEqual(['open a 127.0.0.1:7000 -> 127.0.0.1:9 []']);
    data.busy.add(7001);
    const err = await failure(
      registry.populate([
        { name: 'b', listen: '127.0.0.1:7002', upstream: '127.0.0.1:9' },
        { name: 'c', listen: '127.0.0.1:7001', upstream: '127.0.0.1:9' },
        { name: 'd', listen: '127.0.0.1:7003', upstream: '127.0.0.1:9' },
      ]),
    );
    expect([err.status, err.message]).toEqual([500, 'listen tcp 127.0.0.1:7001: bind: address already in use']);
    expect(err).toBeInstanceOf(PopulateError);
    expect((err as PopulateError).proxies.map((p) => p.name)).toEqual(['b']);
    expect(Object.keys(registry.list())).toEqual(['a', 'b']);
    // A replacement that cannot listen leaves the proxy it replaces there, stopped.
    await failure(registry.populate([{ name: 'a', listen: '127.0.0.1:7001', upstream: '127.0.0.1:9' }]));
    expect(registry.get('a')).toMatchObject({ listen: '127.0.0.1:7000', enabled: false });
    // A name given twice is applied twice, the later entry winning, as Toxiproxy does.
    const twice = await registry.populate([
      { name: 'e', upstream: '127.0.0.1:9' },
      { name: 'e', upstream: '127.0.0.1:10' },
    ]);
    expect(twice.map((p) => p.upstream)).toEqual(['127.0.0.1:9', '127.0.0.1:10']);
    expect(registry.get('e').upstream).toBe('127.0.0.1:10');
    expect((await registry.populate(null as never))).toEqual([]);
  });

  it('with strictApi, populate checks every entry before changing anything, and undoes itself when one cannot listen', async () => {
    registry = new RelayRegistry({ openListener: data.open, strictApi: true });
    await registry.create({ name: 'a', listen: '127.0.0.1:7000', upstream: '127.0.0.1:9' });
    const dup = await failure(registry.populate([{ name: 'n', upstream: '127.0.0.1:9' }, { name: 'n', upstream: '127.0.0.1:9' }]));
    expect(dup.message).toContain('duplicate proxy name "n" at proxy 2');
    const missing = await failure(registry.populate([{ name: 'n', upstream: '127.0.0.1:9' }, { name: 'm' } as never]));
    expect(missing.message).toBe('missing required field: upstream at proxy 2');
    expect((await failure(registry.populate({} as never))).status).toBe(400);
    expect(data.calls).toEqual(['open a 127.0.0.1:7000 -> 127.0.0.1:9 []']);

    data.busy.add(7001);
    const err = await failure(
      registry.populate([
        { name: 'a', listen: '127.0.0.1:7000', upstream: '127.0.0.1:10' },
        { name: 'b', upstream: '127.0.0.1:9' },
        { name: 'c', listen: '127.0.0.1:7001', upstream: '127.0.0.1:9' },
      ]),
    );
    expect(err.status).toBe(500);
    expect((err as PopulateError).proxies).toEqual([]);
    expect(registry.list()).toEqual({ a: { name: 'a', listen: '127.0.0.1:7000', upstream: '127.0.0.1:9', enabled: true, toxics: [] } });
    expect([...data.live.keys()]).toEqual(['a']);
  });

  it('removes a relay, closing its listener', async () => {
    await registry.create({ name: 'db', upstream: '127.0.0.1:9' });
    await registry.remove('db');
    expect(data.calls.at(-1)).toBe('close db');
    expect(registry.list()).toEqual({});
  });

  it('serializes changes: a create and a delete of one name never interleave', async () => {
    const results = await Promise.allSettled([
      registry.create({ name: 'db', upstream: '127.0.0.1:9' }),
      registry.remove('db'),
      registry.create({ name: 'db', upstream: '127.0.0.1:9' }),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled']);
    expect(data.calls).toEqual(['open db 127.0.0.1:0 -> 127.0.0.1:9 []', 'close db', 'open db 127.0.0.1:0 -> 127.0.0.1:9 []']);
  });

  it('close() stops every listener and refuses changes after', async () => {
    await registry.create({ name: 'a', upstream: '127.0.0.1:9' });
    await registry.create({ name: 'b', upstream: '127.0.0.1:9' });
    await Promise.all([registry.close(), registry.close()]);
    expect(data.live.size).toBe(0);
    expect((await failure(registry.create({ name: 'c', upstream: '127.0.0.1:9' }))).status).toBe(503);
  });
});

/**
 * A registry over the real data path and its API on a free loopback port. The JS engine, because
 * a toxic reaches a spliced connection only through the splice engine's release of the pair.
 */
async function startStack() {
  const registry = new RelayRegistry({ openListener: relayDataPath({ seed: 1, engine: 'js' }) });
  const { logger, lines } = captureLogger();
  const api = await startRelayApi(registry, { port: 0, logger });
  onCleanup(() => void api.close());
  onCleanup(() => void registry.close());
  return { registry, api, lines };
}

/** How long `text` takes to come back through the echo, in ms. */
async function timedRoundTrip(socket: net.Socket, text: string): Promise<number> {
  const started = performance.now();
  expect(await roundTrip(socket, text)).toBe(text);
  return performance.now() - started;
}

describe('HTTP API with toxiproxy-node-client', () => {
  let stack: Awaited<ReturnType<typeof startStack>>;
  let client: Toxiproxy;
  beforeEach(async () => {
    stack = await startStack();
    client = new Toxiproxy(stack.api.url);
  });

  it('drives a relay end to end: create, list, get, toxics, reset, populate, delete', async () => {
    const echo = await startEcho();
    const proxy = await client.createProxy({ name: 'echo', listen: `${HOST}:0`, upstream: `${HOST}:${echo}` });
    expect(proxy).toMatchObject({ name: 'echo', upstream: `${HOST}:${echo}`, enabled: true });
    const port = Number(proxy.listen.split(':')[1]);
    expect(port).toBeGreaterThan(0);

    const socket = await connect(port);
    expect(await roundTrip(socket, 'hello')).toBe('hello');

    const all = await client.getAll();
    expect(Object.keys(all)).toEqual(['echo']);
    expect(all.echo.listen).toBe(proxy.listen);
    expect((await client.get('echo')).toJson()).toEqual(proxy.toJson());

    // A toxic added through the client applies to the connection already open.
    const body: ICreateToxicBody<Latency> = { name: 'lag', type: 'latency', stream: 'downstream', toxicity: 1, attributes: { latency: 100, jitter: 0 } };
    const toxic = await proxy.addToxic(body);
    expect(toxic.toJson()).toEqual(body);
    expect(await timedRoundTrip(socket, 'slow')).toBeGreaterThanOrEqual(100);

    // The update is seen through a lower bound the old latency cannot reach: timers fire late on a
    // loaded machine, never early, so no upper bound is needed to tell the two apart.
    const changed = await toxic.update({ ...toxic.toJson(), attributes: { latency: 400, jitter: 0 } });
    expect(changed.attributes).toEqual({ latency: 400, jitter: 0 });
    expect((await proxy.getToxic('lag')).toJson()).toEqual(changed.toJson());
    expect(await timedRoundTrip(socket, 'slower')).toBeGreaterThanOrEqual(400);

    // Removed: the same connection flows again, without the delay (a loopback echo takes about a
    // millisecond; the bound only has to tell it from 400 ms).
    await changed.remove();
    expect(await timedRoundTrip(socket, 'still here')).toBeLessThan(400);

    // Disabled as Toxiproxy does: the listener stops and open connections end.
    const ended = watch(socket).closed;
    const disabled = await proxy.update({ ...proxy.toJson(), enabled: false });
    expect(disabled.enabled).toBe(false);
    await ended;
    await proxy.addToxic({ ...body, name: 'again' });
    await client.reset();
    const afterReset = await client.get('echo');
    expect(afterReset).toMatchObject({ enabled: true, listen: proxy.listen });
    expect(stack.registry.toxics('echo')).toEqual([]);
    const fresh = await connect(port);
    expect(await roundTrip(fresh, 'back')).toBe('back');

    const populated = await client.populate([
      { name: 'echo', listen: proxy.listen, upstream: `${HOST}:${echo}` },
      { name: 'second', listen: `${HOST}:0`, upstream: `${HOST}:${echo}` },
    ]);
    expect(Object.keys(populated)).toEqual(['echo', 'second']);
    expect(populated.echo.listen).toBe(proxy.listen);
    const second = await connect(Number(populated.second.listen.split(':')[1]));
    expect(await roundTrip(second, 'two')).toBe('two');

    await populated.second.remove();
    await proxy.remove();
    expect(await client.getAll()).toEqual({});
  });

  it('reports the version as Toxiproxy does', async () => {
    const text = await client.getVersion();
    expect(text.endsWith('\n')).toBe(true);
    expect(JSON.parse(text)).toEqual({ version: expect.stringMatching(/^\d+\.\d+\.\d+/) });
  });

  it('surfaces errors as ToxiproxyError with the status', async () => {
    await expect(client.get('nope')).rejects.toThrow('status code 404');
    await client.createProxy({ name: 'a', listen: `${HOST}:0`, upstream: `${HOST}:9` });
    await expect(client.createProxy({ name: 'a', listen: `${HOST}:0`, upstream: `${HOST}:9` })).rejects.toThrow('status code 409');
  });
});

describe('HTTP API, raw requests', () => {
  let stack: Awaited<ReturnType<typeof startStack>>;
  let base: string;
  beforeEach(async () => {
    stack = await startStack();
    base = stack.api.url;
  });

  const create = (name = 'db', extra: Record<string, unknown> = {}) =>
    request(base, 'POST', '/proxies', JSON.stringify({ name, listen: `${HOST}:0`, upstream: `${HOST}:9`, ...extra }));

  it('answers create with 201 and the proxy JSON, delete with 204 and no body', async () => {
    const res = await create();
    expect(res.status).toBe(201);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.json()).toMatchObject({ name: 'db', upstream: `${HOST}:9`, enabled: true, toxics: [] });
    const toxic = await request(base, 'POST', '/proxies/db/toxics', '{"type":"slow_close","attributes":{"delay":5}}');
    expect(toxic.status).toBe(200);
    expect((await request(base, 'GET', '/proxies/db/toxics')).json()).toEqual([
      { name: 'slow_close_downstream', type: 'slow_close', stream: 'downstream', toxicity: 1, attributes: { delay: 5 } },
    ]);
    const patched = await request(base, 'PATCH', '/proxies/db/toxics/slow_close_downstream', '{"attributes":{"delay":9}}');
    expect(patched.json()).toMatchObject({ attributes: { delay: 9 } });
    const del = await request(base, 'DELETE', '/proxies/db/toxics/slow_close_downstream');
    expect([del.status, del.text]).toEqual([204, '']);
    expect((await request(base, 'PATCH', '/proxies/db', '{"enabled":false}')).json()).toMatchObject({ enabled: false });
    expect((await request(base, 'DELETE', '/proxies/db')).status).toBe(204);
    expect((await request(base, 'GET', '/proxies')).json()).toEqual({});
  });

  it('answers each error with its status and {"error", "status"}', async () => {
    await create();
    const busy = await busyPort();
    const cases: [string, string, string | undefined, number, string][] = [
      ['POST', '/proxies', '{"name": "x", "upstream": ', 400, 'bad request body'],
      ['POST', '/proxies', '', 400, 'bad request body: empty'],
      ['POST', '/proxies', '{"name":"x","upstream":"127.0.0.1:9"} {}', 400, 'bad request body'],
      ['POST', '/proxies', '{"upstream":"127.0.0.1:9"}', 400, 'missing required field: name'],
      ['POST', '/proxies', '{"name":"x","upstream":"127.0.0.1:9","listen":"0.0.0.0:0"}', 403, '--open'],
      ['POST', '/proxies', '{"name":"db","upstream":"127.0.0.1:9"}', 409, 'proxy already exists'],
      ['POST', '/proxies', `{"name":"x","upstream":"127.0.0.1:9","listen":"127.0.0.1:${busy}"}`, 500, `listen tcp 127.0.0.1:${busy}: bind: address already in use`],
      ['GET', '/proxies/nope', undefined, 404, 'proxy not found'],
      ['GET', '/proxies/db/toxics/nope', undefined, 404, 'toxic not found'],
      ['POST', '/proxies/db/toxics', '{"type":"latency","attributes":{"latency":-5}}', 400, 'attributes.latency'],
      ['POST', '/proxies/db/toxics', '[', 400, 'bad request body'],
      ['POST', '/populate', '{"name":"x"}', 400, 'expected a JSON array'],
      ['GET', '/nowhere', undefined, 404, 'no route'],
      ['GET', '/proxies/', undefined, 404, 'no route'],
      ['PUT', '/proxies', '{}', 405, 'not allowed'],
      ['GET', '/reset', undefined, 405, 'not allowed'],
      ['GET', '/proxies/%E0%A4%A', undefined, 400, 'percent-encoding'],
    ];
    for (const [method, path, body, status, message] of cases) {
      const res = await request(base, method, path, body);
      const what = `${method} ${path} ${body ?? ''}`;
      expect(res.status, what).toBe(status);
      const json = res.json() as { error: string; status: number };
      expect(json.status, what).toBe(status);
      expect(json.error, what).toContain(message);
    }
    expect((await request(base, 'PUT', '/proxies/db')).headers.allow).toBe('GET, POST, PATCH, DELETE');
    expect(Object.keys((await request(base, 'GET', '/proxies')).json() as object)).toEqual(['db']);
  });

  it('refuses bodies over the limit, bodies that are not UTF-8, and browsers', async () => {
    const huge = await request(base, 'POST', '/proxies', Buffer.alloc(2 * 1024 * 1024, 0x20));
    expect(huge.status).toBe(413);
    const latin1 = await request(base, 'POST', '/proxies', Buffer.from([0x7b, 0x22, 0xe9, 0x22, 0x7d]));
    expect([latin1.status, (latin1.json() as { error: string }).error]).toEqual([400, 'bad request body: not valid UTF-8']);
    const browser = await request(base, 'GET', '/proxies', undefined, { 'User-Agent': 'Mozilla/5.0' });
    expect(browser.status).toBe(403);
    expect((await request(base, 'GET', '/version')).status).toBe(200);
  });

  it('names proxies with any characters, percent-encoded in the path', async () => {
    expect((await create('a b/c')).status).toBe(201);
    expect((await request(base, 'GET', `/proxies/${encodeURIComponent('a b/c')}`)).json()).toMatchObject({ name: 'a b/c' });
  });

  it('logs one debug line per request', async () => {
    await request(base, 'GET', '/proxies');
    await request(base, 'GET', '/nowhere');
    const requests = stack.lines.filter((l) => l.msg === 'relay api request');
    expect(requests.map((l) => [l.method, l.url, l.status])).toEqual([
      ['GET', '/proxies', 200],
      ['GET', '/nowhere', 404],
    ]);
    expect(requests[0].level).toBe(20);
  });

  it('binds loopback by default and refuses a wider host unless opened', async () => {
    expect(stack.api.address.host).toBe('127.0.0.1');
    const registry = new RelayRegistry({ openListener: fakeDataPath().open });
    await expect(startRelayApi(registry, { host: '0.0.0.0', port: 0 })).rejects.toThrow('--open');
  });

  it('keeps serving after a client drops mid-body, and does not call that an error', async () => {
    const socket = await connect(stack.api.address.port);
    socket.write('POST /proxies HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"na');
    socket.destroy();
    const wentAway = () => stack.lines.some((l) => l.msg === 'relay api: client went away mid-request');
    expect(await waitFor(wentAway, 10_000), 'the API saw the client go').toBe(true);
    expect(stack.lines.filter((l) => (l.level as number) >= 40)).toEqual([]);
    expect((await request(base, 'GET', '/proxies')).status).toBe(200);
  });
});
