// The pure-JS engine: read/write through Node streams, with the same contract as the splice engine.
// Works on any Duplex (TLS sockets, Unix sockets, in-memory streams), so it is the fallback everywhere.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import { onAbort as listenAbort } from '../net/abort.js';
import { checkIdleTimeout, ForwardError, type EndReason, type ForwardResult, type Side } from './contract.js';
import { resetSocket } from './splice/takeover.js';

export interface JsForwardOptions {
  /** End the pair with reason `timeout` after this many ms with no byte moved either way. 0 or absent: never. See ForwardOptions.idleTimeout. */
  idleTimeout?: number;
  /** Aborting ends the pair with reason `aborted`, resetting both sides. */
  signal?: AbortSignal;
}

type Listener = (...args: any[]) => void;

const SIDES: readonly [Side, Side] = ['a', 'b'];
/** The peer is gone: report `reset` rather than `error`. */
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE']);
/** setTimeout turns larger delays into 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Whether 'close' will follow destroy(). net.Socket emits it itself although its stream option emitClose is false. */
function emitsClose(s: Duplex): boolean {
  if (s instanceof net.Socket) return true;
  const state = (s as unknown as { _writableState?: { emitClose?: boolean } })._writableState;
  return state?.emitClose !== false;
}

/**
 * Moves bytes both ways between a and b until both directions have finished (reason `eof`), a side
 * errors or is closed, the signal aborts, or nothing moves for `idleTimeout` ms. Resolves once both
 * sockets are destroyed; never rejects for socket errors, which are reported in the result.
 */
export function forwardJs(a: Duplex, b: Duplex, options: JsForwardOptions = {}): Promise<ForwardResult> {
  const { signal } = options;
  const idleTimeout = checkIdleTimeout(options.idleTimeout);
  const startedAt = performance.now();

  return new Promise<ForwardResult>((resolve) => {
    const sockets = [a, b] as const;
    /** moved[0]: a→b, moved[1]: b→a. */
    const moved = [0, 0];
    /** Per socket: 'end' seen (its peer sent FIN), 'finish' seen (we sent FIN), 'close' seen. */
    const ended = [false, false];
    const finished = [false, false];
    const closed = [false, false];
    const awaitClose = [true, true];
    // Data listeners go as soon as the pair ends; error/close stay until both sockets are closed so a
    // late error raised while tearing down is not unhandled.
    const flowListeners: Array<[Duplex, string, Listener]> = [];
    const lifeListeners: Array<[Duplex, string, Listener]> = [];
    let lastActivity = startedAt;
    let timer: NodeJS.Timeout | undefined;
    let detachSignal: (() => void) | undefined;
    let result: ForwardResult | undefined;
    let resolved = false;

    const listen = (list: typeof flowListeners, s: Duplex, event: string, fn: Listener): void => {
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
    const end = (reason: EndReason, error?: ForwardError, culprit?: 0 | 1): void => {
      if (result) return;
      result = {
        engine: 'js',
        bytesAtoB: moved[0],
        bytesBtoA: moved[1],
        durationMs: performance.now() - startedAt,
        reason,
        ...(error ? { error } : {}),
      };
      clearTimeout(timer);
      detachSignal?.();
      unlisten(flowListeners);
      for (const i of [0, 1] as const) {
        const s = sockets[i];
        awaitClose[i] = emitsClose(s);
        if (reason === 'aborted' || (culprit !== undefined && i !== culprit)) resetSocket(s);
        else s.destroy();
      }
      // Streams that never emit 'close' count as closed once destroy() had a turn to complete.
      setImmediate(maybeResolve);
    };

    const onAbort = (): void => end('aborted');

    const onIdle = (): void => {
      const idleFor = performance.now() - lastActivity;
      if (idleFor >= idleTimeout) end('timeout');
      else timer = setTimeout(onIdle, Math.min(Math.ceil(idleTimeout - idleFor), MAX_TIMER_MS));
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

    if (signal?.aborted) return end('aborted');
    if (a.destroyed) return end('reset', new ForwardError('EBADF', 'a'), 0);
    if (b.destroyed) return end('reset', new ForwardError('EBADF', 'b'), 1);

    for (const i of [0, 1] as const) {
      const src = sockets[i];
      const dst = sockets[1 - i];
      // The hot path: no allocation, no event, pause on backpressure until the destination drains.
      listen(flowListeners, src, 'data', (chunk: Buffer) => {
        moved[i] += chunk.length;
        lastActivity = performance.now();
        if (!dst.write(chunk)) src.pause();
      });
      listen(flowListeners, dst, 'drain', () => src.resume());
      // end() flushes what is queued, then sends FIN; the other direction keeps flowing.
      listen(flowListeners, src, 'end', () => {
        ended[i] = true;
        dst.end();
      });
      listen(flowListeners, src, 'finish', () => {
        finished[i] = true;
        if (finished[1 - i]) end('eof');
      });
    }
    detachSignal = signal ? listenAbort(signal, onAbort) : undefined;
    if (idleTimeout > 0) timer = setTimeout(onIdle, Math.min(idleTimeout, MAX_TIMER_MS));

    // States reached before we were called; their events will not fire again.
    for (const i of [0, 1] as const) {
      if (sockets[i].writableFinished) finished[i] = true;
      if (sockets[i].readableEnded) {
        ended[i] = true;
        sockets[1 - i].end();
      }
    }
    if (finished[0] && finished[1]) return end('eof');
    // An explicit pause() would keep a 'data' listener from starting the flow; buffered bytes come first.
    a.resume();
    b.resume();
  });
}
