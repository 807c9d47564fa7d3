// Configuration reloads, counted where they happen (the reload code calls countConfigReload) and
// read by the registry at scrape time: the counts live here, so a reload needs no handle on the
// registry and is counted even before (or without) --metrics.

export type ReloadResult = 'success' | 'failure';

const reloads = new Map<ReloadResult, number>([
  ['success', 0],
  ['failure', 0],
]);

/** Counts one configuration reload: `success` when the new configuration was swapped in, `failure` when it was kept out. */
export function countConfigReload(result: ReloadResult): void {
  if (result !== 'success' && result !== 'failure') throw new TypeError(`result must be 'success' or 'failure', got ${JSON.stringify(result)}`);
  reloads.set(result, reloads.get(result)! + 1);
}

/** The counts so far, by result. */
export function configReloads(): ReadonlyMap<ReloadResult, number> {
  return reloads;
}
