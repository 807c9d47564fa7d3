import { pino, type Logger, type LevelWithSilent, type DestinationStream } from 'pino';
import fs from 'node:fs';

export type { Logger };

export const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export interface LoggerOptions {
  /** Fields on every line (a worker process's `worker: index`). */
  base?: Record<string, unknown>;
  /** Where the lines go; default stdout (fd 1), asynchronously and bounded (LogDestination). */
  destination?: DestinationStream;
}

/** JSON lines on stdout, one object per event. */
export function createLogger(level: LevelWithSilent = 'info', options: LoggerOptions = {}): Logger {
  const config = { level, base: options.base, timestamp: pino.stdTimeFunctions.isoTime };
  return pino(config, options.destination ?? new LogDestination(1));
}

/**
 * Resolves once the logger's lines are written, or after `ms` when its reader has stalled: a
 * process that is stopping waits for its last lines that long and no longer.
 */
export function flushLogs(logger: Logger, ms = 1000): Promise<boolean> {
  const stream = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym];
  if (stream instanceof LogDestination) return stream.flushWithin(ms);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    timer.unref();
    try {
      logger.flush(() => {
        clearTimeout(timer);
        resolve(true);
      });
    } catch {
      clearTimeout(timer);
      resolve(false);
    }
  });
}

// Where the CLI's JSON lines go: a file descriptor (stdout), written asynchronously and bounded,
// so that a log reader that stalls (a full pipe, a stopped journal, `| less` left open) never
// stalls the service. pino's own stdout destination writes synchronously (a full pipe then
// blocks the event loop: no connection is served and SIGTERM is never handled); Node's
// process.stdout is synchronous for pipes on Linux, which blocks the same way.

/** Bytes waiting to be written past which new lines are dropped (and counted) until it drains. */
export const MAX_QUEUED_LOG_BYTES = 16 * 1024 * 1024;
const RETRY_MS = 20;

export class LogDestination {
  readonly #fd: number;
  readonly #maxQueued: number;
  #queue: string[] = [];
  #queuedBytes = 0;
  #writing = false;
  #broken = false;
  #idle: Array<() => void> = [];
  /** Lines dropped because MAX_QUEUED_LOG_BYTES were waiting, or the reader had gone (EPIPE). */
  dropped = 0;

  constructor(fd = 1, maxQueued = MAX_QUEUED_LOG_BYTES) {
    this.#fd = fd;
    this.#maxQueued = maxQueued;
  }

  /** Queues one line (pino's call); never blocks, never throws. */
  write(line: string): void {
    if (this.#broken || this.#queuedBytes + line.length > this.#maxQueued) {
      this.dropped++;
      return;
    }
    this.#queue.push(line);
    this.#queuedBytes += line.length;
    if (!this.#writing) this.#writeNext(null);
  }

  /** Calls `done` once every line queued so far is written (or dropped); at once when nothing waits. */
  flush(done: () => void): void {
    if (!this.#writing) done();
    else this.#idle.push(done);
  }

  /** Resolves once flushed, or after `ms` with lines still waiting (the reader is stalled). */
  flushWithin(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      timer.unref();
      this.flush(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  #writeNext(rest: Buffer | null): void {
    let chunk = rest;
    if (!chunk || chunk.length === 0) {
      if (this.#queue.length === 0) {
        this.#writing = false;
        const idle = this.#idle;
        this.#idle = [];
        for (const done of idle) done();
        return;
      }
      chunk = Buffer.from(this.#queue.length === 1 ? this.#queue[0] : this.#queue.join(''));
      this.#queue = [];
      this.#queuedBytes = 0;
    }
    this.#writing = true;
    const pending = chunk;
    // Counted while it is written too, so a stalled reader bounds what this holds.
    this.#queuedBytes += pending.length;
    fs.write(this.#fd, pending, (err, written) => {
      this.#queuedBytes -= pending.length;
      if (err) {
        if (err.code === 'EAGAIN' || err.code === 'EINTR') {
          setTimeout(() => this.#writeNext(pending), RETRY_MS).unref();
          return;
        }
        // The reader is gone (EPIPE) or the fd is unusable: nothing more can be written.
        this.#broken = true;
        this.dropped += this.#queue.length + 1;
        this.#queue = [];
        this.#queuedBytes = 0;
        this.#writeNext(null);
        return;
      }
      this.#writeNext(pending.subarray(written));
    });
  }
}
