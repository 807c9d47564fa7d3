// The reload step shared by every command, without a process of its own: serialized, counted by
// result, told to systemd as RELOADING then READY, restart-only settings kept and named.
import { describe, expect, it } from 'vitest';
import { changedKeys, reloadOnSignal } from '../src/cli/reload.js';
import { onReloadSignal } from '../src/ops/reload.js';
import { configReloads } from '../src/metrics/reloads.js';
import type { ServiceNotifier } from '../src/ops/systemd-notify.js';
import type { Logger } from '../src/logger.js';

function recorder() {
  const said: string[] = [];
  const lines: Array<{ level: string; fields: Record<string, unknown>; msg: string }> = [];
  const notifier: ServiceNotifier = {
    enabled: true,
    ready: () => said.push('READY=1'),
    reloading: () => said.push('RELOADING=1'),
    stopping: () => said.push('STOPPING=1'),
    close: () => {},
  };
  const log = (level: string) => (fields: Record<string, unknown>, msg: string) => lines.push({ level, fields, msg });
  const logger = { info: log('info'), warn: log('warn'), error: log('error') } as unknown as Logger;
  return { said, lines, notifier, logger };
}

describe('onReloadSignal', () => {
  it('counts each result, logs it, and wraps it in RELOADING=1 … READY=1', async () => {
    const { said, lines, notifier, logger } = recorder();
    const before = new Map(configReloads());
    let fail = false;
    const run = onReloadSignal(logger, notifier, async () => {
      if (fail) throw new Error('p.yaml: max-connections: --max-connections must be from 1 to 1000000, got 0');
      return { changed: ['auth'], needsRestart: ['engine'] };
    });
    expect(await run()).toBe(true);
    fail = true;
    expect(await run()).toBe(false);
    expect(Object.fromEntries(configReloads())).toEqual({ success: before.get('success')! + 1, failure: before.get('failure')! + 1 });
    expect(said).toEqual(['RELOADING=1', 'READY=1', 'RELOADING=1', 'READY=1']);
    expect(lines.map((l) => l.msg)).toEqual(['changed settings that need a restart are not applied', 'config reloaded', 'config reload failed; the running config is kept']);
    expect(lines[2]!.fields.err).toContain('max-connections');
  });

  it('runs one reload at a time: a SIGHUP during one runs one more after it, not two at once', async () => {
    const { notifier, logger } = recorder();
    let running = 0;
    let most = 0;
    let calls = 0;
    const run = onReloadSignal(logger, notifier, async () => {
      calls++;
      most = Math.max(most, ++running);
      await new Promise((resolve) => setTimeout(resolve, 20));
      running--;
      return { changed: [], needsRestart: [] };
    });
    await Promise.all([run(), run(), run()]);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(most).toBe(1);
    // The first, and one for the two that came during it.
    expect(calls).toBe(2);
  });
});

describe('reloadOnSignal', () => {
  it('keeps restart-only settings at their running values, names them as flags, and applies the rest', async () => {
    const { lines, notifier, logger } = recorder();
    const initial = { maxConnections: 10, engine: 'auto', listen: ['a'] };
    let file = { ...initial };
    const applied: Array<typeof initial> = [];
    const run = reloadOnSignal({ logger, notifier, read: () => file, initial, restartOnly: ['engine'], apply: async (next) => void applied.push(next) });
    file = { maxConnections: 20, engine: 'js', listen: ['a'] };
    expect(await run()).toBe(true);
    expect(applied).toEqual([{ maxConnections: 20, engine: 'auto', listen: ['a'] }]);
    expect(lines.find((l) => l.msg === 'changed settings that need a restart are not applied')?.fields.settings).toEqual(['engine']);
    expect(lines.find((l) => l.msg === 'config reloaded')?.fields.changed).toEqual(['max-connections', 'engine']);
  });

  it('compares values that hold bigints (CIDR rules)', () => {
    expect(changedKeys({ rules: [{ net: 10n }] }, { rules: [{ net: 10n }] })).toEqual([]);
    expect(changedKeys({ rules: [{ net: 10n }] }, { rules: [{ net: 11n }], idleTimeout: 5 })).toEqual(['rules', 'idle-timeout']);
  });
});
