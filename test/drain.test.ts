import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { drain, OpenSet } from '../src/net/drain.js';

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

/** The promise's state after `ms` of fake time. */
async function stateAfter(promise: Promise<boolean>, ms: number): Promise<boolean | 'pending'> {
  let value: boolean | 'pending' = 'pending';
  void promise.then((v) => (value = v));
  await vi.advanceTimersByTimeAsync(ms);
  return value;
}

describe('OpenSet.drained', () => {
  it('resolves true at once when empty, whatever the grace', async () => {
    expect(await new OpenSet().drained(0)).toBe(true);
    expect(await new OpenSet().drained(1000)).toBe(true);
  });

  it('resolves false at once with no grace (0, negative, NaN) when something is open', async () => {
    const open = new OpenSet([1]);
    expect(await open.drained(0)).toBe(false);
    expect(await open.drained(-5)).toBe(false);
    expect(await open.drained(Number.NaN)).toBe(false);
  });

  it('wakes when the last one is deleted, not on a later poll', async () => {
    const open = new OpenSet(['a', 'b']);
    const drained = open.drained(10_000);
    expect(await stateAfter(drained, 100)).toBe('pending');
    open.delete('a');
    expect(await stateAfter(drained, 0)).toBe('pending');
    open.delete('b');
    expect(await stateAfter(drained, 0)).toBe(true);
  });

  it('resolves false when the grace runs out, and stops listening', async () => {
    const open = new OpenSet([1]);
    const drained = open.drained(500);
    expect(await stateAfter(drained, 499)).toBe('pending');
    expect(await stateAfter(drained, 1)).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
    open.delete(1);
  });

  it('clear() counts as the last delete', async () => {
    const open = new OpenSet([1, 2]);
    const drained = open.drained(1000);
    open.clear();
    expect(await stateAfter(drained, 0)).toBe(true);
  });

  it('waits out a grace longer than one timer can hold', async () => {
    const open = new OpenSet([1]);
    const day = 24 * 3600 * 1000;
    const drained = open.drained(30 * day);
    expect(await stateAfter(drained, 29 * day)).toBe('pending');
    expect(await stateAfter(drained, day)).toBe(false);
  });

  it('with Infinity waits until empty', async () => {
    const open = new OpenSet([1]);
    const drained = open.drained(Infinity);
    expect(await stateAfter(drained, 100 * 24 * 3600 * 1000)).toBe('pending');
    open.delete(1);
    expect(await stateAfter(drained, 0)).toBe(true);
  });
});

describe('drain', () => {
  it('reads the count when told it changed, and unsubscribes once settled', async () => {
    let count = 2;
    const listeners = new Set<() => void>();
    const drained = drain(() => count, 1000, (changed) => {
      listeners.add(changed);
      return () => listeners.delete(changed);
    });
    count = 1;
    for (const l of listeners) l();
    expect(await stateAfter(drained, 0)).toBe('pending');
    count = 0;
    for (const l of [...listeners]) l();
    expect(await stateAfter(drained, 0)).toBe(true);
    expect(listeners.size).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('resolves true at the deadline when the count reached 0 without a word', async () => {
    let count = 1;
    const drained = drain(() => count, 200, () => () => {});
    count = 0;
    expect(await stateAfter(drained, 200)).toBe(true);
  });
});
