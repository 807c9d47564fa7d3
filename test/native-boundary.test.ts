// The native boundary: what reaches the addon, and what comes back from it, is a JS error or a
// result, never a crash, undefined behaviour or a lost completion. Real sockets on 127.0.0.1.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { forward, forwardJs, SpliceEngine, type ForwardResult } from '../src/index.js';
import { loadNative, type NativeEngine } from '../src/engine/splice/native.js';
import type { SpliceControl } from '../src/engine/splice/engine.js';
import { MAX_IDLE_TIMEOUT_MS } from '../src/engine/contract.js';
import * as h from './helpers.js';
import { KiB } from './helpers.js';
import { needsSplice, needsTool, spliceSkipReason } from './policy.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist', 'index.js');
const HOST = '127.0.0.1';

const LINUX = process.platform === 'linux';
const NATIVE = !spliceSkipReason;

afterEach(h.closeAll);

interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a node script (argv after `command`), killed after 60 s: a child that hangs fails the test. */
function runChild(command: string[], script: string, args: string[]): Promise<ChildExit> {
  return new Promise((resolve, reject) => {
    const [file, ...pre] = [...command, process.execPath];
    const p = spawn(file, [...pre, script, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function requireDist(): void {
  if (!fs.existsSync(dist)) throw new Error(`${path.relative(root, dist)} is missing: run npm run build:ts first`);
}

/** A connected pair of sockets (a: accepted from a client of ours, b: connected to an echo server) and the client. */
async function socketPair(): Promise<{ client: net.Socket; a: net.Socket; b: net.Socket }> {
  const echo = await h.startEchoServer();
  const accepted = new h.Arrivals<net.Socket>();
  const front = await h.startServer((s) => {
    s.on('error', () => {});
    accepted.push(s);
  });
  const client = await h.connectTo(front.port);
  client.on('error', () => {});
  const a = h.track(await accepted.nth(0));
  const b = await h.connectTo(echo.port);
  b.on('error', () => {});
  return { client, a, b };
}

/** Sends `size` bytes through the client, ends, and checks the echo: what forward() carried. */
async function echoThrough(client: net.Socket, size: number, seed: number): Promise<void> {
  const got = h.hashUntilEnd(client);
  const sent = await h.writeRandom(client, seed, size);
  expect(await h.within(got, 20_000, 'the echo')).toEqual(sent);
}

// ---------------------------------------------------------------------------

describe('new SpliceEngine() when the system refuses a resource (child under prlimit --nofile)', () => {
  beforeEach((ctx) => {
    needsSplice(ctx);
    needsTool(ctx, 'prlimit', 'util-linux');
  });
  // The child fills its fd table to the limit, frees FREE slots, and constructs the engine;
  // each loop needs 2 fds (epoll set, then eventfd) and a thread.
  const EMFILE = -os.constants.errno.EMFILE;
  const cases = [
    { free: 0, threads: 1, syscall: 'epoll_create1', what: 'no fd for the epoll set' },
    { free: 1, threads: 1, syscall: 'eventfd', what: 'no fd for the wake eventfd (the epoll set is closed again)' },
    { free: 3, threads: 2, syscall: 'eventfd', what: "the second loop fails: the first loop's thread is joined and its fds closed" },
  ];

  it.each(cases)('$syscall fails with EMFILE ($what): an Error with code, errno and syscall; nothing left behind', async ({ free, threads, syscall }) => {
    requireDist();
    const exit = await runChild(['prlimit', '--nofile=256:256'], path.join(root, 'test', 'fixtures', 'engine-limits-child.mjs'), [String(free), String(threads)]);
    const detail = `stdout: ${exit.stdout.trim()}\nstderr: ${exit.stderr.trim()}`;
    expect({ code: exit.code, signal: exit.signal }, detail).toEqual({ code: 0, signal: null });
    const report = JSON.parse(exit.stdout.trim().split('\n').pop()!);
    expect(report.outcome, detail).toEqual({
      threw: true,
      name: 'Error',
      message: `${syscall} failed: EMFILE (Too many open files)`,
      code: 'EMFILE',
      errno: EMFILE,
      syscall,
    });
    expect(report.filled, 'the child filled its fd table').toBeGreaterThan(100);
    expect(report.fdsAfter, `fds: ${detail}`).toBe(report.fdsBefore);
    expect(report.threadsAfter, `threads: ${detail}`).toBe(report.threadsBefore);
  }, 90_000);

  it('with 2 fds per loop free the same child constructs the engine: the limit is what failed above', async () => {
    requireDist();
    const exit = await runChild(['prlimit', '--nofile=256:256'], path.join(root, 'test', 'fixtures', 'engine-limits-child.mjs'), ['4', '2']);
    const detail = `stdout: ${exit.stdout.trim()}\nstderr: ${exit.stderr.trim()}`;
    expect({ code: exit.code, signal: exit.signal }, detail).toEqual({ code: 0, signal: null });
    const report = JSON.parse(exit.stdout.trim().split('\n').pop()!);
    expect(report.outcome, detail).toEqual({ threw: false, threadsRunning: 2 });
    expect(report.fdsAfter, detail).toBe(report.fdsBefore);
    expect(report.threadsAfter, detail).toBe(report.threadsBefore);
  }, 90_000);
});

describe('SpliceEngine.forward() when the engine cannot dup the fds (child under prlimit --nofile)', () => {
  beforeEach((ctx) => {
    needsSplice(ctx);
    needsTool(ctx, 'prlimit', 'util-linux');
  });
  it("rejects with dup's EMFILE and gives the sockets back whole: the JS engine then carries them, head bytes first", async () => {
    requireDist();
    const exit = await runChild(['prlimit', '--nofile=256:256'], path.join(root, 'test', 'fixtures', 'add-emfile-child.mjs'), []);
    const detail = `stdout: ${exit.stdout.trim()}\nstderr: ${exit.stderr.trim()}`;
    expect({ code: exit.code, signal: exit.signal }, detail).toEqual({ code: 0, signal: null });
    const report = JSON.parse(exit.stdout.trim().split('\n').pop()!);
    expect(report.head, 'Node had read bytes before forward()').toBeGreaterThan(0);
    expect(report, detail).toMatchObject({
      error: { name: 'Error', message: 'dup failed: EMFILE (Too many open files)', code: 'EMFILE', syscall: 'dup' },
      echoed: 'bytes Node had read; and the rest',
      reason: 'eof',
      pairs: 0,
    });
  }, 90_000);
});

// The child's address space ends half a stack above what it maps: a heap V8 grows there (a GC
// worker's promotion, at a moment of its own) can abort the child whatever the engine did, so a
// test whose child dies that way is run again; a wrong report fails every time.
describe('new SpliceEngine() when no thread can be had (child with RLIMIT_AS just above what it maps)', { retry: 2 }, () => {
  beforeEach(needsSplice);
  // The child leaves room for STACKS thread stacks: thread STACKS + 1 cannot get its stack.
  const run = (threads: number, stacks: number) =>
    runChild([], path.join(root, 'test', 'fixtures', 'engine-threads-child.mjs'), [String(threads), String(stacks)]);
  const EAGAIN = -os.constants.errno.EAGAIN;
  // The child sizes the room in stacks of RLIMIT_STACK bytes (its own, inherited from here).
  const stackLimited = LINUX && !/^Max stack size\s+unlimited/m.test(fs.readFileSync('/proc/self/limits', 'utf8'));
  beforeEach((ctx) => {
    needsTool(ctx, 'prlimit', 'util-linux');
    if (!stackLimited) ctx.skip('the stack size limit is unlimited (ulimit -s): the child cannot size its room in stacks');
  });

  it.each([
    { threads: 1, stacks: 0, what: 'the only loop gets no thread: its epoll set and eventfd are closed again' },
    { threads: 2, stacks: 1, what: "the second loop gets no thread: the first loop's thread is joined" },
  ])('pthread_create fails with EAGAIN ($what): an Error with code and syscall; fds and threads back', async ({ threads, stacks }) => {
    requireDist();
    const exit = await run(threads, stacks);
    const detail = `stdout: ${exit.stdout.trim()}\nstderr: ${exit.stderr.trim()}`;
    expect({ code: exit.code, signal: exit.signal }, detail).toEqual({ code: 0, signal: null });
    const report = JSON.parse(exit.stdout.trim().split('\n').pop()!);
    expect(report.outcome, detail).toEqual({
      threw: true,
      name: 'Error',
      message: 'pthread_create failed: EAGAIN (Resource temporarily unavailable)',
      code: 'EAGAIN',
      errno: EAGAIN,
      syscall: 'pthread_create',
    });
    expect(report.fdsAfter, `fds: ${detail}`).toBe(report.fdsBefore);
    expect(report.threadsAfter, `threads: ${detail}`).toBe(report.threadsBefore);
  }, 90_000);

  it('with room for one stack, one loop starts: the room is what failed above', async () => {
    requireDist();
    const exit = await run(1, 1);
    const detail = `stdout: ${exit.stdout.trim()}\nstderr: ${exit.stderr.trim()}`;
    expect({ code: exit.code, signal: exit.signal }, detail).toEqual({ code: 0, signal: null });
    const report = JSON.parse(exit.stdout.trim().split('\n').pop()!);
    expect(report.outcome, detail).toEqual({ threw: false, threadsRunning: 1 });
    expect(report.threadsAfter, detail).toBe(report.threadsBefore);
  }, 90_000);
});

describe('SpliceEngine options', () => {
  // Checked before the addon is loaded: the same errors with or without it.
  const limits = { threads: 64, maxPipes: 2 ** 20, maxPipeSize: 2 ** 30, recordBufferBytes: 2 ** 40 } as const;
  // threads 0 is the loop on the JS thread.
  const minimum = { threads: 0, maxPipes: 1, maxPipeSize: 1, recordBufferBytes: 1 } as const;
  const names = Object.keys(limits) as (keyof typeof limits)[];

  it.each(names)('%s: below its minimum, fractional, NaN, Infinity or past its maximum is a RangeError naming it and its range', (name) => {
    for (const value of [minimum[name] - 1, -1, 1.5, NaN, Infinity, -Infinity, limits[name] + 1]) {
      expect(() => new SpliceEngine({ [name]: value }), `${name}: ${value}`).toThrow(RangeError);
      expect(() => new SpliceEngine({ [name]: value }), `${name}: ${value}`).toThrow(
        `${name} must be an integer from ${minimum[name]} to ${limits[name]}, got ${String(value)}`,
      );
    }
  });

  it.each(names)('%s: a non-number is a TypeError naming it', (name) => {
    for (const value of ['2', null, {}, 2n]) {
      expect(() => new SpliceEngine({ [name]: value } as never), `${name}: ${String(value)}`).toThrow(TypeError);
      expect(() => new SpliceEngine({ [name]: value } as never)).toThrow(`${name} must be a number`);
    }
  });
});

describe('idleTimeout', () => {
  const BAD_RANGE = [NaN, Infinity, -Infinity, -1, 1.5, 0.1, MAX_IDLE_TIMEOUT_MS + 1, 2 ** 53];
  const BAD_TYPE = ['100', null, {}, true];
  const ENGINES = NATIVE ? (['js', 'splice'] as const) : (['js'] as const);

  it.each(ENGINES)('forward() with engine %s refuses every bad value before touching the sockets; the largest good one works', async (engine) => {
    const { client, a, b } = await socketPair();
    for (const idleTimeout of BAD_RANGE) {
      const attempt = forward(a, b, { engine, idleTimeout });
      await expect(attempt, `idleTimeout ${idleTimeout}`).rejects.toThrow(RangeError);
      await expect(forward(a, b, { engine, idleTimeout })).rejects.toThrow(
        `idleTimeout must be an integer number of ms from 0 (no timeout) to ${MAX_IDLE_TIMEOUT_MS}, got ${String(idleTimeout)}`,
      );
    }
    for (const idleTimeout of BAD_TYPE) {
      await expect(forward(a, b, { engine, idleTimeout } as never), `idleTimeout ${String(idleTimeout)}`).rejects.toThrow(TypeError);
    }
    // Nothing was taken from the sockets: a good call carries the pair end to end.
    expect([a.destroyed, b.destroyed]).toEqual([false, false]);
    const result = forward(a, b, { engine, idleTimeout: MAX_IDLE_TIMEOUT_MS });
    await echoThrough(client, 256 * KiB, 11);
    expect(await result).toMatchObject({ engine, reason: 'eof', bytesAtoB: 256 * KiB, bytesBtoA: 256 * KiB });
  });

  it('SpliceEngine.forward() refuses them the same way (it used to cast Infinity to an integer)', async (ctx) => {
    needsSplice(ctx);
    const engine = new SpliceEngine();
    h.onCleanup(() => void engine.close());
    const { client, a, b } = await socketPair();
    for (const idleTimeout of BAD_RANGE) {
      await expect(engine.forward(a, b, { idleTimeout }), `idleTimeout ${idleTimeout}`).rejects.toThrow(RangeError);
    }
    for (const idleTimeout of BAD_TYPE) {
      await expect(engine.forward(a, b, { idleTimeout } as never)).rejects.toThrow(TypeError);
    }
    expect(engine.stats().pairs).toBe(0);
    const result = engine.forward(a, b, { idleTimeout: MAX_IDLE_TIMEOUT_MS });
    await echoThrough(client, 256 * KiB, 12);
    expect(await result).toMatchObject({ engine: 'splice', reason: 'eof', bytesAtoB: 256 * KiB });
  });

  it('forwardJs() refuses them the same way, synchronously', async () => {
    const { client, a, b } = await socketPair();
    for (const idleTimeout of BAD_RANGE) {
      expect(() => forwardJs(a, b, { idleTimeout }), `idleTimeout ${idleTimeout}`).toThrow(RangeError);
    }
    for (const idleTimeout of BAD_TYPE) {
      expect(() => forwardJs(a, b, { idleTimeout } as never)).toThrow(TypeError);
    }
    const result = forwardJs(a, b, { idleTimeout: 0 });
    await echoThrough(client, 64 * KiB, 13);
    expect(await result).toMatchObject({ engine: 'js', reason: 'eof' });
  });
});

describe('the addon checks every argument (called directly, as a buggy caller would)', () => {
  beforeEach(needsSplice);
  const binding = () => {
    const load = loadNative();
    if (!load.binding) throw new Error(`addon not loaded: ${load.reason}`);
    return load.binding;
  };
  const newNative = (): NativeEngine => {
    const engine = new (binding().Engine)({ threads: 1 }, () => {});
    h.onCleanup(() => engine.close());
    return engine;
  };
  /** An fd number that is not open, well above the lowest free one (where a dup lands). */
  const closedFd = (): number => Math.max(...fs.readdirSync('/proc/self/fd').map(Number)) + 1000;
  const leg = (port: number, next = 0) => ({ ip: Buffer.from([127, 0, 0, 1]), port, next, acked: 0, ipId: 0, finished: false });

  it('constructor: options not an object, onDone not a function, an option of the wrong type: TypeError', () => {
    const { Engine } = binding();
    expect(() => new Engine(null as never, () => {})).toThrow(TypeError);
    expect(() => new Engine({}, 5 as never)).toThrow(/onDone must be a function/);
    expect(() => new Engine({ threads: '2' } as never, () => {})).toThrow(/threads must be a number/);
    expect(() => new Engine({ maxPipes: null } as never, () => {})).toThrow(TypeError);
  });

  it('constructor: an option out of its range (threads -1 would have been 2^32 - 1 threads): RangeError', () => {
    const { Engine } = binding();
    for (const options of [{ threads: -1 }, { threads: 65 }, { threads: 1.5 }, { maxPipes: NaN }, { maxPipeSize: Infinity }, { recordBufferBytes: 0 }]) {
      expect(() => new Engine(options, () => {}), JSON.stringify(options)).toThrow(RangeError);
    }
    expect(() => new Engine({ threads: -1 }, () => {})).toThrow('threads must be an integer from 0 to 64, got -1');
  });

  it('add(): fds that are not numbers are TypeErrors, fds out of range RangeErrors; an fd that is not open is EBADF from dup, and nothing leaks', () => {
    const engine = newNative();
    const baseline = h.openFdCount();
    const fd = fs.openSync('/dev/null', 'r');
    try {
      expect(() => engine.add('3' as never, fd, null, null, 0)).toThrow(/fdA must be a number, got a string/);
      expect(() => engine.add(fd, undefined as never, null, null, 0)).toThrow(/fdB must be a number, got undefined/);
      for (const bad of [-1, 1.5, NaN, 2 ** 31]) {
        expect(() => engine.add(bad, fd, null, null, 0), `fdA ${bad}`).toThrow(RangeError);
        expect(() => engine.add(fd, bad, null, null, 0), `fdB ${bad}`).toThrow(RangeError);
      }
      // The dup of fdA is taken, then fdB's fails: fdA's must be closed again.
      let error: NodeJS.ErrnoException | undefined;
      try {
        engine.add(fd, closedFd(), null, null, 0);
      } catch (err) {
        error = err as NodeJS.ErrnoException;
      }
      expect(error).toMatchObject({ message: 'dup failed: EBADF (Bad file descriptor)', code: 'EBADF', syscall: 'dup' });
    } finally {
      fs.closeSync(fd);
    }
    expect(h.openFdCount()).toBe(baseline);
    expect(engine.stats().pairs).toBe(0);
  });

  it('add(): heads that are not Buffers are TypeErrors; a bad idleTimeout is a RangeError (TypeError if not a number)', () => {
    const engine = newNative();
    const fd = fs.openSync('/dev/null', 'r');
    try {
      expect(() => engine.add(fd, fd, 'abc' as never, null, 0)).toThrow(/headAtoB must be a Buffer or null, got a string/);
      expect(() => engine.add(fd, fd, null, [1, 2] as never, 0)).toThrow(/headBtoA must be a Buffer or null, got an array/);
      // napi_is_buffer says yes to a DataView, whose bytes napi_get_buffer_info then refuses.
      expect(() => engine.add(fd, fd, new DataView(new ArrayBuffer(4)) as never, null, 0)).toThrow(TypeError);
      for (const bad of [NaN, Infinity, -1, 1.5, MAX_IDLE_TIMEOUT_MS + 1]) {
        expect(() => engine.add(fd, fd, null, null, bad), `idleTimeout ${bad}`).toThrow(RangeError);
      }
      expect(() => engine.add(fd, fd, null, null, '5' as never)).toThrow(TypeError);
    } finally {
      fs.closeSync(fd);
    }
    expect(engine.stats().pairs).toBe(0);
  });

  it('add(): a record spec of the wrong shape is a TypeError, numbers out of range (port, sequence) RangeErrors', () => {
    const engine = newNative();
    const fd = fs.openSync('/dev/null', 'r');
    const add = (record: unknown) => () => engine.add(fd, fd, null, null, 0, record as never);
    try {
      expect(add(5)).toThrow(/record must be an object/);
      expect(add({ recorder: 1, legs: 'x' })).toThrow(/record.legs must be an array/);
      expect(add({ recorder: 1, legs: [] })).toThrow(RangeError);
      expect(add({ recorder: 1, legs: [7] })).toThrow(/record.legs\[0\] must be an object/);
      expect(add({ recorder: 1, legs: [{ ipv4: true, client: leg(1), server: 'x' }] })).toThrow(/record.legs\[0\].server must be an object/);
      expect(add({ recorder: 1, legs: [{ ipv4: true, client: leg(70_000), server: leg(2) }] })).toThrow(
        'record.legs[0].client.port must be an integer from 0 to 65535, got 70000',
      );
      expect(add({ recorder: 1, legs: [{ ipv4: true, client: leg(1), server: leg(2, 2 ** 32) }] })).toThrow(/server.next must be an integer from 0 to 4294967295/);
      expect(add({ recorder: -1, legs: [{ ipv4: true, client: leg(1), server: leg(2) }] })).toThrow(/record.recorder must be an integer/);
      expect(add({ recorder: 99, legs: [{ ipv4: true, client: leg(1), server: leg(2) }] })).toThrow('the recorder is closed');
    } finally {
      fs.closeSync(fd);
    }
    expect(engine.stats().pairs).toBe(0);
  });

  it('ids (abort, release, recordWrite, closeRecorder) must be integers from 1 to 2^53 - 1; unknown ids are ignored', () => {
    const engine = newNative();
    for (const call of [(id: unknown) => engine.abort(id as never), (id: unknown) => engine.release(id as never), (id: unknown) => engine.closeRecorder(id as never)]) {
      for (const bad of [0, -1, 1.5, NaN, Infinity, 2 ** 53]) expect(() => call(bad), `id ${bad}`).toThrow(RangeError);
      expect(() => call('1')).toThrow(TypeError);
      expect(() => call(undefined)).toThrow(TypeError);
      expect(() => call(12345)).not.toThrow();
    }
    expect(() => engine.recordWrite(0, Buffer.alloc(1))).toThrow(RangeError);
    expect(() => engine.recordWrite(1, 'records' as never)).toThrow(/data must be a Buffer/);
    expect(() => engine.recordWrite(1, new DataView(new ArrayBuffer(4)) as never)).toThrow(TypeError);
    expect(engine.recordWrite(12345, Buffer.alloc(1))).toBe(false);
  });

  it('openRecorder(): an fd that is not a number is a TypeError, out of range a RangeError, not open EBADF', () => {
    const engine = newNative();
    expect(() => engine.openRecorder('3' as never)).toThrow(TypeError);
    expect(() => engine.openRecorder(-1)).toThrow(RangeError);
    expect(() => engine.openRecorder(closedFd())).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'dup' }));
  });

  it('a method called on something that is not an engine is a TypeError; a closed engine refuses pairs with ERR_SPLICE_CLOSED', () => {
    const engine = newNative();
    expect(() => engine.add.call({} as never, 1, 2, null, null, 0)).toThrow(TypeError);
    expect(() => engine.stats.call(undefined as never)).toThrow(TypeError);
    engine.close();
    const fd = fs.openSync('/dev/null', 'r');
    try {
      expect(() => engine.add(fd, fd, null, null, 0)).toThrow(expect.objectContaining({ code: 'ERR_SPLICE_CLOSED' }));
      expect(() => engine.openRecorder(fd)).toThrow(expect.objectContaining({ code: 'ERR_SPLICE_CLOSED' }));
    } finally {
      fs.closeSync(fd);
    }
    expect(() => engine.abort(1)).not.toThrow();
  });
});

describe('completions', () => {
  beforeEach(needsSplice);
  it('a handler that throws on one completion of a batch: every other completion of the batch still arrives, and the throw is uncaught', async () => {
    requireDist();
    const exit = await runChild([], path.join(root, 'test', 'fixtures', 'completion-throw-child.mjs'), []);
    const detail = `stdout: ${exit.stdout.trim()}\nstderr: ${exit.stderr.trim()}`;
    expect({ code: exit.code, signal: exit.signal }, detail).toEqual({ code: 0, signal: null });
    const line = exit.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    expect(line, detail).toBeDefined();
    const result = JSON.parse(line!.slice('RESULT '.length)) as { delivered: number[]; uncaught: string[]; pairs: number };
    expect([...result.delivered].sort((x, y) => x - y), detail).toEqual([1, 2, 3, 4]);
    expect(result.uncaught, detail).toEqual([`handler threw on pair ${result.delivered[1]}`]);
  }, 90_000);

  it('with no uncaughtException listener the throw ends the process as any uncaught exception does (code 1, the error on stderr)', async () => {
    requireDist();
    const exit = await runChild([], path.join(root, 'test', 'fixtures', 'completion-throw-child.mjs'), ['no-handler']);
    const detail = `stdout: ${exit.stdout.trim()}\nstderr: ${exit.stderr.trim()}`;
    expect({ code: exit.code, signal: exit.signal }, detail).toEqual({ code: 1, signal: null });
    expect(exit.stderr, detail).toMatch(/Error: handler threw on pair \d+/);
  }, 90_000);
});

describe('abort and release with threads: 2', () => {
  beforeEach(needsSplice);
  interface RelayedPair {
    abort: AbortController;
    control: Promise<SpliceControl>;
    result: Promise<ForwardResult>;
  }

  /** A relay onto `engine` in front of an echo server; each pair with its own AbortSignal. */
  async function relay(engine: SpliceEngine) {
    const echo = await h.startEchoServer();
    const pairs = new h.Arrivals<RelayedPair>();
    const server = await h.startServer((client) => {
      client.on('error', () => {});
      const upstream = h.track(net.connect({ host: HOST, port: echo.port, allowHalfOpen: true }));
      upstream.on('error', () => {});
      upstream.once('connect', () => {
        const abort = new AbortController();
        let started!: (control: SpliceControl) => void;
        const control = new Promise<SpliceControl>((resolve) => (started = resolve));
        const result = engine.forward(client, upstream, { signal: abort.signal, onStart: started });
        result.catch(() => {});
        pairs.push({ abort, control, result });
      });
    });
    return { port: server.port, pairs };
  }

  it('pairs on both loops: each abort and each release reaches its pair, whichever loop it is on', async () => {
    const engine = new SpliceEngine({ threads: 2 });
    h.onCleanup(() => void engine.close());
    const { port, pairs } = await relay(engine);
    // Pair ids count up from 1 and pair n runs on loop n % 2: pairs started one after the other
    // alternate between the two loops, so pairs 0 and 1 are on different loops, as are 2 and 3.
    const clients: net.Socket[] = [];
    for (let i = 0; i < 4; i++) {
      const client = await h.connectTo(port);
      client.on('error', () => {});
      clients.push(client);
      await (await pairs.nth(i)).control;
    }
    // A loop counts a pair once it has adopted it, a moment after add() returned.
    expect(await h.waitFor(() => engine.stats().pairs === 4, 10_000), 'both loops hold their pairs').toBe(true);

    const watches = clients.slice(0, 2).map((c) => h.watch(c));
    (await pairs.nth(0)).abort.abort();
    (await pairs.nth(1)).abort.abort();
    for (const i of [0, 1]) {
      expect(await h.within((await pairs.nth(i)).result, 10_000, `pair ${i} aborted`)).toMatchObject({ reason: 'aborted' });
      const seen = await h.within(watches[i].finished, 10_000, `client ${i} to close`);
      expect(h.peerSawReset(clients[i], seen), `client ${i} saw a reset: ${JSON.stringify(seen)}`).toBe(true);
    }

    for (const i of [2, 3]) (await (await pairs.nth(i)).control).release();
    for (const i of [2, 3]) {
      const spliced = await h.within((await pairs.nth(i)).result, 10_000, `pair ${i} released`);
      expect(spliced.reason).toBe('released');
      const { a, b, pendingAtoB, pendingBtoA } = spliced.released!;
      h.track(a);
      h.track(b);
      expect([pendingAtoB.length, pendingBtoA.length]).toEqual([0, 0]);
      const carried = forwardJs(a, b);
      await echoThrough(clients[i], 128 * KiB, 20 + i);
      expect(await carried).toMatchObject({ engine: 'js', reason: 'eof', bytesAtoB: 128 * KiB, bytesBtoA: 128 * KiB });
    }
    expect(engine.stats()).toMatchObject({ pairs: 0, pipesInUse: 0, bytesBuffered: 0 });
  });
});
