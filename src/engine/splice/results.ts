// What becomes of a pair the engine held: its native completion turned into the ForwardResult
// forward() resolves with, and a released pair's fds turned back into net.Sockets.
import fs from 'node:fs';
import net from 'node:net';
import type { NativeCompletion, NativeReleased } from './native.js';
import type { ConversationState } from '../../pcap/tcp-conversation.js';
import { ForwardError, type ForwardResult, type ReleasedPair, type Side } from '../contract.js';

/** Resolves a forward() waiting for its pair's completion. */
export type Resolve = (result: ForwardResult) => void;

/**
 * The pairs the engine holds, by id: for each, only the function that resolves its forward(), and
 * for a recorded pair its legs' states as handed to the engine (addresses for the states it gives
 * back). With thousands of idle pairs open this is all JS keeps of one: a Map entry and the
 * promise's resolving function, no record and no closure of its own.
 */
export class PendingPairs {
  readonly #byId = new Map<number, Resolve>();
  readonly #legs = new Map<number, ConversationState[]>();

  get size(): number {
    return this.#byId.size;
  }

  has(id: number): boolean {
    return this.#byId.has(id);
  }

  set(id: number, resolve: Resolve, legs?: ConversationState[]): void {
    this.#byId.set(id, resolve);
    if (legs) this.#legs.set(id, legs);
  }

  /** The pair's waiter, now no longer held; undefined when none waits. */
  take(id: number): { resolve: Resolve; legs: ConversationState[] | undefined } | undefined {
    const resolve = this.#byId.get(id);
    if (!resolve) return undefined;
    this.#byId.delete(id);
    const legs = this.#legs.get(id);
    if (legs) this.#legs.delete(id);
    return { resolve, legs };
  }
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
  if (done.recordingDropped) result.recordingDropped = true;
  return result;
}

/** A net.Socket on an fd the engine handed back; closes the fd when Node cannot take it. */
export function socketOnFd(fd: number): net.Socket {
  try {
    // pauseOnCreate: no read starts before the caller resumes (Node's own option, used by
    // cluster; not in @types/node). allowHalfOpen: an EOF must not end the other direction.
    return new net.Socket({ fd, allowHalfOpen: true, readable: true, writable: true, pauseOnCreate: true } as net.SocketConstructorOpts);
  } catch (err) {
    try {
      fs.closeSync(fd);
    } catch {
      // already gone
    }
    throw err;
  }
}

function releasedPair(released: NativeReleased, legs: ConversationState[] | undefined): ReleasedPair {
  let a: net.Socket | undefined;
  try {
    a = socketOnFd(released.fdA);
  } catch (err) {
    fs.closeSync(released.fdB);
    throw Object.assign(err as Error, { side: 'a' });
  }
  let b: net.Socket;
  try {
    b = socketOnFd(released.fdB);
  } catch (err) {
    a.destroy();
    throw Object.assign(err as Error, { side: 'b' });
  }
  const pair: ReleasedPair = {
    a,
    b,
    pendingAtoB: released.pendingAtoB,
    pendingBtoA: released.pendingBtoA,
    endedAtoB: released.endedAtoB,
    finishedAtoB: released.finishedAtoB,
    endedBtoA: released.endedBtoA,
    finishedBtoA: released.finishedBtoA,
  };
  if (released.recording && legs) {
    pair.recording = released.recording.map((progress, i) => ({
      ...legs[i],
      client: { ...legs[i].client, ...progress.client },
      server: { ...legs[i].server, ...progress.server },
    }));
  }
  return pair;
}

/** Resolves the waiting forward() with the pair's result (and the pair itself, when it was released). */
export function deliver(resolve: Resolve, legs: ConversationState[] | undefined, done: NativeCompletion): void {
  const result = toResult(done);
  if (done.released) {
    try {
      result.released = releasedPair(done.released, legs);
    } catch (err) {
      // Node could not take an fd back (both are closed by now): the pair is lost.
      const e = err as NodeJS.ErrnoException & { side?: Side };
      result.reason = 'error';
      result.error = new ForwardError(e.code ?? 'EBADF', e.side ?? 'a', 'open');
    }
  }
  resolve(result);
}

/**
 * A completion nobody waits for (cannot happen: ids are registered before any completion can
 * arrive): a released pair's fds must not leak all the same.
 */
export function closeUnclaimed(done: NativeCompletion): void {
  if (done.released) for (const fd of [done.released.fdA, done.released.fdB]) fs.closeSync(fd);
}
