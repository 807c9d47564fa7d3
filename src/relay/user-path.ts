// The relay's user-space path: each direction's bytes go source socket → Lane (the toxics) →
// destination socket, and are recorded on the way in and on the way out. It keeps forward()'s
// contract: half-close passes through, a reset on one side resets the other, the result says why
// the pair ended; and a toxic may end the pair itself (reset_peer, limit_data, timeout).
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { resetSocket } from '../engine/splice/takeover.js';
import { ForwardError, type EndReason, type ForwardResult } from '../engine/contract.js';
import type { Lane } from './lane.js';
import type { ConnectionRecording } from './recording.js';
import type { Direction } from './toxics.js';

const RESET_CODES = new Set(['ECONNRESET', 'EPIPE']);
const DIRECTIONS: readonly [Direction, Direction] = ['upstream', 'downstream'];
/**
 * Bytes a destination may have queued before what feeds it (the source, or the lane) is paused.
 * A socket's own mark (16 KiB) is less than one read (64 KiB), so the feed would stop at every
 * write the kernel does not take whole, and reading would wait for writing.
 */
const DIRECT_HIGH_WATER = 1024 * 1024;

/** A direction's state when the pair comes from the splice engine part way through. */
export interface DirectionStart {
  /** Bytes read from the source and not yet written: they go to the destination first, as they are. */
  pending?: Buffer;
  /** The source's FIN was read. */
  ended?: boolean;
  /** ... and passed on: the destination was shut down for writing. */
  finished?: boolean;
}

export interface UserPathOptions {
  /** lanes[0]: client → upstream, lanes[1]: upstream → client. */
  lanes: readonly [Lane, Lane];
  recording?: ConnectionRecording;
  /** Aborting ends the pair with reason `aborted`, resetting both sides. */
  signal?: AbortSignal;
  idleTimeout?: number;
  start?: readonly [DirectionStart, DirectionStart];
}

/** How a toxic ends the pair; handed to the stages as their Link. */
export interface PairEnder {
  reset(): void;
  close(): void;
}

export interface UserPath {
  done: Promise<ForwardResult>;
  link: PairEnder;
}

/** Runs the pair; `a` is the client, `b` the upstream. */
export function runUserPath(a: net.Socket, b: net.Socket, options: UserPathOptions): UserPath {
  const startedAt = performance.now();
  const sockets = [a, b] as const;
  const { lanes, recording, signal, idleTimeout = 0 } = options;
  const moved = [0, 0];
  const sourceEnded = [false, false];
  const finished = [false, false];
  /** The source was paused by a write straight to the destination (an empty lane). */
  const waitingForDst = [false, false];
  const corked = [false, false];
  const closed = [a.destroyed, b.destroyed];
  let result: ForwardResult | undefined;
  let closing = false;
  let lastActivity = startedAt;
  let idleTimer: NodeJS.Timeout | undefined;
  let resolve!: (r: ForwardResult) => void;
  const done = new Promise<ForwardResult>((r) => (resolve = r));

  const maybeResolve = () => {
    if (result && closed[0] && closed[1]) resolve(result);
  };

  /** Ends the pair once: `culprit` errored or closed (the other side is reset); resetAll resets both. */
  const end = (reason: EndReason, error?: ForwardError, culprit?: 0 | 1, graceful = false, resetAll = false): void => {
    if (result) return;
    result = { engine: 'js', bytesAtoB: moved[0]!, bytesBtoA: moved[1]!, durationMs: performance.now() - startedAt, reason, ...(error ? { error } : {}) };
    clearTimeout(idleTimer);
    signal?.removeEventListener('abort', onAbort);
    for (const lane of lanes) lane.destroy();
    if (!graceful && reason !== 'eof') recording?.reset();
    for (const i of [0, 1] as const) {
      const s = sockets[i];
      if (graceful) s.destroySoon();
      else if (resetAll || reason === 'aborted' || (culprit !== undefined && i !== culprit)) resetSocket(s);
      else s.destroy();
    }
    // destroySoon waits for the FIN to be written; a peer that never reads must not hold it.
    if (graceful) setTimeout(() => sockets.forEach((s) => s.destroy()), 2_000).unref();
    setImmediate(maybeResolve);
  };

  const onAbort = () => end('aborted');

  // libuv reads a socket up to 32 times per wakeup, and a delaying stage releases all that is due
  // at once; corking the destination until the loop's check phase sends such a burst with one
  // writev instead of a write per 64 KiB chunk. Not behind a slicer: its pieces stay separate writes.
  const uncork = (i: 0 | 1) => {
    corked[i] = false;
    sockets[1 - i]!.uncork();
  };
  const coalesce = (i: 0 | 1) => {
    corked[i] = true;
    sockets[1 - i]!.cork();
    setImmediate(uncork, i);
  };

  const onIdle = () => {
    const idleFor = performance.now() - lastActivity;
    if (idleFor >= idleTimeout) end('timeout');
    else idleTimer = setTimeout(onIdle, Math.ceil(idleTimeout - idleFor));
  };

  // A toxic asked to close: once every direction has passed on what its chain lets through, both
  // sides get a FIN (Toxiproxy closes the whole connection).
  const closeWhenDrained = () => {
    if (result || !closing) return;
    for (const i of [0, 1] as const) {
      if (!finished[i] && !sockets[1 - i]!.writableEnded) {
        lanes[i].destroy();
        sockets[1 - i]!.end();
        recording?.deliveredEnd(DIRECTIONS[i]);
      }
    }
    end('eof', undefined, undefined, true);
  };

  const link: PairEnder = {
    reset: () => end('reset', new ForwardError('ECONNRESET', 'b', 'toxic'), undefined, false, true),
    close: () => {
      closing = true;
      // The stage has ended its output; the end reaches the socket through the rest of the chain.
    },
  };

  for (const i of [0, 1] as const) {
    const s = sockets[i];
    s.on('error', (err: NodeJS.ErrnoException) => {
      if (result) return;
      const code = typeof err.code === 'string' ? err.code : 'EIO';
      end(RESET_CODES.has(code) ? 'reset' : 'error', new ForwardError(code, i === 0 ? 'a' : 'b', err.syscall), i);
    });
    s.on('close', () => {
      closed[i] = true;
      // A socket closes on its own once its FIN came in and ours went out, while the other
      // direction may still be flushing; closed any earlier, someone else destroyed it.
      if (!result && !(sourceEnded[i] && finished[1 - i])) end('reset', new ForwardError('ECONNRESET', i === 0 ? 'a' : 'b'), i);
      maybeResolve();
    });
  }

  for (const i of [0, 1] as const) {
    const src = sockets[i];
    const dst = sockets[1 - i]!;
    const lane = lanes[i];
    const direction = DIRECTIONS[i];
    const start = options.start?.[i] ?? {};
    if (start.pending && start.pending.length > 0) {
      moved[i] += start.pending.length;
      dst.write(start.pending);
    }
    if (start.finished) {
      sourceEnded[i] = true;
      finished[i] = true;
      lane.destroy();
      continue;
    }
    src.on('data', (chunk: Buffer) => {
      if (sourceEnded[i]) return;
      lastActivity = performance.now();
      recording?.received(direction, chunk);
      if (lane.empty) {
        // No toxic on this direction and nothing held: the chunk goes out as it came in.
        moved[i] += chunk.length;
        recording?.delivered(direction, chunk);
        if (!corked[i]) coalesce(i);
        if (!dst.write(chunk) && dst.writableLength >= DIRECT_HIGH_WATER) {
          waitingForDst[i] = true;
          src.pause();
        }
      } else if (!lane.input.write(chunk)) src.pause();
    });
    lane.input.on('drain', () => src.resume());
    const onSourceEnd = () => {
      if (sourceEnded[i]) return;
      sourceEnded[i] = true;
      recording?.receivedEnd(direction);
      lane.input.end();
    };
    src.on('end', onSourceEnd);
    if (start.ended) onSourceEnd();
    lane.output.on('data', (chunk: Buffer) => {
      lastActivity = performance.now();
      moved[i] += chunk.length;
      recording?.delivered(direction, chunk);
      if (!corked[i] && !lane.keepsWritesApart) coalesce(i);
      if (!dst.write(chunk) && dst.writableLength >= DIRECT_HIGH_WATER) lane.output.pause();
    });
    dst.on('drain', () => {
      lane.output.resume();
      if (waitingForDst[i]) {
        waitingForDst[i] = false;
        src.resume();
      }
    });
    lane.output.on('end', () => {
      if (result) return;
      recording?.deliveredEnd(direction);
      dst.end();
      if (closing) closeWhenDrained();
    });
    dst.on('finish', () => {
      finished[i] = true;
      if (finished[1 - i]) end('eof');
    });
  }
  if (finished[0] && finished[1]) end('eof');
  signal?.addEventListener('abort', onAbort, { once: true });
  if (signal?.aborted) end('aborted');
  if (idleTimeout > 0 && !result) idleTimer = setTimeout(onIdle, idleTimeout);
  a.resume();
  b.resume();
  return { done, link };
}
