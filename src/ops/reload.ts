// SIGHUP: re-read the configuration and apply it, or keep the running one. The reload function
// validates everything before it changes anything; here it is serialized (a SIGHUP during a
// reload runs one more afterwards), counted, logged and told to systemd.
import { countConfigReload } from '../metrics/reloads.js';
import type { ServiceNotifier } from './systemd-notify.js';
import type { Logger } from '../logger.js';

export interface ReloadOutcome {
  /** What changed, for the log line. */
  changed: string[];
  /** Settings that changed in the file but apply only to a new process. */
  needsRestart: string[];
  /** What the service runs with now, for the log line (its bound addresses...). */
  details?: Record<string, unknown>;
}

/** Runs `reload` on every SIGHUP; returns the function that does one (tests, the supervisor). */
export function onReloadSignal(logger: Logger, notifier: ServiceNotifier, reload: () => Promise<ReloadOutcome>): () => Promise<boolean> {
  let running: Promise<boolean> | undefined;
  let again = false;
  const once = async (): Promise<boolean> => {
    notifier.reloading();
    try {
      const outcome = await reload();
      countConfigReload('success');
      if (outcome.needsRestart.length > 0) logger.warn({ settings: outcome.needsRestart }, 'changed settings that need a restart are not applied');
      logger.info({ changed: outcome.changed, ...outcome.details }, 'config reloaded');
      return true;
    } catch (err) {
      countConfigReload('failure');
      logger.error({ err: (err as Error).message }, 'config reload failed; the running config is kept');
      return false;
    } finally {
      notifier.ready();
    }
  };
  const run = (): Promise<boolean> => {
    if (running) {
      again = true;
      return running;
    }
    running = once().finally(() => {
      running = undefined;
      if (again) {
        again = false;
        void run();
      }
    });
    return running;
  };
  process.on('SIGHUP', () => void run());
  return run;
}
