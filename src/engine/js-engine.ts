// The pure-JS engine: read/write through Node streams, with the same contract as the splice engine.
// Works on any Duplex (TLS sockets, Unix sockets, in-memory streams), so it is the fallback everywhere.
//
// forwardThrough() is the one implementation of a pair's semantics on streams; forwardJs() is it with
// nothing between the sockets, and a caller that must change bytes on the way (the relay's toxics)
// puts a Through in a direction and keeps the same half-close, reset, abort and idle rules.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex, Readable, Writable } from 'node:stream';
import { onAbort as listenAbort } from '../net/abort.js';
import { checkIdleTimeout, ForwardError, type EndReason, type ForwardResult, type Side } from './contract.js';
import { resetSocket } from './splice/takeover.js';

export interface JsForwardOptions {
  /** End the pair with reason `timeout` after this many ms with no byte moved either way. 0 or absent: never. See ForwardOptions.idleTimeout. */
  idleTimeout?: number;
  /** Aborting ends the pair with reason `aborted`, resetting both sides. */
  signal?: AbortSignal;
}

/** What one direction's bytes pass through between its source and its destination. */
export interface Through {
  /** The source's bytes are written here; end() at the source's EOF. */
  readonly input: Writable;
  /** What goes to the destination; its end becomes the destination's FIN. */
  readonly output: Readable;
  /** True while a byte written now would come out unchanged and next: the engine then writes it to the destination itself. */
  readonly empty: boolean;
  /** Its output's chunks must reach the destination as separate writes. */
  readonly keepsWritesApart?: boolean;
  /** Stops it: called when the pair ends, or when a close cuts its direction short. */
  destroy(): void;
}

/** Sees one direction's bytes: as read from the source, and as written to the destination. */
export interface DirectionTap {
  received?(chunk: Buffer): void;
  delivered?(chunk: Buffer): void;
  receivedEnd?(): void;
  deliveredEnd?(): void;
}

/** A direction's state when the pair is taken over part way through (from the splice engine). */
export interface DirectionStart {
  /** Bytes read from the source and not yet written: they go to the destination first, as they are. */
  pending?: Buffer;
  /** The source's FIN was read. */
  ended?: boolean;
  /** ... and passed on: the destination was shut down for writing. */
  finished?: boolean;
}

export interface PairDirection {
  through?: Through;
  tap?: DirectionTap;
  start?: DirectionStart;
}

export interface ThroughOptions extends JsForwardOptions {
  /** [0]: a → b, [1]: b → a. */
  directions?: readonly [PairDirection, PairDirection];
  /**
   * Let a destination queue up to 1 MiB before its feed pauses, and send what one loop turn
   * delivers with one writev (cork until the check phase). Off: pause at every write the
   * destination does not take at once, write each chunk on its own.
   */
  batch?: boolean;
  /** Called once as the pair ends, before its sockets are closed; `graceful`: it ended by close(). */
  onEnd?(result: ForwardResult, graceful: boolean): void;
}

export interface ThroughPair {
  /** Resolves once both sockets are closed; never rejects. */
  done: Promise<ForwardResult>;
  /** Ends the pair with reason `reset`, resetting both sides. */
  reset(error: ForwardError): void;
  /**
   * Ends the pair with FINs both ways once a Through's output has ended: the direction whose output
   * ended passes on what it had, the other is cut where it stands (Toxiproxy closes the whole
   * connection), and the sockets close once their FINs are written.
   */
  close(): void;
}

type Listener = (...args: any[]) => void;
type Ending = 'normal' | 'graceful' | 'reset-both';

const SIDES: readonly [Side, Side] = ['a', 'b'];
/** The peer is gone: report `reset` rather than `error`. */
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE']);
/** setTimeout turns larger delays into 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/**
 * With `batch`, bytes a destination may have queued before what feeds it is paused. A socket's own
 * mark (16 KiB) is less than one read (64 KiB), so the feed would stop at every write the kernel
 * does not take whole, and reading would wait for writing.
 */
const BATCH_HIGH_WATER = 1024 * 1024;
/** How long a graceful close waits for a FIN to be written: a peer that never reads must not hold it. */
const GRACEFUL_CLOSE_MS = 2_000;

/** Whether 'close' will follow destroy(). net.Socket emits it itself although its stream option emitClose is false. */
function emitsClose(s: Duplex): boolean {
  if (s instanceof net.Socket) return true;
  const state = (s as unknown as { _writableState?: { emitClose?: boolean } })._writableState;
  return state?.emitClose !== false;
}

/** Sends what is queued and a FIN, then destroys (net.Socket's destroySoon, for any Duplex). */
function destroySoon(s: Duplex): void {
  if (s.writable) s.end();
  if (s.writableFinished) s.destroy();
  else s.once('finish', () => s.destroy());
}

/** Bytes written a → b ([0]) and b → a ([1]) by every pair of this process, pairs still open included. */
const movedByAll: [number, number] = [0, 0];

/**
 * What this engine has moved so far, per direction, live pairs included: a counter read when it
 * is wanted (a metrics scrape), so that a long transfer shows while it runs.
 */
export function jsEngineBytes(): { aToB: number; bToA: number } {
  return { aToB: movedByAll[0], bToA: movedByAll[1] };
}

/**
 * Moves bytes both ways between a and b until both directions have finished (reason `eof`), a side
 * errors or is closed, the signal aborts, or nothing moves for `idleTimeout` ms. Resolves once both
 * sockets are destroyed; never rejects for socket errors, which are reported in the result.
 */
export function forwardJs(a: Duplex, b: Duplex, options: JsForwardOptions = {}): Promise<ForwardResult> {
  return forwardThrough(a, b, options).done;
}

/** forwardJs() with, per direction, a Through between source and destination, a tap, and a start state. */
export function forwardThrough(a: Duplex, b: Duplex, options: ThroughOptions = {}): ThroughPair {
  const { signal, onEnd } = options;
  const idleTimeout = checkIdleTimeout(options.idleTimeout);
  const highWater = options.batch ? BATCH_HIGH_WATER : 0;
  const startedAt = performance.now();
  const sockets = [a, b] as const;
  /** Indexed by direction (0: a→b, 1: b→a), whose source is sockets[i]. */
  const moved = [0, 0];
  /** The source was paused by a write straight to the destination. */
  const waitingForDst = [false, false];
  const corked = [false, false];
  /** Per socket: 'end' seen (its peer sent FIN), 'finish' seen (we sent FIN), 'close' seen. */
  const ended = [false, false];
  const finished = [false, false];
  const closed = [false, false];
  const awaitClose = [true, true];
  // Data listeners go as soon as the pair ends; error/close stay until both sockets are closed so a
  // late error raised while tearing down is not unhandled.
  const flowListeners: Array<[NodeJS.EventEmitter, string, Listener]> = [];
  const lifeListeners: Array<[NodeJS.EventEmitter, string, Listener]> = [];
  let lastActivity = startedAt;
  let timer: NodeJS.Timeout | undefined;
  let detachSignal: (() => void) | undefined;
  let result: ForwardResult | undefined;
  let resolved = false;
  let closing = false;
  let resolve!: (r: ForwardResult) => void;
  const done = new Promise<ForwardResult>((r) => (resolve = r));
  const directions = options.directions ?? [{}, {}];

  const listen = (list: typeof flowListeners, s: NodeJS.EventEmitter, event: string, fn: Listener): void => {
    s.on(event, fn);
    list.push([s, event, fn]);
  };
  const unlisten = (list: typeof flowListeners): void => {
    for (const [s, event, fn] of list) s.removeListener(event, fn);
    list.length = 0;
  };

  const maybeResolve = (): void => {
    if (!result || resolved) return;
    if ((awaitClose[0] && !closed[0]) || (awaitClose[1] && !closed[1])) return;
    resolved = true;
    unlisten(lifeListeners);
    resolve(result);
  };

  /** Ends the pair once; `culprit` is the index of the socket that errored or closed. */
  const end = (reason: EndReason, error?: ForwardError, culprit?: 0 | 1, ending: Ending = 'normal'): void => {
    if (result) return;
    result = {
      engine: 'js',
      bytesAtoB: moved[0]!,
      bytesBtoA: moved[1]!,
      durationMs: performance.now() - startedAt,
      reason,
      ...(error ? { error } : {}),
    };
    clearTimeout(timer);
    detachSignal?.();
    unlisten(flowListeners);
    for (const direction of directions) direction.through?.destroy();
    onEnd?.(result, ending === 'graceful');
    for (const i of [0, 1] as const) {
      const s = sockets[i];
      awaitClose[i] = emitsClose(s);
      if (ending === 'graceful') destroySoon(s);
      else if (ending === 'reset-both' || reason === 'aborted' || (culprit !== undefined && i !== culprit)) resetSocket(s);
      else s.destroy();
    }
    if (ending === 'graceful') setTimeout(() => sockets.forEach((s) => s.destroy()), GRACEFUL_CLOSE_MS).unref();
    // Streams that never emit 'close' count as closed once destroy() had a turn to complete.
    setImmediate(maybeResolve);
  };

  const onIdle = (): void => {
    const idleFor = performance.now() - lastActivity;
    if (idleFor >= idleTimeout) end('timeout');
    else timer = setTimeout(onIdle, Math.min(Math.ceil(idleTimeout - idleFor), MAX_TIMER_MS));
  };

  // libuv reads a socket up to 32 times per wakeup, and a delaying Through releases all that is due
  // at once; corking the destination until the loop's check phase sends such a burst with one
  // writev instead of a write per 64 KiB chunk.
  const uncork = (i: 0 | 1): void => {
    corked[i] = false;
    sockets[1 - i]!.uncork();
  };
  const coalesce = (i: 0 | 1): void => {
    corked[i] = true;
    sockets[1 - i]!.cork();
    setImmediate(uncork, i);
  };

  // Once the direction that asked to close has passed on its end, the other is cut short.
  const closeWhenDrained = (): void => {
    for (const i of [0, 1] as const) {
      const dst = sockets[1 - i]!;
      if (!finished[1 - i] && !dst.writableEnded) {
        directions[i].through?.destroy();
        dst.end();
        directions[i].tap?.deliveredEnd?.();
      }
    }
    end('eof', undefined, undefined, 'graceful');
  };

  const pair: ThroughPair = {
    done,
    reset: (error) => end('reset', error, undefined, 'reset-both'),
    close: () => {
      closing = true;
    },
  };

  for (const i of [0, 1] as const) {
    const s = sockets[i];
    // Without this Node ends the writable side on its own at EOF, cutting the other direction short.
    if (s instanceof net.Socket && s.allowHalfOpen === false) s.allowHalfOpen = true;
    closed[i] = s.destroyed;
    listen(lifeListeners, s, 'error', (err: NodeJS.ErrnoException) => {
      if (result) {
        // A failed reset leaves the socket without a handle: no 'close' will come.
        if (err.syscall === 'reset') closed[i] = true;
        maybeResolve();
        return;
      }
      const code = typeof err.code === 'string' ? err.code : 'EIO';
      end(RESET_CODES.has(code) ? 'reset' : 'error', new ForwardError(code, SIDES[i], err.syscall), i);
    });
    listen(lifeListeners, s, 'close', () => {
      closed[i] = true;
      // A socket autodestroys after its own end and finish while the other direction may still be
      // flushing; closed any earlier, someone else destroyed it.
      if (!result && !(ended[i] && finished[i])) end('reset', new ForwardError('ECONNRESET', SIDES[i]), i);
      maybeResolve();
    });
  }

  if (signal?.aborted) {
    end('aborted');
    return pair;
  }
  if (a.destroyed || b.destroyed) {
    const culprit = a.destroyed ? 0 : 1;
    end('reset', new ForwardError('EBADF', SIDES[culprit]), culprit);
    return pair;
  }

  const sourceEnds: Array<() => void> = [];
  for (const i of [0, 1] as const) {
    const src = sockets[i];
    const dst = sockets[1 - i]!;
    const { through, tap, start = {} } = directions[i];
    if (start.pending && start.pending.length > 0) {
      moved[i] += start.pending.length;
      movedByAll[i] += start.pending.length;
      dst.write(start.pending);
    }
    if (start.finished) {
      ended[i] = true;
      finished[1 - i] = true;
      through?.destroy();
      sourceEnds.push(() => {});
      continue;
    }
    const onSourceEnd = (): void => {
      if (ended[i]) return;
      ended[i] = true;
      tap?.receivedEnd?.();
      if (through) through.input.end();
      else {
        tap?.deliveredEnd?.();
        // end() flushes what is queued, then sends FIN; the other direction keeps flowing.
        dst.end();
      }
    };
    sourceEnds.push(onSourceEnd);
    // The hot path: no allocation, no event, pause on backpressure until the destination drains.
    listen(flowListeners, src, 'data', (chunk: Buffer) => {
      if (ended[i]) return;
      lastActivity = performance.now();
      tap?.received?.(chunk);
      if (through === undefined || through.empty) {
        moved[i] += chunk.length;
        movedByAll[i] += chunk.length;
        tap?.delivered?.(chunk);
        if (highWater > 0 && !corked[i]) coalesce(i);
        if (!dst.write(chunk) && dst.writableLength >= highWater) {
          waitingForDst[i] = true;
          src.pause();
        }
      } else if (!through.input.write(chunk)) src.pause();
    });
    listen(flowListeners, src, 'end', onSourceEnd);
    listen(flowListeners, dst, 'drain', () => {
      through?.output.resume();
      if (waitingForDst[i]) {
        waitingForDst[i] = false;
        src.resume();
      }
    });
    listen(flowListeners, dst, 'finish', () => {
      finished[1 - i] = true;
      if (finished[i]) end('eof');
    });
    if (!through) continue;
    listen(flowListeners, through.input, 'drain', () => src.resume());
    listen(flowListeners, through.output, 'data', (chunk: Buffer) => {
      lastActivity = performance.now();
      moved[i] += chunk.length;
      movedByAll[i] += chunk.length;
      tap?.delivered?.(chunk);
      if (highWater > 0 && !corked[i] && !through.keepsWritesApart) coalesce(i);
      if (!dst.write(chunk) && dst.writableLength >= highWater) through.output.pause();
    });
    listen(flowListeners, through.output, 'end', () => {
      tap?.deliveredEnd?.();
      dst.end();
      if (closing) closeWhenDrained();
    });
  }
  detachSignal = signal ? listenAbort(signal, () => end('aborted')) : undefined;
  if (idleTimeout > 0) timer = setTimeout(onIdle, Math.min(idleTimeout, MAX_TIMER_MS));

  // States reached before we were called; their events will not fire again.
  for (const i of [0, 1] as const) {
    if (sockets[i].writableFinished) finished[i] = true;
    if (directions[i].start?.ended || sockets[i].readableEnded) sourceEnds[i]!();
  }
  if (finished[0] && finished[1]) {
    end('eof');
    return pair;
  }
  // An explicit pause() would keep a 'data' listener from starting the flow; buffered bytes come first.
  a.resume();
  b.resume();
  return pair;
}
