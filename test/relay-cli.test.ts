// `splicer relay` run as a user would: a child process, its log lines, SIGTERM, and its errors.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { afterAll, describe, expect, it } from 'vitest';
import { portOf, runCli, startCli } from './cli-harness.js';
import { needsTool } from './policy.js';
import { collectUntilEnd, connectTo, patternBytes, startEchoServer, within } from './helpers.js';
import { parseFollow, tshark } from './relay-pcap-helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'splicer-relay-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const start = (args: string[]) => startCli(['relay', ...args]);
const runToEnd = (args: string[]) => runCli(['relay', ...args]);

describe('splicer relay (CLI)', () => {
  it('relays with a latency toxic, records both legs, logs the seed, and stops cleanly on SIGTERM', async (ctx) => {
    needsTool(ctx, 'tshark');
    const echo = await startEchoServer();
    const file = path.join(dir, 'cli.pcap');
    const relay = start(['--listen', '127.0.0.1:0', '--to', `127.0.0.1:${echo.port}`, '--toxic', 'latency@upstream:latency=120', '--record', file]);
    const ready = await relay.waitFor('relay listening');
    expect(typeof ready.seed).toBe('number');
    const relays = ready.relays as { name: string; listen: string; toxics: string[] }[];
    expect(relays[0]!.name).toBe('relay1');
    expect(relays[0]!.toxics).toEqual(['latency_upstream']);
    const client = await connectTo(portOf(relays[0]!.listen));
    const data = patternBytes(8, 100_000);
    const started = performance.now();
    const got = collectUntilEnd(client);
    client.end(data);
    expect((await within(got, 10_000, 'echo')).equals(data)).toBe(true);
    expect(performance.now() - started).toBeGreaterThanOrEqual(120);
    const closed = await relay.waitFor('connection closed');
    expect(closed).toMatchObject({ relay: 'relay1', bytesUp: data.length, bytesDown: data.length, reason: 'eof', engine: 'js' });
    relay.child.kill('SIGTERM');
    expect(await within(relay.exited, 10_000, 'exit')).toBe(0);
    const streams = parseFollow(tshark(['-r', file, '-q', '-z', 'follow,tcp,raw,0', '-z', 'follow,tcp,raw,1']));
    expect(streams).toHaveLength(2);
    for (const leg of streams) {
      expect(leg.client.equals(data)).toBe(true);
      expect(leg.server.equals(data)).toBe(true);
    }
  });

  it('opens the relays of a Toxiproxy config file, with their toxics', async () => {
    const echo = await startEchoServer();
    const config = path.join(dir, 'relays.json');
    writeFileSync(config, JSON.stringify([
      { name: 'echo', listen: '127.0.0.1:0', upstream: `127.0.0.1:${echo.port}`, toxics: [{ type: 'latency', attributes: { latency: 80 } }] },
    ]));
    const relay = start(['--config', config, '--seed', '5']);
    const ready = await relay.waitFor('relay listening');
    expect(ready.seed).toBe(5);
    const relays = ready.relays as { name: string; listen: string }[];
    expect(relays.map((r) => r.name)).toEqual(['echo']);
    const client = await connectTo(portOf(relays[0]!.listen));
    const started = performance.now();
    const got = collectUntilEnd(client);
    client.end('x');
    expect((await within(got, 10_000, 'echo')).toString()).toBe('x');
    expect(performance.now() - started).toBeGreaterThanOrEqual(80);
  });

  it.each([
    [['--listen', ':0'], /each --listen needs a --to/],
    [['--listen', ':0', '--to', '127.0.0.1:1', '--toxic', 'latency:latency=-5'], /--toxic latency:latency=-5: attributes.latency: milliseconds cannot be negative/],
    [['--listen', ':0', '--to', '127.0.0.1:1', '--toxic', 'warp:speed=9'], /--toxic warp:speed=9: .*unknown toxic type/],
    [['--listen', ':0', '--to', '127.0.0.1:1', '--seed', 'abc'], /--seed must be a whole number/],
    [[], /nothing to relay/],
    [['--listen', '0.0.0.0:0', '--to', '127.0.0.1:1'], /--open/],
    [['--config', '/nonexistent/relays.json'], /--config \/nonexistent\/relays.json: ENOENT/],
  ])('refuses %j with a message naming what was wrong', (args, message) => {
    const { status, stderr } = runToEnd(args);
    expect(status).not.toBe(0);
    expect(stderr).toMatch(message);
  });
});
