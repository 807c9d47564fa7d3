// `splicer tunnel server` and `splicer tunnel client` run as a user would: child processes, real curl,
// killed and restarted.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { freePort, portOf, runCli, startCli } from './cli-harness.js';
import { needsTool, spliceSkipReason } from './policy.js';

const TOKEN = 'cli-test-token-0123456789abcdef';

const run = (args: string[], env: Record<string, string> = {}) => startCli(['tunnel', ...args], { env });

function curl(url: string): Promise<{ status: number; stdout: Buffer }> {
  return new Promise((resolve) => {
    const child = spawn('curl', ['-sS', '--max-time', '10', url]);
    const chunks: Buffer[] = [];
    child.stdout.on('data', (chunk) => chunks.push(chunk));
    child.on('close', (status) => resolve({ status: status ?? -1, stdout: Buffer.concat(chunks) }));
  });
}


const sha = (data: Buffer) => crypto.createHash('sha256').update(data).digest('hex');

describe('splicer tunnel (CLI)', () => {
  let dir: string;
  let tokenFile: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-tunnel-cli-'));
    tokenFile = path.join(dir, 'token');
    fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('refuses to start without a token, and names the ways to give one', () => {
    const env = { SPLICER_TUNNEL_TOKEN: '' };
    const server = runCli(['tunnel', 'server', '--listen', '127.0.0.1:0'], { env });
    expect(server.status).toBe(1);
    expect(server.stderr).toMatch(/refusing to start without a token/);
    expect(server.stderr).toMatch(/--token-file/);
    expect(server.stderr).toMatch(/SPLICER_TUNNEL_TOKEN/);
    const client = runCli(['tunnel', 'client', '--server', '127.0.0.1:1', '--expose', 'web=127.0.0.1:80'], { env });
    expect(client.status).toBe(1);
    expect(client.stderr).toMatch(/without a token/);
    const badExpose = runCli(['tunnel', 'client', '--server', '127.0.0.1:1', '--expose', 'web/x=127.0.0.1:80'], { env });
    expect(badExpose.status).not.toBe(0);
    expect(badExpose.stderr).toMatch(/"web\/x"/);
    const badPorts = runCli(['tunnel', 'server', '--listen', '127.0.0.1:0', '--ports', '20100-20000'], { env });
    expect(badPorts.status).not.toBe(0);
    expect(badPorts.stderr).toMatch(/20100-20000/);
  });

  it('refuses a --data-path native it cannot have, naming the flag, and takes --data-path from --config', async () => {
    const env = { SPLICER_TUNNEL_TOKEN: TOKEN };
    const withJs = runCli(['tunnel', 'server', '--listen', '127.0.0.1:0', '--data-path', 'native', '--engine', 'js'], { env });
    expect(withJs.status).toBe(1);
    expect(withJs.stderr).toMatch(/--data-path native needs the splice engine, not --engine js/);
    const noAddon = runCli(['tunnel', 'server', '--listen', '127.0.0.1:0', '--data-path', 'native'], { env: { ...env, SPLICER_DISABLE_NATIVE: '1' } });
    expect(noAddon.status).toBe(1);
    expect(noAddon.stderr).toMatch(/--data-path native.*SPLICER_DISABLE_NATIVE/);
    const badChoice = runCli(['tunnel', 'server', '--listen', '127.0.0.1:0', '--data-path', 'fast'], { env });
    expect(badChoice.status).not.toBe(0);
    expect(badChoice.stderr).toMatch(/--data-path/);
    const config = path.join(dir, 'server-node.json');
    fs.writeFileSync(config, JSON.stringify({ listen: '127.0.0.1:0', 'data-path': 'node' }));
    const server = run(['server', '--config', config], env);
    expect(await server.waitFor('tunnel server listening')).toMatchObject({ dataPath: 'node' });
    await server.stop();
  });

  it('documents every flag in --help', () => {
    const flags = {
      server: ['--listen', '--token', '--token-file', '--ports', '--public-host', '--tls-cert', '--tls-key', '--heartbeat', '--heartbeat-timeout', '--data-timeout', '--handshake-timeout', '--max-pool', '--idle-timeout', '--engine', '--data-path', '--threads', '--grace', '--metrics', '--open', '--log-level', '--config'],
      client: ['--server', '--token', '--token-file', '--expose', '--client-id', '--pool', '--mux', '--mux-window', '--mux-max-streams', '--mux-keepalive', '--tls', '--tls-ca', '--tls-fingerprint', '--tls-servername', '--connect-timeout', '--backoff-max', '--idle-timeout', '--engine', '--data-path', '--threads', '--grace', '--metrics', '--open', '--log-level', '--config'],
    };
    for (const [command, expected] of Object.entries(flags)) {
      const help = runCli(['tunnel', command, '--help']).stdout;
      const documented = [...help.matchAll(/^\s+(--[a-z-]+)/gm)].map((m) => m[1]).filter((f) => f !== '--help');
      expect(documented.sort(), command).toEqual([...expected].sort());
    }
  });

  describe('a two-process tunnel', () => {
    beforeEach((ctx) => needsTool(ctx, 'curl'));
    const body = crypto.randomBytes(4 << 20);
    let origin: http.Server;
    let originPort: number;
    beforeAll(async () => {
      origin = http.createServer((req, res) => {
        res.setHeader('content-length', body.length);
        res.end(body);
      });
      await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
      originPort = (origin.address() as net.AddressInfo).port;
    });
    afterAll(() => new Promise<void>((resolve) => origin.close(() => resolve())));

    it('publishes a service for curl, survives a client kill -9 and a server restart, and stops cleanly', async () => {
      const listenPort = await freePort();
      const serverArgs = ['server', '--listen', `127.0.0.1:${listenPort}`, '--heartbeat', '0.2', '--heartbeat-timeout', '1', '--grace', '0'];
      const env = { SPLICER_TUNNEL_TOKEN: TOKEN };
      let server = run(serverArgs, env);
      const started = await server.waitFor('tunnel server listening');
      expect(portOf(started.listen)).toBe(listenPort);
      expect(started).toMatchObject({ publicHost: '127.0.0.1', tls: false, dataPath: spliceSkipReason ? 'node' : 'native' });

      const clientArgs = ['client', '--server', `127.0.0.1:${listenPort}`, '--token-file', tokenFile, '--expose', `web=127.0.0.1:${originPort}@0`, '--backoff-max', '0.3', '--grace', '0'];
      let client = run(clientArgs);
      const up = await client.waitFor('tunnel up');
      const port = portOf(up.remote);
      expect(up).toMatchObject({ tunnel: 'web', local: `127.0.0.1:${originPort}` });
      await client.waitForStderr(`splicer tunnel: web 127.0.0.1:${port} -> 127.0.0.1:${originPort}`);

      const first = await curl(`http://127.0.0.1:${port}/`);
      expect(first.status).toBe(0);
      expect(sha(first.stdout)).toBe(sha(body));
      const record = await server.waitFor('connection closed');
      expect(record).toMatchObject({ tunnel: 'web', reason: 'eof', engine: spliceSkipReason ? 'js' : 'splice' });
      expect(record.bytesDown).toBeGreaterThan(body.length);
      const clientRecord = await client.waitFor('connection closed');
      expect(clientRecord).toMatchObject({ tunnel: 'web', reason: 'eof', bytesDown: record.bytesDown });

      // kill -9 the client: its sessions's sockets close with it; a new one (same flags, same derived id) gets the port back.
      client.child.kill('SIGKILL');
      await client.exited;
      await server.waitFor('tunnel down');
      client = run(clientArgs);
      expect(portOf((await client.waitFor('tunnel up')).remote)).toBe(port);
      expect((await curl(`http://127.0.0.1:${port}/`)).status).toBe(0);

      // Restart the server: the client reconnects by itself and registers again.
      server.child.kill('SIGTERM');
      expect(await server.exited).toBe(0);
      await client.waitFor('disconnected');
      server = run(serverArgs, env);
      const again = portOf((await client.waitFor('tunnel up')).remote);
      const third = await curl(`http://127.0.0.1:${again}/`);
      expect(third.status).toBe(0);
      expect(sha(third.stdout)).toBe(sha(body));

      client.child.kill('SIGTERM');
      expect(await client.exited).toBe(0);
      expect(client.lines.some((line) => line.msg === 'stopped')).toBe(true);
      server.child.kill('SIGTERM');
      expect(await server.exited).toBe(0);
    }, 60_000);
  });
});
