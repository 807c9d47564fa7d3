// The grace of a service's close(graceMs): open connections may finish on their own until the
// grace runs out, and whatever is left is then ended by the caller.
import { setMaxListeners } from 'node:events';

/** setTimeout turns a longer delay into 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Calls `changed` each time the count may have gone down; returns the function that stops it. */
export type OnChange = (changed: () => void) => () => void;

/** Resolves true once `count()` is 0 (read whenever `onChange` says so), or false once `graceMs` has passed with some left. */
export function drain(count: () => number, graceMs: number, onChange: OnChange): Promise<boolean> {
  if (count() === 0) return Promise.resolve(true);
  if (!(graceMs > 0)) return Promise.resolve(false);
  const deadline = Date.now() + graceMs;
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    let stop: (() => void) | undefined;
    let done = false;
    const finish = (empty: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stop?.();
      resolve(empty);
    };
    // A grace longer than a timer can hold (--grace in seconds has no bound) is waited in steps.
    const arm = () => {
      const left = deadline - Date.now();
      timer = left > MAX_TIMER_MS ? setTimeout(arm, MAX_TIMER_MS) : setTimeout(() => finish(count() === 0), left);
    };
    arm();
    stop = onChange(() => {
      if (count() === 0) finish(true);
    });
    if (done) stop();
  });
}

/**
 * A set of what is open (connections, streams) whose `drained(graceMs)` wakes as soon as the last
 * one is deleted, instead of finding it out on the next poll.
 */
export class OpenSet<T> extends Set<T> {
  readonly #changed = new Set<() => void>();

  override delete(value: T): boolean {
    const deleted = super.delete(value);
    if (deleted) this.#notify();
    return deleted;
  }

  override clear(): void {
    super.clear();
    this.#notify();
  }

  /** Resolves true once empty, or false once `graceMs` has passed (see drain). */
  drained(graceMs: number): Promise<boolean> {
    return drain(() => this.size, graceMs, (changed) => {
      this.#changed.add(changed);
      return () => this.#changed.delete(changed);
    });
  }

  #notify(): void {
    // Called at every connection's end: no copy when nothing waits.
    if (this.#changed.size === 0) return;
    for (const changed of [...this.#changed]) changed();
  }
}

/**
 * Tasks (a tunnel's streams) that run until they end or a shutdown aborts them: `close(graceMs)`
 * lets them finish for the grace, then aborts the rest through `signal` and waits for them.
 */
export class RunningTasks {
  readonly #tasks = new OpenSet<Promise<void>>();
  readonly #shutdown = new AbortController();

  constructor() {
    // Every task listens on the shutdown signal: that many listeners is the design, not a leak.
    setMaxListeners(0, this.#shutdown.signal);
  }

  /** Aborted once a close's grace has run out. */
  get signal(): AbortSignal {
    return this.#shutdown.signal;
  }

  get size(): number {
    return this.#tasks.size;
  }

  /** Runs `task`, kept until it settles. */
  run(task: Promise<void>): void {
    const done = task.finally(() => this.#tasks.delete(done));
    this.#tasks.add(done);
  }

  /** Gives the tasks `graceMs` to finish, then aborts them; resolves once all have ended. */
  async close(graceMs: number): Promise<void> {
    await this.#tasks.drained(graceMs);
    this.#shutdown.abort();
    await Promise.all(this.#tasks);
  }
}
