// systemd's notify protocol (sd_notify(3)) without libsystemd: newline-separated KEY=VALUE lines
// in one datagram to the unix socket $NOTIFY_SOCKET names ('@' = the abstract namespace). Node
// has no unix datagram socket, so the addon sends it; where the addon is missing (it builds on
// every Linux with a compiler, and systemd is Linux only) this says so once and sends nothing.
import { loadNative } from '../engine/splice/native.js';
import type { Logger } from '../logger.js';

export interface ServiceNotifier {
  /** Whether datagrams go anywhere ($NOTIFY_SOCKET set and the addon loaded). */
  readonly enabled: boolean;
  /** READY=1: every listener is bound (also the end of a reload). */
  ready(status?: string): void;
  /** RELOADING=1 with MONOTONIC_USEC: a reload has begun; ready() ends it. */
  reloading(): void;
  /** STOPPING=1: shutting down. */
  stopping(): void;
  /** Stops the watchdog pings. */
  close(): void;
}

/** CLOCK_MONOTONIC in µs, as systemd reads MONOTONIC_USEC (Node's hrtime is that clock on Linux). */
export const monotonicUsec = (): bigint => process.hrtime.bigint() / 1000n;

/**
 * The notifier of this process. With WATCHDOG_USEC set (and WATCHDOG_PID absent or ours) it sends
 * WATCHDOG=1 every half interval from now on, on a timer that does not keep the process alive.
 */
export function serviceNotifier(logger: Logger | undefined, env: NodeJS.ProcessEnv = process.env): ServiceNotifier {
  const path = env.NOTIFY_SOCKET;
  const { binding, reason } = path ? loadNative() : { binding: undefined, reason: undefined };
  if (path && !binding) logger?.warn({ reason }, 'NOTIFY_SOCKET is set, but systemd notifications need the native addon, which is not available here');
  const socket = path && binding ? path : undefined;
  const failed = new Set<string>();
  const send = (message: string) => {
    if (!socket) return;
    try {
      binding!.notify(socket, message);
    } catch (err) {
      // One line per kind of failure, not one per watchdog ping.
      const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
      if (!failed.has(code)) logger?.warn({ code, socket, message: message.split('\n')[0] }, 'systemd notification not sent');
      failed.add(code);
    }
  };
  let watchdog: NodeJS.Timeout | undefined;
  const usec = Number(env.WATCHDOG_USEC);
  const forUs = env.WATCHDOG_PID === undefined || Number(env.WATCHDOG_PID) === process.pid;
  if (socket && Number.isSafeInteger(usec) && usec > 0 && forUs) {
    watchdog = setInterval(() => send('WATCHDOG=1'), Math.max(1, Math.floor(usec / 2000)));
    watchdog.unref();
  }
  const withStatus = (line: string, status?: string) => (status ? `${line}\nSTATUS=${status.replace(/\n/g, ' ')}` : line);
  return {
    enabled: socket !== undefined,
    ready: (status) => send(withStatus('READY=1', status)),
    reloading: () => send(`RELOADING=1\nMONOTONIC_USEC=${monotonicUsec()}`),
    stopping: () => send('STOPPING=1'),
    close: () => clearInterval(watchdog),
  };
}
