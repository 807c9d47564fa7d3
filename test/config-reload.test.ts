// --config FILE and SIGHUP, run as a user runs them: `splicer` in a child process reading a YAML or
// JSON file, real SOCKS5 clients (the npm `socks` package), tunnels carrying hashed bytes across a
// reload, listen addresses opened and closed, a bad file refused while the old config serves.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { SocksClient } from 'socks';
import { stringify as toYaml } from 'yaml';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { freePort, portOf, runCli, startCli, type CliProcess } from './cli-harness.js';
import * as h from './helpers.js';
import { KiB, patternBytes, sha256 } from './helpers.js';

afterEach(h.closeAll);

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-config-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Writes `config` as YAML or JSON (by the extension) and returns the path. */
function writeConfig(name: string, config: unknown): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, name.endsWith('.json') ? JSON.stringify(config) : toYaml(config));
  return file;
}

/** A test server closed after the test, its accepted sockets too. */
function tracked(server: h.TestServer): h.TestServer {
  h.onCleanup(() => {
    for (const socket of server.conns.items) socket.destroy();
    void server.close();
  });
  return server;
}

async function echoServer(): Promise<number> {
  return tracked(await h.startEchoServer()).port;
}

/** A SOCKS5 CONNECT through the proxy on `proxyPort` to 127.0.0.1:`port`. */
async function socks(proxyPort: number, port: number, user?: [string, string]): Promise<net.Socket> {
  const { socket } = await SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port: proxyPort, type: 5, userId: user?.[0], password: user?.[1] },
    command: 'connect',
    destination: { host: '127.0.0.1', port },
    timeout: 10_000,
  });
  h.onCleanup(() => socket.destroy());
  return socket;
}

/**
 * A transfer through an echo server in two halves, with `between` run after the first half has come
 * back: resolves with whether every byte came back in order (hashes compared).
 */
async function echoAcross(socket: net.Socket, between: () => Promise<void>, bytes = 512 * KiB): Promise<boolean> {
  const data = patternBytes(41, bytes);
  const half = bytes / 2;
  const back = h.hashUntilEnd(socket);
  let received = 0;
  const firstHalfBack = new Promise<void>((resolve) => {
    const onData = (chunk: Buffer) => {
      received += chunk.length;
      if (received >= half) {
        socket.off('data', onData);
        resolve();
      }
    };
    socket.on('data', onData);
  });
  socket.write(data.subarray(0, half));
  await firstHalfBack;
  await between();
  socket.end(data.subarray(half));
  const { sha, bytes: got } = await back;
  return got === bytes && sha === sha256(data);
}

const OUTCOMES = new Set(['config reloaded', 'config reload failed; the running config is kept']);

/** Sends SIGHUP and waits (20 s at most) for the line that says how the reload went. */
async function reload(running: CliProcess): Promise<Record<string, unknown>> {
  const from = running.lines.length;
  running.child.kill('SIGHUP');
  const deadline = Date.now() + 20_000;
  for (;;) {
    const line = running.lines.slice(from).find((l) => OUTCOMES.has(l.msg as string));
    if (line) return line;
    if (Date.now() > deadline) throw new Error(`no reload outcome within 20 s; stderr: ${running.stderr.join('\n')}`);
    await h.sleep(20);
  }
}

function connectRefused(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });
}

const ALICE: [string, string] = ['alice', 'alice-pass'];
const BOB: [string, string] = ['bob', 'bob-pass'];

describe('splicer proxy --config', () => {
  it.each(['proxy.yaml', 'proxy.json'])('%s: the file runs the proxy (listen, users, rules in their order)', async (name) => {
    const echo = await echoServer();
    const file = writeConfig(name, { listen: ['127.0.0.1:0'], auth: [ALICE.join(':')], deny: ['port=1'], allow: ['*'], 'max-connections': 20 });
    const proxy = startCli(['proxy', '--config', file]);
    const started = await proxy.waitFor('proxy listening');
    expect(started.auth).toBe('1 user(s)');
    // deny came first in the file, and a rule list is tried in order.
    expect(started.rules).toEqual(['deny port=1', 'allow *']);
    const port = portOf((started.listen as string[])[0]);
    expect(await echoAcross(await socks(port, echo, ALICE), async () => {})).toBe(true);
    await expect(socks(port, echo, ['alice', 'wrong'])).rejects.toThrow();
    expect(await proxy.stop()).toBe(0);
  });

  it('refuses a file with an unknown key or a bad value, naming the key path, and does not start', () => {
    const typo = writeConfig('typo.yaml', { listen: ['127.0.0.1:0'], 'max-conections': 5 });
    const first = runCli(['proxy', '--config', typo]);
    expect(first.status).toBe(1);
    expect(first.stderr).toContain('max-conections: unknown key (did you mean "max-connections"?)');
    const bad = writeConfig('bad.json', { listen: ['127.0.0.1:0', '127.0.0.1:70000'], 'handshake-timeout': 'soon' });
    const second = runCli(['proxy', '--config', bad]);
    expect(second.status).toBe(1);
    expect(second.stderr).toContain('listen[1]: "127.0.0.1:70000": port 70000 is out of range');
    expect(second.stderr).toContain('handshake-timeout: --handshake-timeout must be a number of seconds >= 0, got "soon"');
    const missing = runCli(['proxy', '--config', path.join(dir, 'absent.yaml')]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('absent.yaml: cannot read it: ENOENT');
  });

  it('lets flags on the command line override the file', async () => {
    const [filePort, cliPort] = [await freePort(), await freePort()];
    const file = writeConfig('override.yaml', { listen: [`127.0.0.1:${filePort}`], 'log-level': 'warn' });
    const proxy = startCli(['proxy', '--config', file, '--listen', `127.0.0.1:${cliPort}`, '--log-level', 'info']);
    // The startup line is at info: the command line's level, not the file's warn.
    const started = await proxy.waitFor('proxy listening');
    expect(started.listen).toEqual([`127.0.0.1:${cliPort}`]);
    expect(await connectRefused(filePort)).toBe('ECONNREFUSED');
    expect(await proxy.stop()).toBe(0);
  });

  it('SIGHUP: a new user gets in, a removed one is refused, and the removed user\'s open tunnel carries on intact', async () => {
    const echo = await echoServer();
    const port = await freePort();
    const file = writeConfig('users.yaml', { listen: [`127.0.0.1:${port}`], auth: [ALICE.join(':')] });
    const proxy = startCli(['proxy', '--config', file]);
    await proxy.waitFor('proxy listening');
    await expect(socks(port, echo, BOB)).rejects.toThrow();
    const aliceTunnel = await socks(port, echo, ALICE);
    const intact = await echoAcross(aliceTunnel, async () => {
      writeConfig('users.yaml', { listen: [`127.0.0.1:${port}`], auth: [BOB.join(':')] });
      const outcome = await reload(proxy);
      expect(outcome.msg).toBe('config reloaded');
      expect(outcome.changed).toEqual(['auth']);
      // While alice's tunnel is open: bob is in, alice's new connections are refused.
      expect(await echoAcross(await socks(port, echo, BOB), async () => {}, 16 * KiB)).toBe(true);
      await expect(socks(port, echo, ALICE)).rejects.toThrow();
    });
    expect(intact).toBe(true);
    expect(await proxy.stop()).toBe(0);
  });

  it('SIGHUP: a new listen address accepts, a removed one refuses, and a connection open on it carries on intact', async () => {
    const echo = await echoServer();
    const [oldPort, newPort] = [await freePort(), await freePort()];
    const file = writeConfig('listen.yaml', { listen: [`127.0.0.1:${oldPort}`] });
    const proxy = startCli(['proxy', '--config', file]);
    await proxy.waitFor('proxy listening');
    expect(await connectRefused(newPort)).toBe('ECONNREFUSED');
    const open = await socks(oldPort, echo);
    const intact = await echoAcross(open, async () => {
      writeConfig('listen.yaml', { listen: [`127.0.0.1:${newPort}`] });
      const outcome = await reload(proxy);
      expect(outcome.msg).toBe('config reloaded');
      expect(outcome.listen).toEqual([`127.0.0.1:${newPort}`]);
      expect(await connectRefused(oldPort)).toBe('ECONNREFUSED');
      expect(await echoAcross(await socks(newPort, echo), async () => {}, 16 * KiB)).toBe(true);
    });
    expect(intact).toBe(true);
    expect(await proxy.stop()).toBe(0);
  });

  it('SIGHUP with a bad file: logged with the key path, and the running config keeps serving', async () => {
    const echo = await echoServer();
    const port = await freePort();
    const file = writeConfig('bad-reload.yaml', { listen: [`127.0.0.1:${port}`], auth: [ALICE.join(':')] });
    const proxy = startCli(['proxy', '--config', file]);
    await proxy.waitFor('proxy listening');
    // Valid YAML, bad values: nothing of it may apply (bob must not get in, alice must stay).
    writeConfig('bad-reload.yaml', { listen: [`127.0.0.1:${port}`], auth: [BOB.join(':')], 'max-connections': 0 });
    const failed = await reload(proxy);
    expect(failed.msg).toBe('config reload failed; the running config is kept');
    expect(failed.err).toContain('max-connections: --max-connections must be from 1 to 1000000, got 0');
    await expect(socks(port, echo, BOB)).rejects.toThrow();
    expect(await echoAcross(await socks(port, echo, ALICE), async () => {}, 16 * KiB)).toBe(true);
    // An address that cannot be bound is an error too, and the old listener stays.
    const taken = tracked(await h.startServer());
    writeConfig('bad-reload.yaml', { listen: [`127.0.0.1:${port}`, `127.0.0.1:${taken.port}`], auth: [BOB.join(':')] });
    expect((await reload(proxy)).msg).toBe('config reload failed; the running config is kept');
    await expect(socks(port, echo, BOB)).rejects.toThrow();
    expect(await echoAcross(await socks(port, echo, ALICE), async () => {}, 16 * KiB)).toBe(true);
    // Fixed, it applies.
    writeConfig('bad-reload.yaml', { listen: [`127.0.0.1:${port}`], auth: [BOB.join(':')] });
    expect((await reload(proxy)).msg).toBe('config reloaded');
    expect(await echoAcross(await socks(port, echo, BOB), async () => {}, 16 * KiB)).toBe(true);
    expect(await proxy.stop()).toBe(0);
  });
});

describe('splicer forward --config', () => {
  it('SIGHUP: a new upstream takes new connections while an open pair stays on the old one, intact', async () => {
    const [first, second] = [await echoServer(), tracked(await h.startServer((socket) => socket.end('second\n')))];
    const port = await freePort();
    const file = writeConfig('forward.yaml', { listen: [`127.0.0.1:${port}`], to: `127.0.0.1:${first}` });
    const forward = startCli(['forward', '--config', file]);
    await forward.waitFor('forwarding');
    const open = await h.connectTo(port);
    h.onCleanup(() => open.destroy());
    const intact = await echoAcross(open, async () => {
      writeConfig('forward.yaml', { listen: [`127.0.0.1:${port}`], to: `127.0.0.1:${second.port}` });
      expect((await reload(forward)).msg).toBe('config reloaded');
      const fresh = await h.connectTo(port);
      fresh.end();
      expect((await h.collectUntilEnd(fresh)).toString()).toBe('second\n');
    });
    expect(intact).toBe(true);
    expect(await forward.stop()).toBe(0);
  });

  it('needs --to from the command line or the file', () => {
    const file = writeConfig('forward-no-to.yaml', { listen: ['127.0.0.1:0'] });
    const result = runCli(['forward', '--config', file]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain("required option '--to <host:port>' not specified");
  });
});

describe('splicer tunnel --config', () => {
  it('SIGHUP on the server: a live tunnel keeps its bytes, the old token is refused to new logins', async () => {
    const echo = await echoServer();
    const OLD = 'config-test-token-0123456789abcdef';
    const NEW = 'config-test-token-fedcba9876543210';
    const serverFile = writeConfig('tunnel-server.yaml', { listen: '127.0.0.1:0', token: OLD, ports: '20000-65000' });
    const server = startCli(['tunnel', 'server', '--config', serverFile]);
    const listening = await server.waitFor('tunnel server listening');
    const serverPort = portOf(listening.listen);
    const clientFile = writeConfig('tunnel-client.json', { server: `127.0.0.1:${serverPort}`, token: OLD, expose: [`echo=127.0.0.1:${echo}`] });
    const client = startCli(['tunnel', 'client', '--config', clientFile]);
    const up = await client.waitFor('tunnel up');
    const publicPort = portOf(up.remote);
    const open = await h.connectTo(publicPort);
    h.onCleanup(() => open.destroy());
    const intact = await echoAcross(open, async () => {
      writeConfig('tunnel-server.yaml', { listen: '127.0.0.1:0', token: NEW, ports: '20000-65000' });
      const outcome = await reload(server);
      expect(outcome.msg).toBe('config reloaded');
      expect(outcome.changed).toEqual(['token']);
      // A second client with the old token is refused at login; the running session is not touched.
      const late = startCli(['tunnel', 'client', '--server', `127.0.0.1:${serverPort}`, '--expose', `late=127.0.0.1:${echo}`], { env: { SPLICER_TUNNEL_TOKEN: OLD } });
      const refused = await server.waitFor('rejected', (line) => line.code === 'auth-failed');
      expect(refused.kind).toBe('control');
      await late.stop();
    });
    expect(intact).toBe(true);
    // The session logged in before the reload still publishes: a new public connection goes through.
    expect(await echoAcross(await h.connectTo(publicPort), async () => {}, 16 * KiB)).toBe(true);
    // A listen change needs a restart: logged, the rest applied.
    writeConfig('tunnel-server.yaml', { listen: '127.0.0.1:1', token: NEW, ports: '20000-65000' });
    server.child.kill('SIGHUP');
    const warned = await server.waitFor('changed settings that need a restart are not applied');
    expect(warned.settings).toEqual(['listen']);
    expect(await client.stop()).toBe(0);
    expect(await server.stop()).toBe(0);
  });
  it('SIGHUP on the client: a service added to expose is published, one removed is taken down, an open stream carries on intact', async () => {
    const echo = await echoServer();
    const TOKEN = 'config-test-token-0123456789abcdef';
    const server = startCli(['tunnel', 'server', '--listen', '127.0.0.1:0', '--ports', '20000-65000'], { env: { SPLICER_TUNNEL_TOKEN: TOKEN } });
    const serverPort = portOf((await server.waitFor('tunnel server listening')).listen);
    const clientFile = writeConfig('tunnel-client-expose.yaml', { server: `127.0.0.1:${serverPort}`, token: TOKEN, expose: [`one=127.0.0.1:${echo}`] });
    const client = startCli(['tunnel', 'client', '--config', clientFile]);
    const onePort = portOf((await client.waitFor('tunnel up', (l) => l.tunnel === 'one')).remote);
    const open = await h.connectTo(onePort);
    h.onCleanup(() => open.destroy());
    let twoPort = 0;
    const intact = await echoAcross(open, async () => {
      writeConfig('tunnel-client-expose.yaml', { server: `127.0.0.1:${serverPort}`, token: TOKEN, expose: [`two=127.0.0.1:${echo}`] });
      const from = client.lines.length;
      const outcome = await reload(client);
      expect(outcome.msg).toBe('config reloaded');
      expect(outcome.changed).toEqual(['expose']);
      twoPort = portOf((await client.waitFor('tunnel up', (l) => l.tunnel === 'two' && client.lines.indexOf(l) >= from)).remote);
      // The new service is published and carries bytes while the first stream is still open.
      expect(await echoAcross(await h.connectTo(twoPort), async () => {}, 16 * KiB)).toBe(true);
    });
    expect(intact, 'the stream open across the reload').toBe(true);
    // The service dropped from the file is no longer published: its port refuses.
    if (twoPort !== onePort) expect(await connectRefused(onePort)).toBe('ECONNREFUSED');
    expect(await client.stop()).toBe(0);
    expect(await server.stop()).toBe(0);
  });
});

describe('splicer relay --config', () => {
  it('SIGHUP: relays added and toxics applied from the Toxiproxy file, an open connection untouched', async () => {
    const echo = await echoServer();
    const [first, second] = [await freePort(), await freePort()];
    const file = writeConfig('relay.json', [{ name: 'one', listen: `127.0.0.1:${first}`, upstream: `127.0.0.1:${echo}` }]);
    const relay = startCli(['relay', '--config', file]);
    await relay.waitFor('relay listening');
    expect(await connectRefused(second)).toBe('ECONNREFUSED');
    const open = await h.connectTo(first);
    h.onCleanup(() => open.destroy());
    const intact = await echoAcross(open, async () => {
      writeConfig('relay.json', [
        { name: 'one', listen: `127.0.0.1:${first}`, upstream: `127.0.0.1:${echo}`, toxics: [{ type: 'noop', name: 'passes' }] },
        { name: 'two', listen: `127.0.0.1:${second}`, upstream: `127.0.0.1:${echo}` },
      ]);
      expect((await reload(relay)).msg).toBe('config reloaded');
      expect(await echoAcross(await h.connectTo(second), async () => {}, 16 * KiB)).toBe(true);
    });
    expect(intact).toBe(true);
    // Dropped from the file: removed.
    writeConfig('relay.json', [{ name: 'one', listen: `127.0.0.1:${first}`, upstream: `127.0.0.1:${echo}` }]);
    expect((await reload(relay)).msg).toBe('config reloaded');
    expect(await connectRefused(second)).toBe('ECONNREFUSED');
    // Not JSON: refused, the relays as they were.
    fs.writeFileSync(file, '[{');
    expect((await reload(relay)).msg).toBe('config reload failed; the running config is kept');
    expect(await echoAcross(await h.connectTo(first), async () => {}, 16 * KiB)).toBe(true);
    expect(await relay.stop()).toBe(0);
  });
});
