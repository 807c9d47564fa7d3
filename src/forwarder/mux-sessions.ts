// The n:1 side of a mux forwarder: N yamux sessions dialled to one address, kept up for as long
// as the forwarder runs. A stream goes to the session with the fewest streams open (a session
// dialled again after a loss starts empty and takes the new load at once, where round robin would
// keep feeding the busy ones alike). A lost session (the peer closed, no answer to pings, a
// protocol error) is dialled again after an exponential backoff with jitter; one that got GoAway
// takes no new stream, keeps its open ones to their end, and a fresh session takes its place.
// A stream asked for while no session is up waits for one, up to its deadline.
import type { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { MuxError } from '../mux/errors.js';
import { createMuxSession, type MuxSession } from '../mux/session.js';
import type { MuxSessionOptions } from '../mux/options.js';
import type { MuxStream } from '../mux/stream.js';
import type { SplicedMuxSession } from '../mux/spliced-session.js';
import type { Logger } from '../logger.js';

/** What the pool keeps up: our JS session, or one whose streams the addon splices. */
export type PooledSession = MuxSession | SplicedMuxSession;

export interface MuxSessionPoolOptions<S extends PooledSession = MuxSession> {
  /** Opens the connection a session runs over (TCP or TLS), within `timeoutMs`. */
  dial: (timeoutMs: number, signal: AbortSignal) => Promise<Duplex>;
  /** Sessions kept up. */
  sessions: number;
  /** ms a dial may take. */
  connectTimeout: number;
  mux?: Omit<MuxSessionOptions, 'role'>;
  /** The session over a dialled connection (default: createMuxSession, role client, with `mux`). */
  createSession?: (connection: Duplex) => S;
  /** The first wait after a failure, doubled per failure in a row up to backoffMax (ms). */
  backoffInitial?: number;
  backoffMax?: number;
  /** How the peer is named in log lines (mux+tls://host:port). */
  peer: string;
  logger?: Logger;
}

/** A session that lived less than this before it was lost counts as a failed dial: the backoff grows. */
const STABLE_AFTER_MS = 2_000;

/** The wait before dial attempt `failures` (1, 2, ...): doubling from `initial`, capped, then 50–100 % of it, so slots and processes do not dial in step. */
export function backoffDelay(failures: number, initial: number, max: number, random = Math.random): number {
  const base = Math.min(max, initial * 2 ** Math.min(Math.max(failures - 1, 0), 30));
  return Math.round(base * (0.5 + random() * 0.5));
}

interface Waiter<S> {
  resolve: (session: S) => void;
  reject: (err: Error) => void;
}

export class MuxSessionPool<S extends PooledSession = MuxSession> {
  readonly #o: Required<Pick<MuxSessionPoolOptions<S>, 'backoffInitial' | 'backoffMax'>> & MuxSessionPoolOptions<S>;
  /** Sessions that take new streams. */
  readonly #up = new Set<S>();
  /** Every session not yet closed, going away or not: what close() ends. */
  readonly #all = new Set<S>();
  readonly #waiters = new Set<Waiter<S>>();
  readonly #stop = new AbortController();
  #slots: Promise<void>[] = [];

  constructor(options: MuxSessionPoolOptions<S>) {
    this.#o = { ...options, backoffInitial: options.backoffInitial ?? 250, backoffMax: options.backoffMax ?? 30_000 };
  }

  /** Sessions up now (taking new streams). */
  get sessionsUp(): number {
    return this.#up.size;
  }

  /** Starts dialling every session. */
  start(): void {
    this.#slots = Array.from({ length: this.#o.sessions }, (_, slot) => this.#keepUp(slot));
  }

  /**
   * A new stream on the least busy session up; waits for one up to `timeoutMs`. Rejects when
   * none came in time, when every session is at its stream limit, or when the pool is closing.
   */
  openStream(this: MuxSessionPool<MuxSession>, timeoutMs: number): Promise<MuxStream> {
    return this.session(timeoutMs).then((session) => session.openStream());
  }

  /**
   * The least busy session up; waits for one up to `timeoutMs`. Rejects when none came in time or
   * when the pool is closing.
   */
  session(timeoutMs: number): Promise<S> {
    if (this.#stop.signal.aborted) return Promise.reject(new MuxError('ERR_MUX_GOING_AWAY', 'the forwarder is stopping'));
    if (this.#up.size > 0) return Promise.resolve(this.#leastBusy());
    return new Promise<S>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new MuxError('ERR_MUX_SESSION_CLOSED', `no mux session to ${this.#o.peer} came up within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter: Waiter<S> = {
        resolve: (session) => {
          clearTimeout(timer);
          resolve(session);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.#waiters.add(waiter);
    });
  }

  /** Stops dialling; GoAway on every session (its streams go on); waiting clients are refused. */
  goAway(): void {
    this.#stop.abort();
    for (const waiter of this.#waiters) waiter.reject(new MuxError('ERR_MUX_GOING_AWAY', 'the forwarder is stopping'));
    this.#waiters.clear();
    this.#up.clear();
    for (const session of this.#all) void session.close();
  }

  /** Ends every session at once (its streams are reset); resolves when the dialling has stopped. */
  async destroy(): Promise<void> {
    this.goAway();
    for (const session of this.#all) session.destroy();
    await Promise.all(this.#slots);
  }

  #leastBusy(): S {
    let best: S | undefined;
    for (const session of this.#up) if (!best || session.streamCount < best.streamCount) best = session;
    return best!;
  }

  /** One slot of the pool: dial, hold the session until it is lost or told to go away, again. */
  async #keepUp(slot: number): Promise<void> {
    const { logger, peer } = this.#o;
    const signal = this.#stop.signal;
    let failures = 0;
    while (!signal.aborted) {
      let session: S;
      try {
        const connection = await this.#o.dial(this.#o.connectTimeout, signal);
        if (signal.aborted) {
          connection.destroy();
          return;
        }
        session = this.#o.createSession ? this.#o.createSession(connection) : (createMuxSession(connection, { ...this.#o.mux, role: 'client' }) as S);
      } catch (err) {
        if (signal.aborted) return;
        failures += 1;
        const retryInMs = backoffDelay(failures, this.#o.backoffInitial, this.#o.backoffMax);
        const e = err as NodeJS.ErrnoException;
        logger?.warn({ to: peer, slot, code: e.code, err: e.message, attempt: failures, retryInMs }, 'mux session dial failed');
        await sleep(retryInMs, signal);
        continue;
      }
      const upAt = Date.now();
      const ended = this.#hold(session);
      logger?.info({ to: peer, slot, sessions: this.#up.size }, 'mux session up');
      const how = await ended;
      if (signal.aborted) return;
      if (how.goAway) {
        // Its streams finish on it; this slot dials a fresh session now.
        logger?.info({ to: peer, slot, streams: session.streamCount }, 'mux session got GoAway: draining it, dialling a new one');
        failures = 0;
        continue;
      }
      failures = Date.now() - upAt < STABLE_AFTER_MS ? failures + 1 : 1;
      const retryInMs = backoffDelay(failures, this.#o.backoffInitial, this.#o.backoffMax);
      logger?.warn({ to: peer, slot, err: how.err?.message, retryInMs }, 'mux session lost: dialling again');
      await sleep(retryInMs, signal);
    }
  }

  /** Puts `session` up and hands it to waiting clients; resolves when it takes no more new streams. */
  #hold(session: S): Promise<{ goAway: boolean; err?: Error }> {
    this.#all.add(session);
    this.#up.add(session);
    // Both kinds emit 'error', 'goaway' and 'close' alike.
    const events = session as unknown as EventEmitter;
    events.on('error', () => {}); // reported with 'close'
    for (const waiter of [...this.#waiters]) {
      this.#waiters.delete(waiter);
      waiter.resolve(this.#leastBusy());
    }
    return new Promise((resolve) => {
      events.once('goaway', () => {
        this.#up.delete(session);
        resolve({ goAway: true });
      });
      events.once('close', (err?: Error) => {
        this.#up.delete(session);
        this.#all.delete(session);
        resolve({ goAway: false, err });
      });
    });
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
