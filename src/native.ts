// The one place that loads the addon. Everything else asks `loadNative()` and
// gets either the binding or the reason it is not there.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** One finished pair, as the native loop reports it. */
export interface NativeCompletion {
  id: number;
  bytesAtoB: number;
  bytesBtoA: number;
  durationMs: number;
  reason: 'eof' | 'reset' | 'error' | 'aborted' | 'timeout';
  /** errno name (ECONNRESET, EPIPE, ...) for reset and error. */
  code?: string;
  /** Side the error was seen on: 0 = a, 1 = b. */
  side?: number;
  syscall?: string;
}

export interface NativeEngineStats {
  pairs: number;
  pipesInUse: number;
  pipesIdle: number;
  /** Bytes read from a source and not yet written to its destination (pipes + user buffers). */
  bytesBuffered: number;
  /** Pairs that fell back to read/write on at least one direction. */
  readWritePairs: number;
  /** Pairs that ever fell back to read/write, since the engine started. */
  readWriteFallbacks: number;
}

export interface NativeEngineOptions {
  threads: number;
  maxPipes: number;
  maxPipeSize: number;
}

/** The native engine: owns loop threads, each with an epoll set. */
export interface NativeEngine {
  /**
   * Duplicates fdA and fdB (F_DUPFD_CLOEXEC) synchronously and hands the dups to a loop thread.
   * The caller keeps its own fds and must close them. Heads are written first, in order.
   * Returns the pair id. Throws an Error with `code` when a dup fails.
   */
  add(fdA: number, fdB: number, headAtoB: Buffer | null, headBtoA: Buffer | null, idleTimeoutMs: number): number;
  /** Ends a pair with reason `aborted`. Unknown or finished ids are ignored. */
  abort(id: number): void;
  stats(): NativeEngineStats;
  /** Aborts every pair, delivers their completions, joins the threads. Idempotent. */
  close(): void;
  /** Keep the process alive while pairs are in flight, as open sockets would. */
  ref(): void;
  unref(): void;
}

export interface NativeBinding {
  Engine: new (options: NativeEngineOptions, onDone: (batch: NativeCompletion[]) => void) => NativeEngine;
}

export type NativeLoad = { binding: NativeBinding; reason?: undefined } | { binding: null; reason: string };

let loaded: NativeLoad | undefined;

export function loadNative(): NativeLoad {
  if (loaded) return loaded;
  if (process.platform !== 'linux') {
    loaded = { binding: null, reason: `splice() is Linux only (this is ${process.platform})` };
    return loaded;
  }
  if (process.env.SPLICER_DISABLE_NATIVE === '1') {
    loaded = { binding: null, reason: 'disabled by SPLICER_DISABLE_NATIVE=1' };
    return loaded;
  }
  try {
    const require = createRequire(import.meta.url);
    const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
    const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
    loaded = { binding: nodeGypBuild(root) as NativeBinding };
  } catch (err) {
    loaded = { binding: null, reason: `native addon not loaded: ${(err as Error).message}` };
  }
  return loaded;
}
