// Go's hashicorp/yamux as a test peer: test/peers/yamux-peer built offline (GOPATH mode against
// Debian's golang-github-hashicorp-yamux-dev) into a temp dir, and run with its output kept.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as h from './helpers.js';
import { hasTool, underCi } from './policy.js';

const YAMUX_GO_SRC = '/usr/share/gocode/src/github.com/hashicorp/yamux';

/** Why the Go peer cannot be built here, or undefined. Under CI (which installs both) a missing one throws. */
export const goPeerMissing: string | undefined = !hasTool('go')
  ? 'go is not installed (apt-get install -y golang-go)'
  : !existsSync(YAMUX_GO_SRC)
    ? `${YAMUX_GO_SRC} is missing (apt-get install -y golang-github-hashicorp-yamux-dev)`
    : undefined;
if (goPeerMissing && underCi) throw new Error(`${goPeerMissing}, and CI must have it`);

/** Builds the peer; returns its path and a function removing it. */
export function buildGoPeer(): { binary: string; remove: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'splicer-yamux-peer-'));
  const binary = path.join(dir, 'yamux-peer');
  // GOPATH mode against Debian's sources: no module download, no network.
  execFileSync('go', ['build', '-o', binary, path.join(import.meta.dirname, 'peers', 'yamux-peer', 'main.go')], {
    env: { ...process.env, GO111MODULE: 'off', GOPATH: '/usr/share/gocode', GOPROXY: 'off', GOFLAGS: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
    timeout: 120_000,
  });
  return { binary, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Runs the peer (killed at cleanup): its port once it listens, its exit code, its output. */
export function runGoPeer(binary: string, args: string[]) {
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  h.onCleanup(() => child.kill('SIGKILL'));
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const port = new Promise<number>((resolve, reject) => {
    child.stdout.on('data', () => {
      const m = /listening (\d+)/.exec(stdout);
      if (m) resolve(Number(m[1]));
    });
    void exited.then((code) => reject(new Error(`yamux-peer exited (${code}): ${stderr}`)));
  });
  port.catch(() => {});
  return { child, port, exited, output: () => stdout, errors: () => stderr };
}

export interface EchoClientResult {
  stream: number;
  sent: string;
  received: string;
  bytes: number;
  error?: string;
}

/** The JSON lines of `echo-client`. */
export function echoClientResults(output: string): EchoClientResult[] {
  return output
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as EchoClientResult);
}
