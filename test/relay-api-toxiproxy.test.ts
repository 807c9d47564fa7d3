// splicer's relay API side by side with Toxiproxy itself: the same requests to both, the answers
// compared (status, the headers clients read, the JSON). Toxiproxy is an optional peer, found
// through $TOXIPROXY_SERVER or PATH; its Go client is built from $TOXIPROXY_SRC. Without them
// these tests skip and say why.
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { Toxiproxy, type Latency } from 'toxiproxy-node-client';
import { createRelay, type Relay } from '../src/relay/create.js';
import { closeAll, HOST } from './helpers.js';
import { busyPort, quietPort, request, type RawReply } from './relay-api-helpers.js';
import { findToxiproxyCli, findToxiproxyGoClient, findToxiproxyServer, startToxiproxy } from './relay-api-toxiproxy-helpers.js';

const run = promisify(execFile);
const server = findToxiproxyServer();
const goClient = findToxiproxyGoClient();
const cli = findToxiproxyCli();

let relays: Relay[] = [];
afterEach(async () => {
  await Promise.all(relays.map((r) => r.close()));
  relays = [];
  await closeAll();
});

async function splicerApi(): Promise<string> {
  const relay = await createRelay({ api: { host: HOST, port: 0 }, engine: 'js' });
  relays.push(relay);
  return relay.api!.url;
}

/** How a step's answer is compared: `exact` JSON (after normalizing), or only its `shape`. */
type Compare = 'exact' | 'shape';
interface Step {
  method: string;
  path: string;
  body?: string;
  compare: Compare;
}

/**
 * The API script: the ordinary CRUD paths and each point where Toxiproxy's clients depend on its
 * exact answer. `busy` is a loopback port held open by the test.
 */
function script(busy: number): Step[] {
  const up = '"upstream":"127.0.0.1:9"';
  const s = (method: string, path: string, body?: string, compare: Compare = 'exact'): Step => ({ method, path, body, compare });
  return [
    s('GET', '/version', undefined, 'shape'),
    s('GET', '/proxies'),
    s('POST', '/proxies', `{"name":"a","listen":"127.0.0.1:0",${up},"enabled":null}`),
    s('POST', '/proxies', `{"name":"b","listen":"localhost:${busy}",${up},"enabled":false,"bogus":1}`),
    s('GET', '/proxies/b'),
    s('POST', '/proxies', `{"name":"a","listen":"127.0.0.1:0",${up}}`),
    s('POST', '/proxies', `{"name":"c","listen":"127.0.0.1:${busy}",${up}}`),
    s('POST', '/proxies', `{"name":null,${up}}`),
    s('POST', '/proxies', '{"name":"x"}'),
    s('POST', '/proxies', `{"name":"x",${up},"enabled":"yes"}`, 'shape'),
    s('POST', '/proxies', '{"name": ', 'shape'),
    s('POST', '/proxies/a/toxics', '{"type":"latency","attributes":null}'),
    s('POST', '/proxies/a/toxics', '{"name":"up","type":"latency","stream":"upstream","toxicity":1.5,"attributes":{"latency":5,"foo":1},"extra":true}'),
    // Toxiproxy echoes the stream as sent; splicer writes it in lower case.
    s('POST', '/proxies/a/toxics', '{"name":"cased","type":"latency","stream":"DownStream"}', 'shape'),
    s('DELETE', '/proxies/a/toxics/cased'),
    s('POST', '/proxies/a/toxics', '{"type":"slicer","attributes":{"average_size":8,"size_variation":8}}'),
    s('POST', '/proxies/a/toxics', '{"type":"noop"}'),
    s('POST', '/proxies/a/toxics', '{"type":"latency"}'),
    s('POST', '/proxies/a/toxics', '{"type":"explode"}', 'shape'),
    s('POST', '/proxies/a/toxics', '{"name":"x","type":"latency","stream":"sideways"}', 'shape'),
    s('POST', '/proxies/nope/toxics', '{"type":"latency"}'),
    s('GET', '/proxies/a/toxics'),
    s('GET', '/proxies/a/toxics/latency_downstream'),
    s('POST', '/proxies/a/toxics/latency_downstream', '{"attributes":{"jitter":3}}'),
    s('PATCH', '/proxies/a/toxics/latency_downstream', '{"toxicity":0.5,"attributes":null,"name":"zz","type":"bandwidth","stream":"upstream"}'),
    s('PATCH', '/proxies/a/toxics/nope', '{}'),
    s('DELETE', '/proxies/a/toxics/latency_downstream'),
    s('DELETE', '/proxies/a/toxics/latency_downstream'),
    s('GET', '/proxies/a'),
    s('POST', '/proxies/a', '{"enabled":false,"name":"renamed","unknown":1}'),
    s('PATCH', '/proxies/a', '{"enabled":null,"listen":null,"upstream":null}'),
    s('PATCH', '/proxies/a', '{"enabled":true,"upstream":"127.0.0.1:10"}'),
    s('PATCH', '/proxies/nope', '{}'),
    s('POST', '/populate', `[{"name":"p1","listen":"127.0.0.1:0",${up}},{"name":"p2","listen":"127.0.0.1:${busy}",${up}},{"name":"p3","listen":"127.0.0.1:0",${up}}]`),
    s('POST', '/populate', `[{"name":"p4","listen":"127.0.0.1:0",${up},"enabled":null}]`),
    s('POST', '/populate', `[{"name":"p5","listen":"127.0.0.1:0",${up}},{"name":"p6"}]`),
    s('POST', '/populate', `[{"name":"p7","listen":"127.0.0.1:${busy}",${up}}]`),
    s('GET', '/proxies'),
    // Toxiproxy's reset stops at the first proxy that cannot listen, in Go's random map order, so
    // which toxics survive it would vary: b (on the busy port) goes first.
    s('DELETE', '/proxies/b'),
    s('POST', '/reset'),
    s('GET', '/proxies/a'),
    s('DELETE', '/proxies/a'),
    s('DELETE', '/proxies/a'),
    s('GET', '/proxies/a'),
  ];
}

/** Bound ports differ from run to run; a port asked for (0, or the busy one) is kept. */
function normalize(value: unknown, busy: number): unknown {
  if (Array.isArray(value)) return value.map((v) => normalize(v, busy));
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    // Toxiproxy leaks an empty "Logger" object into each proxy; no client reads it.
    if (key === 'Logger') continue;
    out[key] = key === 'listen' && typeof v === 'string' ? v.replace(/:(\d+)$/, (m, port: string) => (port === '0' || Number(port) === busy ? m : ':BOUND')) : normalize(v, busy);
  }
  return out;
}

/** Keys and value types, recursively: what a client's decoder sees, without the values. */
function shape(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(shape);
  if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, shape(v)]));
  return value === null ? 'null' : typeof value;
}

interface Answer {
  step: string;
  status: number;
  requestId: boolean;
  json: unknown;
  contentType?: string;
}

async function play(base: string, steps: Step[], busy: number): Promise<Answer[]> {
  const answers: Answer[] = [];
  for (const step of steps) {
    const res: RawReply = await request(base, step.method, step.path, step.body);
    const json = res.text === '' ? undefined : (JSON.parse(res.text) as unknown);
    answers.push({
      step: `${step.method} ${step.path} ${step.body ?? ''}`,
      status: res.status,
      requestId: typeof res.headers['x-toxiproxy-request-id'] === 'string',
      json: step.compare === 'exact' ? normalize(json, busy) : shape(json),
      // Toxiproxy sends its errors as text/plain (Go's http.Error) although they are JSON; only
      // successful answers' types are compared.
      contentType: res.status < 300 ? res.headers['content-type']?.split(';')[0] : undefined,
    });
  }
  return answers;
}

describe.skipIf(!server.path)(`relay API against Toxiproxy itself${server.path ? '' : ` (skipped: ${server.reason})`}`, () => {
  it('answers the API script as Toxiproxy does', async () => {
    const busy = await busyPort();
    const steps = script(busy);
    const toxiproxy = await startToxiproxy(server.path!);
    const theirs = await play(toxiproxy.base, steps, busy);
    const ours = await play(await splicerApi(), steps, busy);
    for (let i = 0; i < steps.length; i++) expect(ours[i], theirs[i]!.step).toEqual(theirs[i]);
  });

  it('writes /version byte for byte as Toxiproxy does, apart from the version itself', async () => {
    const toxiproxy = await startToxiproxy(server.path!);
    const theirs = await request(toxiproxy.base, 'GET', '/version');
    const ours = await request(await splicerApi(), 'GET', '/version');
    const template = (r: RawReply) => [r.status, r.headers['content-type'], r.text.replace(/"version": "[^"]*"/, '"version": "V"')];
    expect(template(ours)).toEqual(template(theirs));
    expect(template(ours)).toEqual([200, 'application/json;charset=utf-8', '{"version": "V"}\n']);
  });
});

/** toxiproxy-node-client through the ordinary paths and two failures, as lines to compare. */
async function nodeClientTranscript(base: string, busy: number): Promise<string[]> {
  const lines: string[] = [];
  const attempt = async (what: string, fn: () => Promise<string>) => {
    try {
      lines.push(`${what}: ${await fn()}`);
    } catch (err) {
      lines.push(`${what}: error ${(err as Error).message}`);
    }
  };
  const client = new Toxiproxy(base);
  const proxy = await client.createProxy({ name: 'n', listen: `127.0.0.1:${await quietPort()}`, upstream: '127.0.0.1:9' });
  lines.push(`create: enabled=${proxy.enabled} upstream=${proxy.upstream}`);
  const toxic = await proxy.addToxic<Latency>({ name: 'lag', type: 'latency', stream: 'upstream', toxicity: 1, attributes: { latency: 5, jitter: 0 } });
  lines.push(`add toxic: ${JSON.stringify(toxic.attributes)} ${toxic.stream} ${toxic.toxicity}`);
  const updated = await toxic.update({ ...toxic, toxicity: 0.5, attributes: { latency: 7, jitter: 1 } });
  lines.push(`update toxic: ${JSON.stringify(updated.attributes)} ${updated.toxicity}`);
  await attempt('refresh', async () => {
    const fresh = await client.get('n');
    return `${fresh.toJson().toxics.map((t) => t.name).join(',')} enabled=${fresh.enabled}`;
  });
  await attempt('disable', async () => `${(await proxy.update({ enabled: false, listen: proxy.listen, upstream: proxy.upstream })).enabled}`);
  await attempt('create twice', async () => (await client.createProxy({ name: 'n', listen: '127.0.0.1:0', upstream: '127.0.0.1:9' })).name);
  await attempt('populate', async () =>
    Object.keys(
      await client.populate([
        { name: 'p1', listen: '127.0.0.1:0', upstream: '127.0.0.1:9' },
        { name: 'p2', listen: `127.0.0.1:${busy}`, upstream: '127.0.0.1:9' },
      ]),
    ).join(','),
  );
  await attempt('all', async () => Object.keys(await client.getAll()).sort().join(','));
  await attempt('get unknown', async () => (await client.get('nope')).name);
  await attempt('reset', async () => (await client.reset(), 'done'));
  await attempt('after reset', async () => {
    const fresh = await client.get('n');
    return `${fresh.toJson().toxics.length} toxics, enabled=${fresh.enabled}`;
  });
  await attempt('remove', async () => (await proxy.remove(), 'done'));
  return lines;
}

describe.skipIf(!server.path)(`relay API with toxiproxy-node-client, against Toxiproxy itself${server.path ? '' : ` (skipped: ${server.reason})`}`, () => {
  it('gives the client the same answers as Toxiproxy', async () => {
    const busy = await busyPort();
    const toxiproxy = await startToxiproxy(server.path!);
    const theirs = await nodeClientTranscript(toxiproxy.base, busy);
    const ours = await nodeClientTranscript(await splicerApi(), busy);
    expect(ours).toEqual(theirs);
    expect(ours).toContain('populate: error Request failed with status code 500');
    expect(ours).toContain('all: n,p1');
  });
});

describe.skipIf(!goClient.src)(`relay API with Toxiproxy's Go client${goClient.src ? '' : ` (skipped: ${goClient.reason})`}`, () => {
  let binary: string;

  /** Builds test/fixtures/toxiproxy-go-client.go against the client in $TOXIPROXY_SRC, GOPATH mode, offline. */
  async function build(): Promise<string> {
    const gopath = mkdtempSync(join(tmpdir(), 'splicer-toxiproxy-go-'));
    const pkg = join(gopath, 'src', 'github.com', 'Shopify', 'toxiproxy');
    mkdirSync(pkg, { recursive: true });
    symlinkSync(goClient.src!, join(pkg, 'v2'));
    mkdirSync(join(gopath, 'src', 'relaycheck'));
    copyFileSync(join(import.meta.dirname, 'fixtures', 'toxiproxy-go-client.go'), join(gopath, 'src', 'relaycheck', 'main.go'));
    const env = { ...process.env, GO111MODULE: 'off', GOPROXY: 'off', GOFLAGS: '', GOPATH: gopath };
    const out = join(gopath, 'relaycheck');
    await run(goClient.go!, ['build', '-o', out, 'relaycheck'], { env, cwd: gopath });
    binary = out;
    return gopath;
  }

  async function transcript(base: string, upstream: string, busy: number): Promise<string> {
    const { stdout } = await run(binary, [base, upstream, String(busy)]);
    return stdout;
  }

  it('drives splicer with nil attributes, noop, a busy port and a partial populate, as it drives Toxiproxy', { timeout: 120_000 }, async () => {
    const gopath = await build();
    try {
      const busy = await busyPort();
      const ours = await transcript(await splicerApi(), '127.0.0.1:9', busy);
      expect(ours).toContain('add toxic with nil attributes: ok latency_downstream latency downstream 1.00 {jitter=0,latency=0}');
      expect(ours).toContain('update toxic: ok lag latency upstream 0.50 {jitter=2,latency=5}');
      expect(ours).toContain('add noop: ok quiet noop downstream 1.00 {}');
      expect(ours).toContain(`create on a busy port: error create: HTTP 500: listen tcp 127.0.0.1:${busy}: bind: address already in use`);
      expect(ours).toContain(`populate with a busy port: error Populate: HTTP 500: listen tcp 127.0.0.1:${busy}: bind: address already in use`);
      expect(ours).toContain('proxies: ok go,pop1');
      expect(ours).not.toMatch(/^(create|add toxic|update toxic|add noop|list toxics|remove toxic|disable|enable|reset|delete \w+): error/m);
      if (server.path) {
        const toxiproxy = await startToxiproxy(server.path);
        const theirs = await transcript(toxiproxy.base, '127.0.0.1:9', busy);
        expect(ours.replaceAll(/http:\/\/127\.0\.0\.1:\d+/g, 'API')).toBe(theirs.replaceAll(/http:\/\/127\.0\.0\.1:\d+/g, 'API'));
      }
    } finally {
      rmSync(gopath, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!cli.path)(`relay API with toxiproxy-cli${cli.path ? '' : ` (skipped: ${cli.reason})`}`, () => {
  /** Each command's output (or its failure), with bound ports masked. */
  async function cliTranscript(base: string): Promise<string[]> {
    const commands = [
      ['create', '-l', '127.0.0.1:0', '-u', '127.0.0.1:9', 'web'],
      ['toxic', 'add', '-t', 'latency', '-a', 'latency=100', 'web'],
      ['toxic', 'add', '-t', 'noop', '-u', 'web'],
      ['toxic', 'add', '-t', 'slicer', '-a', 'average_size=8', '-a', 'size_variation=8', '-tox', '0.5', 'web'],
      ['toxic', 'update', '-n', 'latency_downstream', '-a', 'jitter=5', 'web'],
      ['inspect', 'web'],
      ['toggle', 'web'],
      ['list'],
      ['toxic', 'remove', '-n', 'latency_downstream', 'web'],
      ['toxic', 'remove', '-n', 'latency_downstream', 'web'],
      ['delete', 'web'],
      ['inspect', 'web'],
    ];
    const lines: string[] = [];
    for (const args of commands) {
      const out = await run(cli.path!, ['--host', base, ...args]).then(
        ({ stdout, stderr }) => stdout + stderr,
        (err: { stdout?: string; stderr?: string }) => `failed: ${err.stdout ?? ''}${err.stderr ?? ''}`,
      );
      lines.push(`${args.join(' ')} => ${out.replaceAll(/127\.0\.0\.1:(?!0\b|9\b)\d+/g, '127.0.0.1:BOUND').replaceAll(base, 'API')}`);
    }
    return lines;
  }

  it('creates, adds noop and a slicer with variation equal to its average, updates, toggles and deletes, as with Toxiproxy', async () => {
    const ours = await cliTranscript(await splicerApi());
    expect(ours.join('\n')).toMatch(/Added upstream noop toxic 'noop_upstream' on proxy 'web'/);
    expect(ours.join('\n')).toMatch(/latency_downstream\ttype=latency\tstream=downstream\ttoxicity=1.00\tattributes=\[\tjitter=5\tlatency=100\t\]/);
    expect(ours.join('\n')).toMatch(/slicer_downstream\ttype=slicer\tstream=downstream\ttoxicity=0.50/);
    if (server.path) {
      const toxiproxy = await startToxiproxy(server.path);
      expect(ours).toEqual(await cliTranscript(toxiproxy.base));
    }
  });
});
