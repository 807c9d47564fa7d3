// The JS side of the native engine: validates, takes sockets over from Node and hands their
// fds to the addon. What comes back (results, released pairs) is read in results.ts; the pcap
// recorders are kept in recorders.ts.
import fs from 'node:fs';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { loadNative, type NativeCompletion, type NativeEngine, type NativeEngineOptions, type NativeEngineStats } from './native.js';
import { onAbort } from '../../net/abort.js';
import type { ConversationState, TcpConversation } from '../../pcap/tcp-conversation.js';
import { giveBack, resetSocket, settle, socketFd, takeReadable, unsettled, whyNoFd } from './takeover.js';
import { checkIdleTimeout, ForwardError, type ForwardResult, type Side } from '../contract.js';
import { closeUnclaimed, deliver, PendingPairs, type Resolve } from './results.js';
import { nativeConversation, Recorders, type NativeRecorder } from './recorders.js';

/** The engine's options: declared once, with the addon's (native.ts), which checks them again. */
export type SpliceEngineOptions = NativeEngineOptions;

export type SpliceEngineStats = NativeEngineStats;

/** Handed to `onStart`: what the caller may do with a running pair. */
export interface SpliceControl {
  /**
   * Takes the pair back from the engine alive: forward() resolves with reason `released` and
   * `result.released`. Ignored once the pair has ended (its own result stands).
   */
  release(): void;
}

/** What the engine reads of a pcap sink: a NativePcapSink (openNativePcap, pcap-sink.ts) opened on this engine. */
export interface SpliceRecordSink {
  readonly engine: SpliceEngine;
  readonly path: string;
  readonly closed: boolean;
  /** @internal */
  readonly recorder: NativeRecorder;
}

/**
 * Records the pair's traffic into a pcap file without the payload passing through JS.
 * The legs are conversations whose handshake the caller has written to the sink already;
 * legs[0] is client <-> relay (side a is its client), legs[1] (optional) relay <-> server
 * (side b is its server). a -> b is the client sending on every leg. The engine records every
 * byte when it is read, the FIN of each direction when it is passed on, and a RST on reset
 * or abort. The TcpConversation objects are not advanced: when the pair is released, its
 * legs' states come back in `result.released.recording`.
 */
export interface SpliceRecordOptions {
  sink: SpliceRecordSink;
  legs: TcpConversation[];
}

export interface SpliceForwardOptions {
  /** As ForwardOptions.idleTimeout: an integer number of ms from 0 (never) to 2^31 - 1, else a RangeError. */
  idleTimeout?: number;
  signal?: AbortSignal;
  /** Called synchronously once the engine holds the pair (not when forward() ends before that). */
  onStart?: (control: SpliceControl) => void;
  record?: SpliceRecordOptions;
}

function destroyBoth(a: net.Socket, b: net.Socket): void {
  a.destroy();
  b.destroy();
}

function positiveInteger(name: string, value: unknown, fallback: number, max: number, min = 1): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number') throw new TypeError(`${name} must be a number, got ${typeof value}`);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

/**
 * The splice engine: `threads` loop threads (each with an epoll set and an eventfd) that move
 * the bytes of the pairs handed to `forward()`, and a pcap writer thread started with the first
 * recorder.
 *
 * The constructor throws when the system refuses a resource: an Error naming the call and the
 * errno (`epoll_create1 failed: EMFILE (Too many open files)`, with `code`, `errno` and
 * `syscall` as on Node's own errors; `pthread_create` with EAGAIN when no thread can be had).
 * Whatever it had started by then is stopped and closed again.
 *
 * An engine that is never closed: its threads and fds live until the process (or the worker
 * thread) ends; they do not keep the process alive. What does is each pair in flight and each
 * recorder whose `close()` is pending, as an open socket would: the engine refs its completion
 * channel (a thread-safe function) while there is one and unrefs it when the last ends. So a
 * program whose pairs have all ended exits as if the engine were not there, and one that calls
 * process.exit() with pairs in flight exits at once: a cleanup hook aborts the pairs, joins the
 * threads and closes every fd, at process exit and when a worker thread ends. `close()` does the
 * same earlier, and delivers the aborted pairs' results.
 */
export class SpliceEngine {
  readonly #native: NativeEngine;
  readonly #pending = new PendingPairs();
  /** The signals of the pairs out, each with the ids of the pairs it aborts; and each pair's signal. */
  readonly #bySignal = new Map<AbortSignal, { ids: Set<number>; detach: () => void }>();
  readonly #signalOf = new Map<number, AbortSignal>();
  readonly #recorders: Recorders;
  #closed = false;
  #closing: Promise<void> | undefined;
  #drained: (() => void) | undefined;

  constructor(options: SpliceEngineOptions = {}) {
    const threads = positiveInteger('threads', options.threads, 1, 64, 0);
    const maxPipes = positiveInteger('maxPipes', options.maxPipes, 256, 1 << 20);
    const maxPipeSize = positiveInteger('maxPipeSize', options.maxPipeSize, 1 << 20, 1 << 30);
    const recordBufferBytes = positiveInteger('recordBufferBytes', options.recordBufferBytes, 64 << 20, 2 ** 40);
    const load = loadNative();
    if (!load.binding) throw Object.assign(new Error(`splice engine unavailable: ${load.reason}`), { code: 'ERR_SPLICE_UNAVAILABLE' });
    // One call per completion or recorder event: a throw while one is handled is raised as an
    // uncaught exception after the batch, and the others are delivered all the same.
    this.#native = new load.binding.Engine({ threads, maxPipes, maxPipeSize, recordBufferBytes }, (done, event) => {
      if (event) this.#recorders.onEvent(event);
      if (done) this.#onDone(done);
    });
    this.#recorders = new Recorders(this.#native, { hold: () => this.#hold(), settled: () => this.#settled() });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Hands a pair of connected net.Sockets to the native loop. Node's own
   * sockets are destroyed once the engine holds dups of their fds. When the engine cannot
   * take them (a dup fails: `dup failed: EMFILE (Too many open files)`), forward() rejects with
   * that error and the sockets are the caller's again, whole: what Node had read is put back
   * and they read again, so forwardJs() can carry them.
   *
   * Not an async function: a pair that needs no waiting is handed over synchronously and the
   * promise returned is the one its completion resolves, so that an idle pair costs one promise,
   * not a chain of them; every error still comes as a rejection.
   */
  forward(a: Duplex, b: Duplex, options: SpliceForwardOptions = {}): Promise<ForwardResult> {
    try {
      return this.#forward(a, b, options);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  #forward(a: Duplex, b: Duplex, options: SpliceForwardOptions): Promise<ForwardResult> {
    const started = performance.now();
    const idleTimeout = checkIdleTimeout(options.idleTimeout);
    const record = options.record;
    if (record !== undefined) {
      if (record.sink?.engine !== this) throw new TypeError('record.sink must be a NativePcapSink opened on this engine');
      if (!Array.isArray(record.legs) || record.legs.length < 1 || record.legs.length > 2) {
        throw new RangeError(`record.legs must hold 1 or 2 conversations, got ${record.legs?.length}`);
      }
      record.legs.forEach(nativeConversation);
    }
    if (options.onStart !== undefined && typeof options.onStart !== 'function') throw new TypeError('onStart must be a function');
    for (const [side, stream] of [['a', a], ['b', b]] as const) {
      const why = whyNoFd(stream);
      if (why) throw Object.assign(new TypeError(`socket ${side} cannot be spliced: ${why}`), { code: 'ERR_SPLICE_NO_FD' });
    }
    const socketA = a as net.Socket;
    const socketB = b as net.Socket;
    // Most pairs come connected with nothing queued: waiting on them would only cost promises and a tick.
    if (unsettled(socketA) || unsettled(socketB)) return this.#settleThenStart(socketA, socketB, started, idleTimeout, options);
    return this.#start(socketA, socketB, started, idleTimeout, options);
  }

  async #settleThenStart(socketA: net.Socket, socketB: net.Socket, started: number, idleTimeout: number, options: SpliceForwardOptions): Promise<ForwardResult> {
    try {
      await Promise.all([settle(socketA), settle(socketB)]);
    } catch (err) {
      return this.#endEarly(socketA, socketB, started, err as NodeJS.ErrnoException);
    }
    return this.#start(socketA, socketB, started, idleTimeout, options);
  }

  // Synchronous from the checks to native.add(): no read can slip in between. Throws what
  // forward() rejects with.
  #start(socketA: net.Socket, socketB: net.Socket, started: number, idleTimeout: number, options: SpliceForwardOptions): Promise<ForwardResult> {
    if (this.#closed) throw Object.assign(new Error('splice engine is closed'), { code: 'ERR_SPLICE_CLOSED' });
    const signal = options.signal;
    if (signal?.aborted) {
      resetSocket(socketA);
      resetSocket(socketB);
      return Promise.resolve({ engine: 'splice', bytesAtoB: 0, bytesBtoA: 0, durationMs: performance.now() - started, reason: 'aborted' });
    }
    const fdA = socketFd(socketA);
    const fdB = socketFd(socketB);
    if (fdA === null || fdB === null) {
      return Promise.resolve(this.#endEarly(socketA, socketB, started, Object.assign(new Error('socket closed'), { code: 'ECONNRESET' }), fdA === null ? 'a' : 'b'));
    }

    const record = options.record;
    // Checked here, after the wait and before anything is taken from the sockets: from this
    // check to native.add() nothing can close the recorder.
    if (record?.sink.closed) throw Object.assign(new Error(`the pcap sink ${record.sink.path} is closed`), { code: 'ERR_PCAP_CLOSED' });
    // The legs' states are taken now, after every record the caller wrote before forward().
    const legs = record?.legs.map(nativeConversation);
    const spec = record && legs ? { recorder: record.sink.recorder.id, legs: legs.map((leg) => leg.native) } : null;
    const headAtoB = takeReadable(socketA);
    const headBtoA = takeReadable(socketB);
    let id: number;
    try {
      id = this.#native.add(fdA, fdB, headAtoB, headBtoA, idleTimeout, spec);
    } catch (err) {
      // Nothing was handed over (a dup failed: EMFILE...). What Node had read goes back, so the
      // caller still holds two whole sockets, which another engine can carry, and hears why.
      giveBack(socketA, headAtoB);
      giveBack(socketB, headBtoA);
      throw err;
    }
    this.#hold();
    // Destroying inside this libuv callback after a dup makes libuv < 1.49 with io_uring
    // spin on the dead fd (libuv#4323); a later tick avoids it. No FIN is sent: our dup holds the socket.
    // Arguments, not a closure: nothing kept for the pair's life may hold its sockets.
    setImmediate(destroyBoth, socketA, socketB);
    return this.#register(id, signal, legs?.map((leg) => leg.state), options.onStart);
  }

  // Apart from #start, so that what is kept for the pair's life (the promise's resolving function,
  // the release control) shares no closure context with the sockets.
  #register(id: number, signal: AbortSignal | undefined, legs: ConversationState[] | undefined, onStart: SpliceForwardOptions['onStart']): Promise<ForwardResult> {
    const result = new Promise<ForwardResult>((resolve) => this.#pending.set(id, resolve, legs));
    if (signal) this.#watch(signal, id);
    if (onStart) {
      const control: SpliceControl = {
        release: () => {
          if (this.#pending.has(id)) this.#native.release(id);
        },
      };
      try {
        onStart(control);
      } catch (err) {
        // The caller cannot know what became of the pair: it ends, and forward() rejects.
        this.#native.abort(id);
        throw err;
      }
    }
    return result;
  }

  // One abort callback per signal, not per pair: the ids of the pairs a signal aborts are kept in
  // a Set (a server's shutdown signal is shared by all its connections).
  #watch(signal: AbortSignal, id: number): void {
    let group = this.#bySignal.get(signal);
    if (!group) {
      const ids = new Set<number>();
      const detach = onAbort(signal, () => {
        this.#bySignal.delete(signal);
        for (const pairId of ids) this.#native.abort(pairId);
        ids.clear();
      });
      group = { ids, detach };
      this.#bySignal.set(signal, group);
    }
    group.ids.add(id);
    this.#signalOf.set(id, signal);
  }

  #unwatch(id: number): void {
    const signal = this.#signalOf.get(id);
    if (!signal) return;
    this.#signalOf.delete(id);
    const group = this.#bySignal.get(signal);
    if (!group) return;
    group.ids.delete(id);
    if (group.ids.size === 0) {
      group.detach();
      this.#bySignal.delete(signal);
    }
  }

  /**
   * Hands the engine two connected socket fds that are the caller's alone (the Acceptor's, not
   * Node's): no dup, no net.Socket. From the call on they are the engine's, and closed by it,
   * even when it throws (engine closed: ERR_SPLICE_CLOSED) or the signal has aborted already.
   * `headAtoB`/`headBtoA` are written first, in order.
   */
  adopt(fdA: number, fdB: number, headAtoB: Buffer | null, headBtoA: Buffer | null, options: Pick<SpliceForwardOptions, 'idleTimeout' | 'signal'> = {}): Promise<ForwardResult> {
    let resolve!: Resolve;
    const result = new Promise<ForwardResult>((r) => { resolve = r; });
    this.adoptThen(fdA, fdB, headAtoB, headBtoA, options, resolve);
    return result;
  }

  /**
   * As adopt(), with the pair's result handed to `onEnd` (on a later turn, never during the call)
   * instead of a promise: what is kept for the pair's life is then `onEnd` and the engine's entry
   * for the pair, no promise. Throws as adopt() does (the fds are closed then, and `onEnd` never
   * called); `onEnd` must not throw.
   */
  adoptThen(fdA: number, fdB: number, headAtoB: Buffer | null, headBtoA: Buffer | null, options: Pick<SpliceForwardOptions, 'idleTimeout' | 'signal'>, onEnd: Resolve): void {
    const idleTimeout = checkIdleTimeout(options.idleTimeout);
    const signal = options.signal;
    if (this.#closed || signal?.aborted) {
      closeFds(fdA, fdB);
      if (this.#closed) throw Object.assign(new Error('splice engine is closed'), { code: 'ERR_SPLICE_CLOSED' });
      queueMicrotask(() => onEnd({ engine: 'splice', bytesAtoB: 0, bytesBtoA: 0, durationMs: 0, reason: 'aborted' }));
      return;
    }
    let id: number;
    try {
      id = this.#native.add(fdA, fdB, headAtoB, headBtoA, idleTimeout, null, true);
    } catch (err) {
      closeFds(fdA, fdB);
      throw err;
    }
    this.#hold();
    this.#pending.set(id, onEnd);
    if (signal) this.#watch(signal, id);
  }

  /**
   * Opens a recorder on a dup of `fd` (the caller closes its own fd). Used by openNativePcap,
   * which opens the file and writes its global header first. `onError` hears of the write
   * error that stops the recorder (ENOSPC, EPIPE...), as soon as it happens.
   */
  openRecorder(fd: number, onError?: (err: Error) => void): NativeRecorder {
    if (this.#closed) throw Object.assign(new Error('splice engine is closed'), { code: 'ERR_SPLICE_CLOSED' });
    if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`fd must be an integer >= 0, got ${String(fd)}`);
    return this.#recorders.open(fd, onError);
  }

  stats(): SpliceEngineStats {
    return this.#native.stats();
  }

  /** Ends every pair (reason `aborted`, both sides reset), closes every recorder's file, and stops the threads. */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    this.#native.close();
    this.#closing = this.#idle()
      ? Promise.resolve()
      : new Promise<void>((resolve) => { this.#drained = resolve; });
    return this.#closing;
  }

  // Every pair out and every recorder whose close() waits keeps the process alive.
  #hold(): void {
    if (this.#pending.size + this.#recorders.closing === 0) this.#native.ref();
  }

  #idle(): boolean {
    // At engine close every recorder reports `closed`, asked to or not.
    return this.#pending.size === 0 && (this.#closed ? this.#recorders.size === 0 : this.#recorders.closing === 0);
  }

  #settled(): void {
    if (this.#pending.size + this.#recorders.closing === 0 && !this.#closed) this.#native.unref();
    if (this.#closed && this.#idle()) this.#drained?.();
  }

  #onDone(done: NativeCompletion): void {
    const pending = this.#pending.take(done.id);
    if (!pending) {
      closeUnclaimed(done);
      return;
    }
    this.#unwatch(done.id);
    try {
      deliver(pending.resolve, pending.legs, done);
    } finally {
      this.#settled();
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

function closeFds(...fds: number[]): void {
  for (const fd of fds) {
    try {
      fs.closeSync(fd);
    } catch {
      // already gone
    }
  }
}
