// Process exit with pairs in flight: the native loop threads must not hang or crash the exit.
// The child runs the built package (dist/), as a user's program would.
import { beforeEach, describe, it, expect } from 'vitest';
import { needsSplice } from './policy.js';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const child = path.join(root, 'test', 'fixtures', 'exit-child.mjs');
const workerParent = path.join(root, 'test', 'fixtures', 'worker-parent.mjs');
const neverClosed = path.join(root, 'test', 'fixtures', 'never-closed-child.mjs');
const dist = path.join(root, 'dist', 'index.js');
/** If the child does not exit by then, it hung: it is killed and the test fails. */
const HANG_MS = 30_000;

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  hung: boolean;
}

function runChild(args: string[], script = child): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [script, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let hung = false;
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      hung = true;
      p.kill('SIGKILL');
    }, HANG_MS);
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, hung });
    });
  });
}

describe('process.exit() with splice pairs in flight', () => {
  beforeEach(needsSplice);
  it.each(['shared', 'dedicated'])('exits with code 0, promptly, using the %s engine', async (mode) => {
    if (!fs.existsSync(dist)) throw new Error(`${path.relative(root, dist)} is missing: run npm run build:ts first`);
    const exit = await runChild([mode]);
    const detail = `stdout: ${exit.stdout.trim()}\nstderr: ${exit.stderr.trim()}`;
    expect(exit.hung, `the child did not exit within ${HANG_MS} ms\n${detail}`).toBe(false);
    expect(exit.stdout, detail).toContain('STREAMING');
    if (mode === 'dedicated') expect(exit.stdout, detail).toContain('pairs=8');
    expect({ code: exit.code, signal: exit.signal }, detail).toEqual({ code: 0, signal: null });
  }, HANG_MS + 30_000);
});

// The 'dedicated' case above is an engine with threads: 2 that is never closed, left by
// process.exit() with its pairs in flight. This is the same engine left by an empty event loop.
describe('an engine that is never closed', () => {
  beforeEach(needsSplice);
  it('threads: 2, its pairs have ended: the event loop empties and the process exits by itself, code 0', async () => {
    if (!fs.existsSync(dist)) throw new Error(`${path.relative(root, dist)} is missing: run npm run build:ts first`);
    const exit = await runChild([], neverClosed);
    const detail = `stdout: ${exit.stdout.trim()}\nstderr: ${exit.stderr.trim()}`;
    expect(exit.hung, `the child did not exit within ${HANG_MS} ms\n${detail}`).toBe(false);
    expect(exit.stdout, detail).toContain('ENDED pairs=8 reasons=eof engineThreads=2 closed=false');
    expect({ code: exit.code, signal: exit.signal }, detail).toEqual({ code: 0, signal: null });
  }, HANG_MS + 30_000);
});

describe('worker thread ending with splice pairs in flight', () => {
  beforeEach(needsSplice);
  it('stops the engine, closes every fd it held, and the process carries on', async () => {
    if (!fs.existsSync(dist)) throw new Error(`${path.relative(root, dist)} is missing: run npm run build:ts first`);
    const exit = await runChild([], workerParent);
    const detail = `stdout: ${exit.stdout.trim()}\nstderr: ${exit.stderr.trim()}`;
    expect(exit.hung, `the process did not exit within ${HANG_MS} ms\n${detail}`).toBe(false);
    expect(exit.stdout, detail).toContain('STREAMING');
    expect(exit.stdout, detail).toMatch(/WORKER-EXIT code=0/);
    expect({ code: exit.code, signal: exit.signal }, detail).toEqual({ code: 0, signal: null });
  }, HANG_MS + 30_000);
});
