// A command's SIGHUP: read its options again (config file and command line), work out what changed,
// and hand the new options to the running service. Settings a running process cannot change
// (the engine, its threads, the accept path, the number of workers) are logged as needing a
// restart, and the rest still applies.
import { onReloadSignal } from '../ops/reload.js';
import type { ServiceNotifier } from '../ops/systemd-notify.js';
import type { Logger } from '../logger.js';

// Rules hold their CIDRs as bigints.
const text = (value: unknown) => JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
const same = (a: unknown, b: unknown) => text(a) === text(b);

/** Attribute names whose values differ, as their flags are spelt (`maxConnections` → `max-connections`). */
export function changedKeys(before: object, after: object): string[] {
  const a = before as Record<string, unknown>;
  const b = after as Record<string, unknown>;
  const names = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...names].filter((name) => !same(a[name], b[name])).map((name) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`));
}

export interface CommandReload<T extends object> {
  logger: Logger;
  notifier: ServiceNotifier;
  /** The options as the command line and the file give them now; throws on any error. */
  read: () => T;
  /** What the process started with. */
  initial: T;
  /** Attributes that only a new process takes. */
  restartOnly: ReadonlyArray<keyof T & string>;
  /** Validates and applies: rejects, changing nothing, on any error. */
  apply: (next: T) => Promise<Record<string, unknown> | void>;
}

/** Wires SIGHUP to a reload of the command's options; returns the function that runs one. */
export function reloadOnSignal<T extends object>(reload: CommandReload<T>): () => Promise<boolean> {
  let running = reload.initial;
  return onReloadSignal(reload.logger, reload.notifier, async () => {
    const read = reload.read();
    const changed = changedKeys(running, read);
    // Restart-only settings keep their running values: the rest is applied around them.
    const next = { ...read };
    const needsRestart: string[] = [];
    for (const key of reload.restartOnly) {
      if (!same(running[key], read[key])) needsRestart.push(key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`));
      next[key] = running[key];
    }
    const details = await reload.apply(next);
    running = next;
    return { changed, needsRestart, details: details ?? undefined };
  });
}
