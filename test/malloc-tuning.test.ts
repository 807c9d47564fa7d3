// The CLI's allocator setting: with the addon, glibc is told to keep freed memory for reuse; an
// operator's MALLOC_TRIM_THRESHOLD_ is left to win; a bad count is a RangeError, not a crash.
import { describe, expect, it } from 'vitest';
import { keepFreedMemoryForReuse } from '../src/cli/heap.js';
import { loadNative } from '../src/engine/splice/native.js';
import { needsSplice, spliceSkipReason } from './policy.js';

describe('keepFreedMemoryForReuse()', () => {
  it('sets the trim threshold through the addon', (ctx) => {
    needsSplice(ctx);
    expect(keepFreedMemoryForReuse({})).toBe(true);
  });

  it("leaves the operator's MALLOC_TRIM_THRESHOLD_ alone", () => {
    expect(keepFreedMemoryForReuse({ MALLOC_TRIM_THRESHOLD_: '131072' })).toBe(false);
  });

  it('changes nothing without the addon', (ctx) => {
    if (!spliceSkipReason) ctx.skip('the addon is loaded here');
    expect(keepFreedMemoryForReuse({})).toBe(false);
  });

  it('refuses a count that is not an integer in 0 … 2^31 - 1', (ctx) => {
    needsSplice(ctx);
    const binding = loadNative().binding!;
    for (const bad of [-1, 1.5, 2 ** 31, Number.NaN]) expect(() => binding.setTrimThreshold(bad)).toThrow(RangeError);
    expect(() => binding.setTrimThreshold('1' as unknown as number)).toThrow(TypeError);
  });
});
