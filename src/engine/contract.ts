import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { ConversationState } from '../pcap/tcp-conversation.js';

/** The engines that can carry a pair. */
export type EngineName = 'splice' | 'js';

/** What a caller may ask for: `auto` takes the splice engine whenever both sockets allow it. */
export type EngineChoice = 'auto' | EngineName;

/**
 * Why a pair ended.
 * - `eof`: both directions finished with a FIN, every byte delivered.
 * - `reset`: one side reset (ECONNRESET/EPIPE); the other side was reset too.
 * - `error`: another socket error on one side (see `error.code`); the other side was reset.
 * - `aborted`: the caller aborted (signal, engine close); both sides were reset.
 * - `timeout`: nothing moved either way for `idleTimeout` ms; both sides were closed.
 * - `released`: only when the caller released the pair (splice engine, `onStart`): both
 *   connections are still open and were handed back in `ForwardResult.released`.
 */
export type EndReason = 'eof' | 'reset' | 'error' | 'aborted' | 'timeout' | 'released';

/** Which of the two sockets given to `forward(a, b)`. */
export type Side = 'a' | 'b';

export interface ForwardResult {
  engine: EngineName;
  /** Bytes written to b that came from a (including bytes Node had already read from a). */
  bytesAtoB: number;
  /** Bytes written to a that came from b. */
  bytesBtoA: number;
  durationMs: number;
  reason: EndReason;
  /** Set when reason is `reset` or `error`: the errno name in `code`, and the side it happened on. */
  error?: ForwardError;
  /** The pair was being recorded and the recording stopped before the pair did (the writer fell behind, or the file failed). */
  recordingDropped?: boolean;
  /** Reason `released` only: the live pair, for the caller to carry on. */
  released?: ReleasedPair;
}

/** Where each direction of a released pair stands: what the engine and the JS side hand each other. */
export interface ReleasedDirections {
  /** Read from a, not yet written to b, in order. Already in the recording, if the pair was recorded. */
  pendingAtoB: Buffer;
  /** Read from b, not yet written to a. */
  pendingBtoA: Buffer;
  /** a's EOF was read. */
  endedAtoB: boolean;
  /** ...and passed on: b was shut down for writing (so pendingAtoB is empty). */
  finishedAtoB: boolean;
  endedBtoA: boolean;
  finishedBtoA: boolean;
}

/**
 * A pair handed back by the splice engine without losing a byte. To carry on: write
 * `pendingAtoB` to b and `pendingBtoA` to a first, then forward the sockets (e.g. forwardJs).
 * A source whose EOF was read keeps reporting it, so the sockets' own 'end' events still come.
 */
export interface ReleasedPair extends ReleasedDirections {
  /** New sockets on the pair's connections: paused (nothing is read before resume()), allowHalfOpen. */
  a: net.Socket;
  b: net.Socket;
  /**
   * When the pair was recorded and its recording had not stopped: the legs' states, to go on
   * with `TcpConversation.fromState()` (the FINs of finished directions are recorded already).
   */
  recording?: ConversationState[];
}

/** A socket error that ended a pair. Carries the errno name, never socket contents. */
export class ForwardError extends Error {
  readonly code: string;
  readonly side: Side;
  readonly syscall?: string;
  constructor(code: string, side: Side, syscall?: string, message?: string) {
    super(message ?? `${code} on side ${side}${syscall ? ` (${syscall})` : ''}`);
    this.name = 'ForwardError';
    this.code = code;
    this.side = side;
    this.syscall = syscall;
  }
}

export interface EngineAvailability {
  available: boolean;
  /** Why not, when not available. */
  reason?: string;
}

/** The splice engine's availability, and when available, which addon file serves it. */
export interface SpliceAvailability extends EngineAvailability {
  /** `prebuild`: shipped in the package (prebuilds/); `build`: compiled on this machine (build/Release). */
  origin?: 'prebuild' | 'build';
  /** The addon file loaded. */
  file?: string;
}

export interface EnginesReport {
  splice: SpliceAvailability;
  js: EngineAvailability;
}

export type ForwardableStream = Duplex;

/** The largest `idleTimeout`: 2^31 - 1 ms, as for setTimeout. */
export const MAX_IDLE_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * The one check of `idleTimeout` that forward(), SpliceEngine.forward() and forwardJs() share:
 * undefined is 0 (never); otherwise an integer number of ms from 0 to MAX_IDLE_TIMEOUT_MS.
 */
export function checkIdleTimeout(value: unknown): number {
  if (value === undefined) return 0;
  if (typeof value !== 'number') throw new TypeError(`idleTimeout must be a number of ms, got ${typeof value}`);
  if (!Number.isInteger(value) || value < 0 || value > MAX_IDLE_TIMEOUT_MS) {
    throw new RangeError(`idleTimeout must be an integer number of ms from 0 (no timeout) to ${MAX_IDLE_TIMEOUT_MS}, got ${String(value)}`);
  }
  return value;
}
