// The relay's user-space path: each direction's bytes go source socket → Lane (the toxics) →
// destination socket, and are recorded on the way in and on the way out. The pair's semantics are
// the JS engine's (forwardThrough): half-close passes through, a reset on one side resets the other,
// the result says why the pair ended; here a toxic may also end the pair itself (reset_peer,
// limit_data, timeout).
import type net from 'node:net';
import { forwardThrough, type DirectionStart, type PairDirection } from '../engine/js-engine.js';
import { ForwardError, type ForwardResult } from '../engine/contract.js';
import type { Lane } from './lane.js';
import type { ConnectionRecording } from './recording.js';
import type { Direction } from './toxics.js';

export type { DirectionStart };

const DIRECTIONS: readonly [Direction, Direction] = ['upstream', 'downstream'];

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
  const { lanes, recording, signal, idleTimeout, start } = options;
  const direction = (i: 0 | 1): PairDirection => {
    const name = DIRECTIONS[i];
    return {
      through: lanes[i],
      start: start?.[i],
      tap: recording && {
        received: (chunk) => recording.received(name, chunk),
        delivered: (chunk) => recording.delivered(name, chunk),
        receivedEnd: () => recording.receivedEnd(name),
        deliveredEnd: () => recording.deliveredEnd(name),
      },
    };
  };
  const pair = forwardThrough(a, b, {
    directions: [direction(0), direction(1)],
    batch: true,
    signal,
    idleTimeout,
    // A recording ends with the pair's RSTs unless both directions ended with FINs.
    onEnd: (result, graceful) => {
      if (!graceful && result.reason !== 'eof') recording?.reset();
    },
  });
  return {
    done: pair.done,
    link: {
      reset: () => pair.reset(new ForwardError('ECONNRESET', 'b', 'toxic')),
      // The stage has ended its output; the end reaches the socket through the rest of the chain.
      close: () => pair.close(),
    },
  };
}
