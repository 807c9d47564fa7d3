// Reload results as they happen, for whoever counts them (the metrics): a count per result and an
// event per reload. Nothing here knows who listens.
import { EventEmitter } from 'node:events';

export type ReloadResult = 'success' | 'failure';

/** Reloads so far in this process, by result. */
export const configReloads: Record<ReloadResult, number> = { success: 0, failure: 0 };

/** `reload` (result) after each reload is counted. */
export const reloadEvents = new EventEmitter<{ reload: [ReloadResult] }>();

export function countConfigReload(result: ReloadResult): void {
  configReloads[result]++;
  reloadEvents.emit('reload', result);
}
