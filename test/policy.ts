// When a test may skip, and when it must fail instead. CI runs the suite twice: once with the
// addon (where a missing splice engine on Linux is a failure, never a skip) and once with
// SPLICER_DISABLE_NATIVE=1, the path every macOS and Windows user takes, where tests that can
// only hold with splice skip, saying why.
import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'vitest';
import { engines } from '../src/engine/forward.js';

/** Set by .ci/run: a tool the tests need and CI installs is a failure when missing, not a skip. */
export const underCi = Boolean(process.env.CI);

/** The JS-engine leg: the addon is switched off for this run. */
export const nativeDisabled = process.env.SPLICER_DISABLE_NATIVE === '1';

export const spliceAvailable = engines().splice.available;

/**
 * Why tests that need the splice engine skip in this run, or undefined where they must run: on
 * Linux with the addon on, a splice engine that did not load fails them.
 */
export const spliceSkipReason: string | undefined = nativeDisabled
  ? 'needs the splice engine, switched off in this run (SPLICER_DISABLE_NATIVE=1)'
  : process.platform !== 'linux'
    ? 'needs the splice engine, which is Linux only'
    : undefined;

/** The engines a test parameterised by engine runs on in this run. */
export const testEngines: readonly ('splice' | 'js')[] = spliceSkipReason ? ['js'] : ['splice', 'js'];

/** Skips the calling test (or, from a beforeEach, every test of its describe) where splice is off. */
export function needsSplice(ctx: TestContext): void {
  if (spliceSkipReason) ctx.skip(spliceSkipReason);
}

const present = new Map<string, boolean>();

/** Whether `tool` is an executable on PATH. */
export function hasTool(tool: string): boolean {
  let found = present.get(tool);
  if (found === undefined) {
    found = (process.env.PATH ?? '').split(path.delimiter).some((dir) => {
      try {
        fs.accessSync(path.join(dir, tool), fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
    present.set(tool, found);
  }
  return found;
}

/**
 * For a test that drives an external tool: runs where it is installed; where it is not, fails
 * under CI (which must install it: `.ci/run`) and skips elsewhere, naming the tool either way.
 */
export function needsTool(ctx: TestContext, tool: string, apt = tool): void {
  if (hasTool(tool)) return;
  if (underCi) throw new Error(`${tool} is not installed, and CI must have it: apt-get install -y ${apt}`);
  ctx.skip(`${tool} is not installed (apt-get install -y ${apt})`);
}
