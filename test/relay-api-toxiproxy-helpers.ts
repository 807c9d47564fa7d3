// Toxiproxy as an optional peer: found through $TOXIPROXY_SERVER, else `toxiproxy-server` on PATH
// (scripts/build-toxiproxy.sh builds it). Tests that need it skip, saying why, when it is absent;
// CI does not install it.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import { delimiter, join } from 'node:path';
import { HOST, onCleanup } from './helpers.js';
import { request } from './relay-api-helpers.js';

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The first executable `name` on PATH. */
export function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && executable(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

export function findToxiproxyServer(): { path?: string; reason: string } {
  const fromEnv = process.env.TOXIPROXY_SERVER;
  if (fromEnv) return executable(fromEnv) ? { path: fromEnv, reason: '' } : { reason: `TOXIPROXY_SERVER=${fromEnv} is not an executable file` };
  const found = onPath('toxiproxy-server');
  return found ? { path: found, reason: '' } : { reason: 'toxiproxy-server is not installed (set TOXIPROXY_SERVER or put it on PATH; scripts/build-toxiproxy.sh builds it)' };
}

/** toxiproxy-cli: $TOXIPROXY_CLI, else on PATH. */
export function findToxiproxyCli(): { path?: string; reason: string } {
  const fromEnv = process.env.TOXIPROXY_CLI;
  if (fromEnv) return executable(fromEnv) ? { path: fromEnv, reason: '' } : { reason: `TOXIPROXY_CLI=${fromEnv} is not an executable file` };
  const found = onPath('toxiproxy-cli');
  return found ? { path: found, reason: '' } : { reason: 'toxiproxy-cli is not installed (set TOXIPROXY_CLI or put it on PATH; scripts/build-toxiproxy.sh builds it)' };
}

/** Toxiproxy's source tree ($TOXIPROXY_SRC) and `go`, to build its Go client. */
export function findToxiproxyGoClient(): { src?: string; go?: string; reason: string } {
  const go = onPath('go');
  if (!go) return { reason: 'go is not installed' };
  const src = process.env.TOXIPROXY_SRC;
  if (!src) return { reason: "TOXIPROXY_SRC is not set (a Toxiproxy v2 source tree, for its Go client)" };
  if (!existsSync(join(src, 'client', 'client.go'))) return { reason: `TOXIPROXY_SRC=${src} has no client/client.go` };
  return { src, go, reason: '' };
}

/** A port the kernel just handed out, closed again, for a server that cannot be told to pick one. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, HOST, () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * Starts toxiproxy-server on a loopback port and resolves once it answers /version; it is killed at
 * cleanup. Toxiproxy cannot be told to pick its own port and report it, so a free one is chosen
 * first; if another process takes it in between, the server exits and this rejects.
 */
export async function startToxiproxy(path: string): Promise<{ base: string; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn(path, ['-host', HOST, '-port', String(port)], { env: { ...process.env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'pipe'] });
  onCleanup(() => child.kill('SIGKILL'));
  let stderr = '';
  let gone = false;
  child.once('exit', () => (gone = true));
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`toxiproxy-server exited (${code}): ${stderr}`))));
  exited.catch(() => {});
  const base = `http://${HOST}:${port}`;
  // The server gives no sign of being ready other than answering, so ask until it does.
  const ready = (async () => {
    while (!gone) {
      try {
        if ((await request(base, 'GET', '/version')).status === 200) return;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  })();
  await Promise.race([ready, exited]);
  return { base, child };
}
