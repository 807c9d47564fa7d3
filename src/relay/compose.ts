// Chaining toxic stages for one direction of one connection:
//
//   client socket → [upstream stages, in the order the toxics were added] → server socket
//   server socket → [downstream stages, same rule]                       → client socket
//
// Order matters as in Toxiproxy's chain: limit_data before latency closes once N
// bytes *entered* the delay (they still arrive, Link.close is graceful), after it
// once N bytes left it.
import { PassThrough, pipeline, type Readable, type Transform, type Writable } from 'node:stream';
import type { Rng } from './random.js';
import { createToxicStage } from './stages.js';
import type { Link, StageOptions } from './timed-stage.js';
import type { Direction, Toxic } from './toxics.js';

export interface ComposedStages {
  /** Write what was read from the source socket here. */
  writable: Writable;
  /** Read what goes to the destination socket from here. */
  readable: Readable;
  /** Tear the whole chain down (clears every pending timer). */
  destroy(err?: Error): void;
}

/**
 * Stages for the toxics of one direction. `rng` is the connection-direction
 * stream, e.g. seedRng.fork(`conn:${acceptIndex}`).fork(direction); each toxic
 * gets a child named after it, so adding or removing one toxic leaves the
 * others' decisions unchanged.
 */
export function createDirectionStages(
  toxics: readonly Toxic[],
  direction: Direction,
  rng: Rng,
  link: Link,
  options?: StageOptions,
): Transform[] {
  return toxics.filter((t) => t.stream === direction).map((t) => createToxicStage(t, rng.fork(`toxic:${t.name}`), link, options));
}

/**
 * Pipe stages into one chain. An error or destroy anywhere destroys all of them
 * (node's pipeline), and is reported once through onError.
 */
export function composeStages(stages: readonly Transform[], onError?: (err: Error) => void): ComposedStages {
  const chain = stages.length > 0 ? [...stages] : [new PassThrough()];
  const first = chain[0]!;
  const last = chain[chain.length - 1]!;
  if (chain.length === 1) {
    if (onError) first.on('error', onError);
  } else {
    pipeline(chain, (err) => {
      if (err && onError) onError(err);
    });
  }
  return {
    writable: first,
    readable: last,
    destroy(err?: Error) {
      for (const s of chain) s.destroy(err);
    },
  };
}
