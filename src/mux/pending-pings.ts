// The pings a yamux session waits answers for, shared by MuxSession (src/mux) and
// SplicedMuxSession (the addon's). A ping fails only when keepaliveTimeout passes with nothing at
// all from the peer: an answer queued behind a window's worth of data is late, not lost, and a dead
// peer sends nothing.
import { performance } from 'node:perf_hooks';
import { MuxError } from './errors.js';

interface PendingPing {
  sentAt: number;
  /** The peer's activity count when the timer was armed. */
  seen: number;
  timer: NodeJS.Timeout;
  resolve: (rttMs: number) => void;
  reject: (err: Error) => void;
}

export class PendingPings {
  private readonly pings = new Map<number, PendingPing>();

  /** `activity()`: a count that grows with every read from the peer. */
  constructor(
    private readonly timeoutMs: number,
    private readonly activity: () => number,
  ) {}

  get size(): number {
    return this.pings.size;
  }

  /** Waits for the answer to ping `id`, sent now: resolves with the round trip in ms, rejects with ERR_MUX_KEEPALIVE_TIMEOUT. */
  wait(id: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const seen = this.activity();
      this.pings.set(id, { sentAt: performance.now(), seen, timer: this.arm(id, seen), resolve, reject });
    });
  }

  /** The answer to ping `id` arrived: its round trip in ms (`rttMs` when measured elsewhere), or undefined when no such ping waits. */
  answer(id: number, rttMs?: number): number | undefined {
    const ping = this.pings.get(id);
    if (!ping) return undefined;
    this.pings.delete(id);
    clearTimeout(ping.timer);
    const rtt = rttMs ?? performance.now() - ping.sentAt;
    ping.resolve(rtt);
    return rtt;
  }

  /** Fails every ping still waiting. */
  rejectAll(err: Error): void {
    for (const ping of this.pings.values()) {
      clearTimeout(ping.timer);
      ping.reject(err);
    }
    this.pings.clear();
  }

  private arm(id: number, seen: number): NodeJS.Timeout {
    const timer = setTimeout(() => {
      const ping = this.pings.get(id);
      if (!ping) return;
      const now = this.activity();
      if (now !== seen) {
        ping.seen = now;
        ping.timer = this.arm(id, now);
        return;
      }
      this.pings.delete(id);
      ping.reject(new MuxError('ERR_MUX_KEEPALIVE_TIMEOUT', `nothing from the peer for ${this.timeoutMs} ms after a ping`));
    }, this.timeoutMs);
    timer.unref();
    return timer;
  }
}
