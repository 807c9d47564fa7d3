// The relay API answers as Toxiproxy answers, on the points where its clients break on small
// differences. Each expectation here is what Toxiproxy (built from source) answered to the same
// request; test/relay-api-toxiproxy.test.ts checks them side by side when Toxiproxy is installed.
import { afterEach, describe, expect, it } from 'vitest';
import { Toxiproxy, ToxiproxyError } from 'toxiproxy-node-client';
import { createRelay, type Relay } from '../src/relay/create.js';
import { closeAll, HOST } from './helpers.js';
import { busyPort, connect, request, roundTrip, startEcho } from './relay-api-helpers.js';

let relays: Relay[] = [];
afterEach(async () => {
  await Promise.all(relays.map((r) => r.close()));
  relays = [];
  await closeAll();
});

async function api(options: { strictApi?: boolean } = {}): Promise<{ relay: Relay; base: string }> {
  const relay = await createRelay({ api: { host: HOST, port: 0 }, engine: 'js', ...options });
  relays.push(relay);
  return { relay, base: relay.api!.url };
}

const post = (base: string, path: string, body: unknown) => request(base, 'POST', path, typeof body === 'string' ? body : JSON.stringify(body));

describe('relay API, as Toxiproxy answers', () => {
  it('reads JSON null as absent: the defaults apply', async () => {
    const { base } = await api();
    // Ruby's client sends "enabled": null; Go's AddToxic(..., nil) sends "attributes": null.
    const created = await post(base, '/proxies', '{"name":"a","listen":"127.0.0.1:0","upstream":"127.0.0.1:9","enabled":null}');
    expect(created.status).toBe(201);
    expect(created.json()).toMatchObject({ name: 'a', enabled: true });
    const toxic = await post(base, '/proxies/a/toxics', '{"name":null,"type":"latency","stream":null,"toxicity":null,"attributes":null}');
    expect([toxic.status, toxic.text]).toEqual([200, '{"attributes":{"latency":0,"jitter":0},"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1}']);
    const listenNull = await post(base, '/proxies', '{"name":"b","listen":null,"upstream":"127.0.0.1:9"}');
    expect(listenNull.status).toBe(201);
    expect((listenNull.json() as { listen: string }).listen).toMatch(/^127\.0\.0\.1:[1-9]\d*$/);
    const unchanged = await request(base, 'PATCH', '/proxies/a', '{"enabled":null,"listen":null,"upstream":null}');
    expect(unchanged.json()).toMatchObject({ enabled: true, upstream: '127.0.0.1:9' });
    const toxicUnchanged = await request(base, 'PATCH', '/proxies/a/toxics/latency_downstream', '{"toxicity":null,"attributes":null}');
    expect(toxicUnchanged.json()).toMatchObject({ toxicity: 1, attributes: { latency: 0, jitter: 0 } });
    expect((await request(base, 'PATCH', '/proxies/a/toxics/latency_downstream', 'null')).status).toBe(200);
    expect((await post(base, '/proxies', '{"name":null,"upstream":"127.0.0.1:9"}')).json()).toEqual({ error: 'missing required field: name', status: 400 });
  });

  it('ignores unknown fields and attributes, and a new name, type or stream in an update', async () => {
    const { base } = await api();
    const created = await post(base, '/proxies', { name: 'a', listen: '127.0.0.1:0', upstream: '127.0.0.1:9', bogus: 1 });
    expect(created.status).toBe(201);
    expect(Object.keys(created.json() as object)).toEqual(['name', 'listen', 'upstream', 'enabled', 'toxics']);
    const toxic = await post(base, '/proxies/a/toxics', { type: 'latency', extra: true, attributes: { latency: 5, foo: 1 } });
    expect([toxic.status, toxic.json()]).toEqual([200, { attributes: { latency: 5, jitter: 0 }, name: 'latency_downstream', type: 'latency', stream: 'downstream', toxicity: 1 }]);
    const renamed = await request(base, 'PATCH', '/proxies/a', JSON.stringify({ name: 'other', unknown: 3, upstream: '127.0.0.1:10' }));
    expect([renamed.status, renamed.json()]).toMatchObject([200, { name: 'a', upstream: '127.0.0.1:10' }]);
    const retyped = await request(base, 'PATCH', '/proxies/a/toxics/latency_downstream', JSON.stringify({ name: 'zz', type: 'bandwidth', stream: 'upstream', attributes: { jitter: 3 } }));
    expect([retyped.status, retyped.json()]).toEqual([200, { attributes: { latency: 5, jitter: 3 }, name: 'latency_downstream', type: 'latency', stream: 'downstream', toxicity: 1 }]);
    expect(Object.keys((await request(base, 'GET', '/proxies')).json() as object)).toEqual(['a']);
  });

  it('takes stream in any case, toxicity outside 0..1, a slicer variation equal to its average, and noop', async () => {
    const { base } = await api();
    await post(base, '/proxies', { name: 'a', listen: '127.0.0.1:0', upstream: '127.0.0.1:9' });
    const cased = await post(base, '/proxies/a/toxics', { type: 'latency', stream: 'UpStream', toxicity: 1.5 });
    expect([cased.status, cased.json()]).toEqual([200, { attributes: { latency: 0, jitter: 0 }, name: 'latency_upstream', type: 'latency', stream: 'upstream', toxicity: 1.5 }]);
    const never = await post(base, '/proxies/a/toxics', { name: 'never', type: 'latency', toxicity: -1 });
    expect([never.status, (never.json() as { toxicity: number }).toxicity]).toEqual([200, -1]);
    const slicer = await post(base, '/proxies/a/toxics', { type: 'slicer', attributes: { average_size: 8, size_variation: 8 } });
    expect([slicer.status, slicer.json()]).toEqual([200, { attributes: { average_size: 8, size_variation: 8, delay: 0 }, name: 'slicer_downstream', type: 'slicer', stream: 'downstream', toxicity: 1 }]);
    const noop = await post(base, '/proxies/a/toxics', { type: 'noop' });
    expect([noop.status, noop.text]).toEqual([200, '{"attributes":{},"name":"noop_downstream","type":"noop","stream":"downstream","toxicity":1}']);
    const unknown = await post(base, '/proxies/a/toxics', { type: 'explode' });
    expect(unknown.status).toBe(400);
  });

  it('passes traffic unchanged through a noop toxic', async () => {
    const { base, relay } = await api();
    const echo = await startEcho();
    await post(base, '/proxies', { name: 'a', listen: '127.0.0.1:0', upstream: `${HOST}:${echo}` });
    expect((await post(base, '/proxies/a/toxics', { type: 'noop', stream: 'upstream' })).status).toBe(200);
    expect((await post(base, '/proxies/a/toxics', { type: 'noop' })).status).toBe(200);
    const socket = await connect(relay.address('a').port);
    const text = 'through noop in both directions\n'.repeat(200);
    expect(await roundTrip(socket, text)).toBe(text);
  });

  it('tags every answer with X-Toxiproxy-Request-Id, and writes /version as Toxiproxy does', async () => {
    const { base } = await api();
    const ids = new Set<string>();
    for (const [method, path] of [
      ['GET', '/version'],
      ['GET', '/proxies'],
      ['GET', '/proxies/nope'],
      ['POST', '/reset'],
    ] as const) {
      const id = (await request(base, method, path)).headers['x-toxiproxy-request-id'];
      expect(id, `${method} ${path}`).toMatch(/^[0-9a-v]{20}$/);
      ids.add(id as string);
    }
    expect(ids.size).toBe(4);
    const version = await request(base, 'GET', '/version');
    expect(version.text).toMatch(/^\{"version": "[^"]+"\}\n$/);
    expect(version.headers['content-type']).toBe('application/json;charset=utf-8');
    expect(await new Toxiproxy(base).getVersion()).toBe(version.text);
  });

  it('reports listen as given until the proxy has listened, then the bound address', async () => {
    const { base, relay } = await api();
    const given = await post(base, '/proxies', { name: 'a', listen: 'localhost:3310', upstream: '127.0.0.1:9', enabled: false });
    expect((given.json() as { listen: string }).listen).toBe('localhost:3310');
    expect(((await request(base, 'GET', '/proxies/a')).json() as { listen: string }).listen).toBe('localhost:3310');
    // The library still says where it will listen.
    expect(relay.address('a')).toEqual({ host: '127.0.0.1', port: 3310 });
    await post(base, '/proxies', { name: 'b', listen: '127.0.0.1:0', upstream: '127.0.0.1:9', enabled: false });
    expect(((await request(base, 'PATCH', '/proxies/b', '{"listen":"localhost:0"}')).json() as { listen: string }).listen).toBe('localhost:0');
    const enabled = (await request(base, 'PATCH', '/proxies/b', '{"enabled":true}')).json() as { listen: string };
    expect(enabled.listen).toMatch(/^127\.0\.0\.1:[1-9]\d*$/);
    // Disabled again, it keeps the bound address, where it will listen next.
    expect(((await request(base, 'PATCH', '/proxies/b', '{"enabled":false}')).json() as { listen: string }).listen).toBe(enabled.listen);
  });

  it("answers a port conflict with 500 and Go's listen error", async () => {
    const { base } = await api();
    const busy = await busyPort();
    const res = await post(base, '/proxies', { name: 'a', listen: `127.0.0.1:${busy}`, upstream: '127.0.0.1:9' });
    expect(res.status).toBe(500);
    expect(res.text).toBe(`{"error":"listen tcp 127.0.0.1:${busy}: bind: address already in use","status":500}\n`);
    const viaLocalhost = await post(base, '/proxies', { name: 'a', listen: `localhost:${busy}`, upstream: '127.0.0.1:9' });
    expect((viaLocalhost.json() as { error: string }).error).toBe(`listen tcp 127.0.0.1:${busy}: bind: address already in use`);
    expect((await request(base, 'GET', '/proxies')).json()).toEqual({});
  });

  it('populate keeps the entries before one that cannot listen and reports them with the error', async () => {
    const { base } = await api();
    const busy = await busyPort();
    const res = await post(base, '/populate', [
      { name: 'p1', listen: '127.0.0.1:0', upstream: '127.0.0.1:9' },
      { name: 'p2', listen: `127.0.0.1:${busy}`, upstream: '127.0.0.1:9' },
      { name: 'p3', listen: '127.0.0.1:0', upstream: '127.0.0.1:9' },
    ]);
    expect(res.status).toBe(500);
    const body = res.json() as { error: string; status: number; proxies: { name: string; listen: string }[] };
    expect(Object.keys(body)).toEqual(['error', 'status', 'proxies']);
    expect([body.error, body.status]).toEqual([`listen tcp 127.0.0.1:${busy}: bind: address already in use`, 500]);
    expect(body.proxies).toEqual([{ name: 'p1', listen: expect.stringMatching(/^127\.0\.0\.1:[1-9]\d*$/), upstream: '127.0.0.1:9', enabled: true, toxics: [] }]);
    expect(Object.keys((await request(base, 'GET', '/proxies')).json() as object)).toEqual(['p1']);

    const invalid = await post(base, '/populate', [{ name: 'p4', listen: '127.0.0.1:0', upstream: '127.0.0.1:9' }, { name: 'p5' }]);
    expect([invalid.status, invalid.json()]).toEqual([400, { error: 'missing required field: upstream at proxy 2', status: 400, proxies: null }]);
    const first = await post(base, '/populate', [{ name: 'p6', listen: `127.0.0.1:${busy}`, upstream: '127.0.0.1:9' }]);
    expect([first.status, (first.json() as { proxies: unknown }).proxies]).toEqual([500, null]);
    const nullEnabled = await post(base, '/populate', '[{"name":"p7","listen":"127.0.0.1:0","upstream":"127.0.0.1:9","enabled":null}]');
    expect([nullEnabled.status, nullEnabled.json()]).toMatchObject([201, { proxies: [{ name: 'p7', enabled: true }] }]);
    expect(Object.keys((await request(base, 'GET', '/proxies')).json() as object).sort()).toEqual(['p1', 'p7']);

    // toxiproxy-node-client surfaces the failure with its status.
    const err = await new Toxiproxy(base).populate([{ name: 'p8', listen: `127.0.0.1:${busy}`, upstream: '127.0.0.1:9' }]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ToxiproxyError);
    expect((err as ToxiproxyError).message).toContain('status code 500');
  });

  it('with strictApi, keeps the stricter answers', async () => {
    const { base } = await api({ strictApi: true });
    const busy = await busyPort();
    expect((await post(base, '/proxies', { name: 'a', listen: '127.0.0.1:0', upstream: '127.0.0.1:9', bogus: 1 })).json()).toMatchObject({ status: 400, error: expect.stringContaining('unknown field "bogus"') });
    expect((await post(base, '/proxies', { name: 'a', listen: '127.0.0.1:0', upstream: '127.0.0.1:9', enabled: null })).status).toBe(201);
    const refused: [unknown, string][] = [
      [{ type: 'latency', stream: 'UpStream' }, 'stream'],
      [{ type: 'latency', toxicity: 1.5 }, 'toxicity'],
      [{ type: 'latency', attributes: { latency: 5, foo: 1 } }, 'foo'],
      [{ type: 'slicer', attributes: { average_size: 8, size_variation: 8 } }, 'size_variation'],
    ];
    for (const [toxic, field] of refused) {
      const res = await post(base, '/proxies/a/toxics', toxic);
      expect(res.status, JSON.stringify(toxic)).toBe(400);
      expect((res.json() as { error: string }).error).toContain(field);
    }
    expect((await post(base, '/proxies/a/toxics', { type: 'noop' })).status).toBe(200);
    expect((await request(base, 'PATCH', '/proxies/a', '{"name":"b"}')).status).toBe(400);
    const populate = await post(base, '/populate', [
      { name: 'p1', listen: '127.0.0.1:0', upstream: '127.0.0.1:9' },
      { name: 'p2', listen: `127.0.0.1:${busy}`, upstream: '127.0.0.1:9' },
    ]);
    expect([populate.status, (populate.json() as { proxies: unknown }).proxies]).toEqual([500, null]);
    expect(Object.keys((await request(base, 'GET', '/proxies')).json() as object)).toEqual(['a']);
  });
});
