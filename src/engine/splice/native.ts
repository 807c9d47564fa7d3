// The one place that loads the addon. Everything else asks `loadNative()` and
// gets either the binding or the reason it is not there.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type { EndReason, ReleasedDirections } from '../contract.js';
import type { ConversationHalfState } from '../../pcap/tcp-conversation.js';

/** Where one side of a recorded conversation stands (TCP sequence space, uint32). */
export type NativeHalfProgress = Pick<ConversationHalfState, 'next' | 'acked' | 'ipId' | 'finished'>;

/** One side of a conversation for the native recorder: its address as 4 or 16 bytes. */
export interface NativeHalf extends NativeHalfProgress, Pick<ConversationHalfState, 'port'> {
  ip: Buffer;
}

export interface NativeConversation {
  ipv4: boolean;
  client: NativeHalf;
  server: NativeHalf;
}

/** What a pair records: into which recorder, and its 1 or 2 legs (client <-> relay, relay <-> server). */
export interface NativeRecordSpec {
  recorder: number;
  legs: NativeConversation[];
}

/**
 * A pair handed back alive. The fds are the engine's dups and now belong to JS (close them or
 * wrap them); `pending*` were read from the source and not yet written, in order.
 */
export interface NativeReleased extends ReleasedDirections {
  fdA: number;
  fdB: number;
  /** Per leg, where the conversation stands; absent when the pair was not recording (or it stopped). */
  recording?: { client: NativeHalfProgress; server: NativeHalfProgress }[];
}

/** One finished pair, as the native loop reports it. */
export interface NativeCompletion {
  id: number;
  bytesAtoB: number;
  bytesBtoA: number;
  durationMs: number;
  reason: EndReason;
  /** errno name (ECONNRESET, EPIPE, ...) for reset and error. */
  code?: string;
  /** Side the error was seen on: 0 = a, 1 = b. */
  side?: number;
  syscall?: string;
  /** The pair's recording stopped before the pair did. */
  recordingDropped?: boolean;
  /** reason `released` only. */
  released?: NativeReleased;
}

/** From the writer thread: a recorder stopped by a write error, or its file closed. */
export interface NativeRecorderEvent {
  recorder: number;
  event: 'failed' | 'closed';
  /** failed: the errno name (ENOSPC, EPIPE...), its negative number and the call. */
  code?: string;
  errno?: number;
  syscall?: string;
  /** closed: every record queued for it was written. */
  complete?: boolean;
}

/** The engine's counters: what `SpliceEngine.stats()` returns, as the addon reports it. */
export interface NativeEngineStats {
  pairs: number;
  pipesInUse: number;
  pipesIdle: number;
  /** Bytes read from a source and not yet written to its destination (pipes + user buffers). */
  bytesBuffered: number;
  /** Pairs that use read/write on at least one direction (no pipe to be had, or splice refused). */
  readWritePairs: number;
  /** Pairs that ever fell back to read/write since the engine started (counts up only). */
  readWriteFallbacks: number;
  /** Pairs whose recording stopped early (writer behind, file failed) since the engine started (counts up only). */
  recordingsDropped: number;
  /** Recorded bytes (headers and payload) waiting for the writer thread. */
  recordQueuedBytes: number;
  /** Recorders (pcap files) open. */
  recorders: number;
  /** Record pipes alive (2 fds each): one per recording pair, plus those the writer has yet to empty. */
  recordPipes: number;
  /** Bytes written a → b (and b → a) by every pair since the engine started, pairs still open included (counts up only). */
  bytesAtoB: number;
  bytesBtoA: number;
}

/**
 * The engine's options, as `new SpliceEngine()` takes them and the addon checks them again. Every
 * option is an integer in its range; a non-number is a TypeError, anything else outside the range
 * (NaN, Infinity, fractions, 0) a RangeError naming the option. Absent: the default.
 */
export interface NativeEngineOptions {
  /**
   * Loop threads, each with its own epoll set: 0 to 64. Default 1. 0: one loop on the JS
   * thread, driven by libuv (no thread switch per pair: cheapest for many short connections,
   * and what each of several worker processes wants); pairs then share that thread's time
   * with JS.
   */
  threads?: number;
  /** Pipes the engine may hold at once, 1 to 2^20; past that, pairs use read/write. Default 256. */
  maxPipes?: number;
  /** Largest size in bytes a pipe grows to for a streaming flow, 1 to 2^30. Default 1 MiB (the kernel's pipe-max-size). */
  maxPipeSize?: number;
  /**
   * Recorded bytes (all pcap files of this engine: recordQueuedBytes) that may wait for the writer
   * thread, 1 to 2^40; past it, a pair stops recording rather than wait. Default 64 MiB.
   */
  recordBufferBytes?: number;
}

/**
 * The native engine: owns loop threads, each with an epoll set. Every argument is checked:
 * a wrong type is a TypeError, a number out of range (fds 0..2^31-1, ids 1..2^53-1,
 * idleTimeoutMs 0..2^31-1, ports 0..65535, sequence numbers uint32) a RangeError.
 */
export interface NativeEngine {
  /**
   * Duplicates fdA and fdB (F_DUPFD_CLOEXEC) synchronously and hands the dups to a loop thread.
   * The caller keeps its own fds and must close them. Heads (Buffer or null) are written first,
   * in order. Returns the pair id. Throws an Error with `code` when a dup fails, and one with
   * code ERR_SPLICE_CLOSED on a closed engine.
   */
  add(
    fdA: number,
    fdB: number,
    headAtoB: Buffer | null,
    headBtoA: Buffer | null,
    idleTimeoutMs: number,
    record?: NativeRecordSpec | null,
    /** Take fdA and fdB themselves, no dup: they are the engine's once add() returns. */
    adopt?: boolean,
  ): number;
  /** Ends a pair with reason `aborted`. Goes to the pair's own loop; unknown or finished ids are ignored. */
  abort(id: number): void;
  /** Hands a pair back alive (reason `released`, see NativeReleased). Goes to the pair's own loop; unknown or finished ids are ignored. */
  release(id: number): void;
  /**
   * Takes a dup of `fd` (a file JS opened and wrote the pcap global header to; the caller closes
   * its own fd) and returns a recorder id. Non-regular files are switched to O_NONBLOCK.
   */
  openRecorder(fd: number): number;
  /** Queues whole records for the writer thread. False (nothing queued) when the queue is full, or the recorder failed or is closing. */
  recordWrite(recorder: number, data: Buffer): boolean;
  /** The file closes once its queue is written and no pair records into it; a `closed` event follows. */
  closeRecorder(recorder: number): void;
  stats(): NativeEngineStats;
  /** Aborts every pair, delivers their completions, joins the threads. Idempotent. */
  close(): void;
  /** Keep the process alive while pairs are in flight, as open sockets would. */
  ref(): void;
  unref(): void;
}

export interface NativeBinding {
  /**
   * Starts the loop threads. Throws a TypeError or RangeError for a bad option, and an Error
   * with `code`, `errno` and `syscall` when epoll_create1, eventfd, epoll_ctl or pthread_create
   * fails (nothing is left running or open then).
   *
   * `onDone` is called once per finished pair (`done`) and once per recorder event (`event`),
   * the other argument undefined. A call that throws does not keep the rest of its batch from
   * being delivered; its exception is raised as an uncaught exception after the batch.
   */
  Engine: new (
    options: NativeEngineOptions,
    onDone: (done: NativeCompletion | undefined, event: NativeRecorderEvent | undefined) => void,
  ) => NativeEngine;
  /**
   * A listening TCP socket (SO_REUSEADDR, and SO_REUSEPORT when asked) on a numeric host;
   * "::" takes IPv4 too. Returns a non-blocking fd the caller owns: give it to
   * `net.Server.listen({ fd })` or `Acceptor.listen`, or close it. Throws an Error with `code`,
   * `errno` and `syscall` (EADDRINUSE from bind, EINVAL from inet_pton for a host that is not an address).
   */
  openListener(host: string, port: number, backlog?: number, reusePort?: boolean): number;
  /**
   * One datagram of systemd's notify protocol (sd_notify(3)) to the unix datagram socket `path`
   * (a leading '@': the abstract namespace). Never blocks. Throws an Error with `code`, `errno`
   * and `syscall` (ENOENT, ECONNREFUSED, EAGAIN from sendto; ENAMETOOLONG for a path too long).
   */
  notify(path: string, message: string): void;
  /**
   * mallopt(M_TRIM_THRESHOLD, bytes): the C allocator keeps up to `bytes` of freed memory for
   * reuse instead of handing it back to the kernel at once. False where the C library has no such
   * setting (musl). Throws a RangeError for a count that is not an integer in 0 … 2^31 - 1.
   */
  setTrimThreshold(bytes: number): boolean;
  /**
   * SO_LINGER {1, 0} on `fd`, a socket Node keeps owning: its close then sends a reset. For a TLS
   * socket, whose handle cannot resetAndDestroy(). Throws an Error with `code` (EBADF, ENOTSOCK).
   */
  lingerZero(fd: number): void;
  /**
   * The handshake's sockets without Node streams: an epoll set of the addon's, watched by libuv
   * on the JS thread. `onEvent(kind, id, a, b, c)` (ACCEPTOR_EVENT) is called from libuv.
   */
  Acceptor: new (onEvent: (kind: number, id: number, a?: unknown, b?: unknown, c?: unknown) => void) => NativeAcceptor;
}

/** The kinds of `Acceptor` events and their arguments. */
export const ACCEPTOR_EVENT = {
  /** (id, listener, peer host, peer port) */
  accepted: 1,
  /** (id, Buffer) */
  data: 2,
  /** (id): the peer's FIN; the connection stays open */
  eof: 3,
  /** (id, errno): a read or queued write failed; the connection is closed */
  failed: 4,
  /** (id, errno, local host, local port): errno 0, or the connection is closed */
  connected: 5,
  /** (id): an ended connection saw the peer close; it is closed */
  drained: 6,
  /** (listener, errno): accept() failed (EMFILE...); the listener rests 100 ms */
  listenFailed: 7,
} as const;

/**
 * Every fd the acceptor holds is its own until `release` hands it out or `destroy`/`end`/
 * `closeListener`/`close` closes it. Ids are never reused.
 */
export interface NativeAcceptor {
  /**
   * Takes a listening fd over; returns the listener id. `hold`: its connections are not read until
   * released. When it throws (a closed acceptor, epoll_ctl) the fd is still the caller's.
   */
  listen(fd: number, hold?: boolean): number;
  listenerAddress(listener: number): [string, number] | undefined;
  closeListener(listener: number): void;
  /** A non-blocking connect to a numeric host; the outcome comes as `connected`. */
  connect(host: string, port: number): number;
  /** 0: written; 1: the rest queued (written as the socket drains, or taken by takeUnsent); -errno: failed. */
  write(id: number, data: Buffer): number;
  /** The last bytes, FIN, then `drained` once the peer closes (its input is read and dropped meanwhile). */
  end(id: number, data: Buffer | null): void;
  /** Closes at once; `reset` with SO_LINGER 0, so the peer sees a reset. */
  destroy(id: number, reset?: boolean): void;
  takeUnsent(id: number): Buffer | null;
  /** Held: its bytes wait in the kernel; not held: they come as `data` events (a connect's upstream starts held). */
  setHeld(id: number, held: boolean): void;
  /** The fd, now the caller's (-1 for an unknown id). */
  release(id: number): number;
  /** Closes every listener and connection, without events. */
  close(): void;
  counts(): { connections: number; listeners: number };
}

/** Where the loaded addon came from: a prebuild shipped in the package, or one compiled here. */
export type AddonOrigin = 'prebuild' | 'build';

export type NativeLoad =
  | { binding: NativeBinding; origin: AddonOrigin; file: string; reason?: undefined }
  | { binding: null; reason: string };

let loaded: NativeLoad | undefined;

/** The package root: where `prebuilds/` and `build/` are looked for. */
const PACKAGE_ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

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
  const require = createRequire(import.meta.url);
  let file: string;
  try {
    // node-gyp-build's order: a local build (build/Release) first, then prebuilds/<platform>-<arch>
    // matching this libc. An install from the package has only the prebuild (scripts/install.cjs
    // compiles nothing when it loads); a checkout has the build it just compiled, which must win
    // over a prebuild that `npm pack` left behind from older sources.
    const nodeGypBuild = require('node-gyp-build') as { resolve(dir: string): string };
    file = nodeGypBuild.resolve(PACKAGE_ROOT);
  } catch {
    const where = `${process.platform}-${process.arch} ${libc()}`;
    return notice({ binding: null, reason: `no prebuild for ${where} and no local build in ${PACKAGE_ROOT}` });
  }
  try {
    const binding = require(file) as NativeBinding;
    const prebuilds = path.join(PACKAGE_ROOT, 'prebuilds') + path.sep;
    loaded = { binding, origin: file.startsWith(prebuilds) ? 'prebuild' : 'build', file };
    return loaded;
  } catch (err) {
    return notice({ binding: null, reason: `native addon ${path.relative(PACKAGE_ROOT, file)} did not load: ${firstLine(err)}` });
  }
}

/**
 * On Linux the splice engine is expected, so its absence is said once per process, on one
 * stderr line; elsewhere (and when switched off) the JS engine is the normal case and says nothing.
 */
function notice(load: NativeLoad & { binding: null }): NativeLoad {
  loaded = load;
  process.stderr.write(`splicer: the splice engine is not available: ${load.reason}; the JS engine will be used\n`);
  return load;
}

function libc(): string {
  // As node-gyp-build tells them apart, so the message names the prebuild it looked for.
  return process.env.LIBC || (fs.existsSync('/etc/alpine-release') ? 'musl' : 'glibc');
}

function firstLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split('\n', 1)[0]!.trim();
}
