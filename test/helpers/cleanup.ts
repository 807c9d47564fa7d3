// Teardown for tests on real sockets, and waiting with a deadline. Everything a helper opens is
// registered with `track()` and closed by `closeAll()`, which every test file calls in afterEach.
import net from 'node:net';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------
// Teardown registry

type Closable = net.Socket | net.Server;
const open = new Set<Closable>();
const cleanups = new Set<() => void>();

export function track<T extends Closable>(thing: T): T {
  open.add(thing);
  // A closed socket needs no teardown (keeps the set small in the 10,000-pair test).
  if (thing instanceof net.Socket) thing.once('close', () => open.delete(thing));
  return thing;
}

/** Runs `fn` in closeAll() (timers, intervals, engines...). */
export function onCleanup(fn: () => void): void {
  cleanups.add(fn);
}

/** Destroys every tracked socket, closes every tracked server, waits (bounded) for all to be closed. */
export async function closeAll(): Promise<void> {
  for (const fn of cleanups) {
    try {
      fn();
    } catch {
      // teardown goes on
    }
  }
  cleanups.clear();
  const waits: Promise<void>[] = [];
  for (const thing of open) {
    if (thing instanceof net.Server) {
      waits.push(new Promise<void>((resolve) => (thing.listening ? thing.close(() => resolve()) : resolve())));
    } else {
      thing.on('error', () => {});
      if (!thing.closed) {
        waits.push(new Promise<void>((resolve) => thing.once('close', () => resolve())));
        thing.destroy();
      }
    }
  }
  open.clear();
  await Promise.race([Promise.all(waits), sleep(10_000)]);
}

// ---------------------------------------------------------------------------
// A list whose entries can be awaited before they arrive.

export class Arrivals<T> {
  readonly items: T[] = [];
  private waiters: { pred: (x: T) => boolean; resolve: (x: T) => void }[] = [];

  push(item: T): void {
    this.items.push(item);
    this.waiters = this.waiters.filter((w) => {
      if (!w.pred(item)) return true;
      w.resolve(item);
      return false;
    });
  }

  /** The first item (present or future) matching pred. Rejects after timeoutMs. */
  find(pred: (x: T) => boolean, what = 'item', timeoutMs = 30_000): Promise<T> {
    const found = this.items.find(pred);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const waiter = {
        pred,
        resolve: (x: T) => {
          clearTimeout(timer);
          resolve(x);
        },
      };
      this.waiters.push(waiter);
    });
  }

  nth(n: number, what = `item #${n}`, timeoutMs = 30_000): Promise<T> {
    if (this.items.length > n) return Promise.resolve(this.items[n]);
    // pred runs after each push, so this resolves at the push that makes item n exist.
    return this.find(() => this.items.length > n, what, timeoutMs).then(() => this.items[n]);
  }
}

/** Rejects with a clear message if `p` takes longer than ms. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Polls `fn` every 50 ms until it returns true or `ms` passes; returns the last value. */
export async function waitFor(fn: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (fn()) return true;
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
}
