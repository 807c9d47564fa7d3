// `splicer forward` with --mux-data-path: `--to mux://` in front of `--listen mux://`, their
// streams spliced by the addon, carrying hashed bulk, curl and ncat traffic; the startup line and
// connection records saying so; a --config key; and the refusals that name why splice cannot be used.
import { afterEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import * as h from './helpers.js';
import { MiB } from './helpers.js';
import { freePort, portOf, runCli, startCli, type CliProcess } from './cli-harness.js';
import { hasTool, spliceSkipReason } from './policy.js';

afterEach(h.closeAll);

/** `--listen mux://` to the target, and `--to mux://` to it: the front's port and both processes. */
async function chain(targetPort: number, extra: string[]): Promise<{ frontPort: number; front: CliProcess; back: CliProcess; lines: [Record<string, unknown>, Record<string, unknown>] }> {
  const back = startCli(['forward', '--listen', 'mux://127.0.0.1:0', '--to', `127.0.0.1:${targetPort}`, '--log-level', 'info', ...extra]);
  const backLine = await back.waitFor('forwarding');
  const muxPort = portOf((backLine.listen as string[])[0]);
  const front = startCli(['forward', '--listen', '127.0.0.1:0', '--to', `mux://127.0.0.1:${muxPort}`, '--log-level', 'info', ...extra]);
  const frontLine = await front.waitFor('forwarding');
  return { frontPort: portOf((frontLine.listen as string[])[0]), front, back, lines: [frontLine, backLine] };
}

describe.skipIf(spliceSkipReason)(`splicer forward --mux-data-path splice${spliceSkipReason ? `: skipped, ${spliceSkipReason}` : ''}`, () => {
  it('carries 12 TCP clients × 4 MiB through both spliced hops, hashed both ways; records say splice; SIGTERM exits 0', async () => {
    const target = await h.startEchoServer();
    const { frontPort, front, back, lines } = await chain(target.port, ['--mux-data-path', 'splice']);
    for (const line of lines) {
      expect(line.muxDataPath).toBe('splice');
      expect(line.engine).toBe('splice');
    }
    await h.within(
      Promise.all(
        Array.from({ length: 12 }, async (_, i) => {
          const client = await h.connectTo(frontPort);
          const received = h.hashUntilEnd(client);
          const sent = await h.writeRandom(client, 500 + i, 4 * MiB);
          expect(await received).toEqual(sent);
        }),
      ),
      60_000,
      'clients through two spliced hops',
    );
    expect(target.conns.items).toHaveLength(12);
    const frontRecord = await front.waitFor('connection closed');
    expect(frontRecord).toMatchObject({ engine: 'splice', reason: 'eof', bytesUp: 4 * MiB, bytesDown: 4 * MiB });
    const backRecord = await back.waitFor('connection closed');
    expect(backRecord).toMatchObject({ engine: 'splice', reason: 'eof', bytesUp: 4 * MiB, bytesDown: 4 * MiB });
    expect(await front.stop()).toBe(0);
    expect(await back.stop()).toBe(0);
  });

  it.skipIf(!hasTool('curl'))('auto (the default) splices, and carries curl to an HTTP server: the body hashed', async () => {
    const body = h.patternBytes(7, 3 * MiB);
    const server = h.track(http.createServer((_req, res) => res.end(body)));
    const port = await h.listen(server);
    const { frontPort, lines } = await chain(port, []);
    expect(lines.map((l) => l.muxDataPath)).toEqual(['splice', 'splice']);
    const out = await new Promise<Buffer>((resolve, reject) =>
      execFile('curl', ['-sS', '--max-time', '20', `http://127.0.0.1:${frontPort}/`], { encoding: 'buffer', maxBuffer: 16 * MiB }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
    );
    expect(createHash('sha256').update(out).digest('hex')).toBe(h.sha256(body));
  });

  it.skipIf(!hasTool('ncat'))('carries ncat: a file sent through both hops arrives whole at an ncat listener', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'splicer-ncat-'));
    h.onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const data = h.patternBytes(8, 2 * MiB);
    writeFileSync(path.join(dir, 'in'), data);
    const sink = await freePort();
    const listener = execFile('sh', ['-c', `ncat -l 127.0.0.1 ${sink} > ${path.join(dir, 'out')}`]);
    h.onCleanup(() => listener.kill('SIGKILL'));
    const received = new Promise((resolve) => listener.once('exit', resolve));
    await h.sleep(300);
    const { frontPort } = await chain(sink, ['--mux-data-path', 'splice']);
    await new Promise<void>((resolve, reject) =>
      execFile('sh', ['-c', `ncat --send-only 127.0.0.1 ${frontPort} < ${path.join(dir, 'in')}`], { timeout: 20_000 }, (err) => (err ? reject(err) : resolve())),
    );
    await h.within(received, 20_000, 'ncat listener exiting');
    expect(h.sha256(readFileSync(path.join(dir, 'out')))).toBe(h.sha256(data));
  });

  it('takes mux-data-path from --config', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'splicer-config-'));
    h.onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'forward.yaml');
    writeFileSync(file, 'listen: [mux://127.0.0.1:0]\nto: 127.0.0.1:9\nmux-data-path: js\n');
    const run = startCli(['forward', '--config', file]);
    expect((await run.waitFor('forwarding')).muxDataPath).toBe('js');
    expect(await run.stop()).toBe(0);
  });
});

describe('splicer forward --mux-data-path: refusals and help', () => {
  it.each([
    [['--listen', 'mux://127.0.0.1:0', '--to', '127.0.0.1:80', '--mux-data-path', 'splice', '--engine', 'js'], /--mux-data-path splice.*--engine js/],
    [['--listen', 'mux+tls://127.0.0.1:0', '--to', '127.0.0.1:80', '--tls-cert', 'x', '--tls-key', 'y', '--mux-data-path', 'splice'], /--mux-data-path splice.*mux\+tls/],
    [['--listen', 'mux://127.0.0.1:0', '--to', 'tls://127.0.0.1:80', '--mux-data-path', 'splice'], /--mux-data-path splice.*tls:\/\/.*TLS/],
    [['--listen', '127.0.0.1:0', '--to', 'mux://127.0.0.1:80', '--mux-data-path', 'splice', '--idle-timeout', '5'], /--mux-data-path splice.*--idle-timeout/],
    [['--listen', '127.0.0.1:0', '--to', '127.0.0.1:80', '--mux-data-path', 'splice'], /--mux-data-path is for a mux:\/\//],
    [['--listen', '127.0.0.1:0', '--to', 'mux://127.0.0.1:80', '--mux-data-path', 'fast'], /--mux-data-path.*fast.*auto, splice, js|Allowed choices/],
  ])('refuses forward %j, naming why', (args, message) => {
    const result = runCli(['forward', ...(args as string[])]);
    expect(result.status).not.toBe(0);
    expect(result.stderr + result.stdout).toMatch(message);
  });

  it('refuses splice where the addon is switched off, naming why', () => {
    const result = runCli(['forward', '--listen', '127.0.0.1:0', '--to', 'mux://127.0.0.1:80', '--mux-data-path', 'splice'], { env: { SPLICER_DISABLE_NATIVE: '1' } });
    expect(result.status).not.toBe(0);
    expect(result.stderr).toMatch(/--mux-data-path splice.*SPLICER_DISABLE_NATIVE=1/);
  });

  it('runs on the JS path with auto where the addon is switched off', async () => {
    const target = await h.startEchoServer();
    const env = { SPLICER_DISABLE_NATIVE: '1' };
    const back = startCli(['forward', '--listen', 'mux://127.0.0.1:0', '--to', `127.0.0.1:${target.port}`], { env });
    const backLine = await back.waitFor('forwarding');
    expect(backLine.muxDataPath).toBe('js');
    expect(await back.stop()).toBe(0);
  });

  it('documents --mux-data-path in --help', () => {
    const help = runCli(['forward', '--help']).stdout;
    expect(help).toContain('--mux-data-path <path>');
    expect(help).toMatch(/splice[\s\S]*js[\s\S]*auto/);
  });
});
