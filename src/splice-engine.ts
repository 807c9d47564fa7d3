// The JS side of the native engine: validates, takes sockets over from Node,
// and turns the native completion batches into ForwardResults.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { loadNative, type NativeCompletion, type NativeEngine } from './native.js';
import { resetSocket, settle, socketFd, takeReadable, whyNoFd } from './takeover.js';
import { ForwardError, type ForwardResult, type Side } from './types.js';

export interface SpliceEngineOptions {
  /** Loop threads, each with its own epoll set. Default 1. */
  threads?: number;
  /** Pipes the engine may hold at once; past that, pairs use read/write. Default 256. */
  maxPipes?: number;
  /** Largest size a pipe grows to for a streaming flow. Default 1 MiB (the kernel's pipe-max-size). */
  maxPipeSize?: number;
}

export interface SpliceEngineStats {
  pairs: number;
  pipesInUse: number;
  pipesIdle: number;
  /** Bytes read from a source and not yet written to its destination. */
  bytesBuffered: number;
  /** Pairs that use read/write on at least one direction (no pipe to be had, or splice refused). */
  readWritePairs: number;
  /** Pairs that ever fell back to read/write since the engine started (counts up only). */
  readWriteFallbacks: number;
}

export interface SpliceForwardOptions {
  idleTimeout?: number;
  signal?: AbortSignal;
}

interface Pending {
  resolve: (result: ForwardResult) => void;
  detachSignal?: () => void;
}

function positiveInteger(name: string, value: unknown, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
    throw new RangeError(`${name} must be an integer from 1 to ${max}, got ${String(value)}`);
  }
  return value;
}

const sideName = (side: number | undefined): Side => (side === 1 ? 'b' : 'a');

function toResult(done: NativeCompletion): ForwardResult {
  const result: ForwardResult = {
    engine: 'splice',
    bytesAtoB: done.bytesAtoB,
    bytesBtoA: done.bytesBtoA,
    durationMs: done.durationMs,
    reason: done.reason,
  };
  if (done.code) result.error = new ForwardError(done.code, sideName(done.side), done.syscall);
  return result;
}

export class SpliceEngine {
  readonly #native: NativeEngine;
  readonly #pending = new Map<number, Pending>();
  #closed = false;
  #closing: Promise<void> | undefined;
  #drained: (() => void) | undefined;

  constructor(options: SpliceEngineOptions = {}) {
    const threads = positiveInteger('threads', options.threads, 1, 64);
    const maxPipes = positiveInteger('maxPipes', options.maxPipes, 256, 1 << 20);
    const maxPipeSize = positiveInteger('maxPipeSize', options.maxPipeSize, 1 << 20, 1 << 30);
    const load = loadNative();
    if (!load.binding) throw Object.assign(new Error(`splice engine unavailable: ${load.reason}`), { code: 'ERR_SPLICE_UNAVAILABLE' });
    this.#native = new load.binding.Engine({ threads, maxPipes, maxPipeSize }, (batch) => this.#onDone(batch));
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Hands a pair of connected net.Sockets to the native loop. Node's own
   * sockets are destroyed once the engine holds dups of their fds.
   */
  async forward(a: Duplex, b: Duplex, options: SpliceForwardOptions = {}): Promise<ForwardResult> {
    const started = performance.now();
    for (const [side, stream] of [['a', a], ['b', b]] as const) {
      const why = whyNoFd(stream);
      if (why) throw Object.assign(new TypeError(`socket ${side} cannot be spliced: ${why}`), { code: 'ERR_SPLICE_NO_FD' });
    }
    const socketA = a as net.Socket;
    const socketB = b as net.Socket;
    try {
      await Promise.all([settle(socketA), settle(socketB)]);
    } catch (err) {
      return this.#endEarly(socketA, socketB, started, err as NodeJS.ErrnoException);
    }
    if (this.#closed) throw Object.assign(new Error('splice engine is closed'), { code: 'ERR_SPLICE_CLOSED' });
    const signal = options.signal;
    if (signal?.aborted) {
      resetSocket(socketA);
      resetSocket(socketB);
      return { engine: 'splice', bytesAtoB: 0, bytesBtoA: 0, durationMs: performance.now() - started, reason: 'aborted' };
    }
    const fdA = socketFd(socketA);
    const fdB = socketFd(socketB);
    if (fdA === null || fdB === null) {
      return this.#endEarly(socketA, socketB, started, Object.assign(new Error('socket closed'), { code: 'ECONNRESET' }), fdA === null ? 'a' : 'b');
    }

    // From here to native.add() everything is synchronous: no read can slip in between.
    const headAtoB = takeReadable(socketA);
    const headBtoA = takeReadable(socketB);
    const id = this.#native.add(fdA, fdB, headAtoB, headBtoA, options.idleTimeout ?? 0);
    if (this.#pending.size === 0) this.#native.ref();
    // Destroying inside this libuv callback after a dup makes libuv < 1.49 with io_uring
    // spin on the dead fd (libuv#4323); a later tick avoids it. No FIN is sent: our dup holds the socket.
    setImmediate(() => {
      socketA.destroy();
      socketB.destroy();
    });

    return new Promise<ForwardResult>((resolve) => {
      const pending: Pending = { resolve };
      if (signal) {
        const onAbort = () => this.#native.abort(id);
        signal.addEventListener('abort', onAbort, { once: true });
        pending.detachSignal = () => signal.removeEventListener('abort', onAbort);
      }
      this.#pending.set(id, pending);
    });
  }

  stats(): SpliceEngineStats {
    return this.#native.stats();
  }

  /** Ends every pair (reason `aborted`, both sides reset) and stops the loop threads. */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    this.#native.close();
    this.#closing = this.#pending.size === 0
      ? Promise.resolve()
      : new Promise<void>((resolve) => { this.#drained = resolve; });
    return this.#closing;
  }

  #onDone(batch: NativeCompletion[]): void {
    for (const done of batch) {
      const pending = this.#pending.get(done.id);
      if (!pending) continue;
      this.#pending.delete(done.id);
      pending.detachSignal?.();
      pending.resolve(toResult(done));
    }
    if (this.#pending.size === 0) {
      if (!this.#closed) this.#native.unref();
      this.#drained?.();
    }
  }

  // A socket failed before the takeover: the pair ends as the JS engine would end it.
  #endEarly(a: net.Socket, b: net.Socket, started: number, err: NodeJS.ErrnoException, side?: Side): ForwardResult {
    const failedSide: Side = side ?? (a.destroyed || a.errored ? 'a' : 'b');
    const code = err.code ?? 'ECONNRESET';
    resetSocket(failedSide === 'a' ? b : a);
    (failedSide === 'a' ? a : b).destroy();
    return {
      engine: 'splice',
      bytesAtoB: 0,
      bytesBtoA: 0,
      durationMs: performance.now() - started,
      reason: code === 'ECONNRESET' || code === 'EPIPE' ? 'reset' : 'error',
      error: new ForwardError(code, failedSide, err.syscall),
    };
  }
}
