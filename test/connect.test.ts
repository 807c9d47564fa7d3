import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DialError, settleWithin } from '../src/net/connect.js';

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

const errors = { timedOut: () => new DialError('ETIMEDOUT', 'timed out'), aborted: () => new DialError('ABORT_ERR', 'aborted') };

describe('settleWithin', () => {
  it('resolves with what start gives, runs the cleanup once (not failed) and leaves no timer', async () => {
    const cleanup = vi.fn();
    const promise = settleWithin<number>({ timeoutMs: 1000, ...errors }, (resolve) => {
      setTimeout(() => resolve(7), 10);
      setTimeout(() => resolve(8), 20);
      return cleanup;
    });
    await vi.advanceTimersByTimeAsync(30);
    await expect(promise).resolves.toBe(7);
    expect(cleanup.mock.calls).toEqual([[false]]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('rejects with timedOut() after timeoutMs, and the cleanup is told it failed', async () => {
    const cleanup = vi.fn();
    const promise = settleWithin<number>({ timeoutMs: 500, ...errors }, () => cleanup);
    const caught = promise.catch((err: DialError) => err);
    await vi.advanceTimersByTimeAsync(499);
    expect(cleanup).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(await caught).toMatchObject({ code: 'ETIMEDOUT' });
    expect(cleanup.mock.calls).toEqual([[true]]);
  });

  it('rejects with aborted() when the signal aborts, and lets go of the signal once settled', async () => {
    const ac = new AbortController();
    const cleanup = vi.fn();
    const promise = settleWithin<number>({ timeoutMs: 500, signal: ac.signal, ...errors }, () => cleanup);
    ac.abort();
    await expect(promise).rejects.toMatchObject({ code: 'ABORT_ERR' });
    expect(cleanup.mock.calls).toEqual([[true]]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('does not look at a signal aborted before the call (as onAbort)', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(settleWithin<number>({ timeoutMs: 500, signal: ac.signal, ...errors }, (resolve) => resolve(1))).resolves.toBe(1);
  });

  it('rejects with what start throws, and runs the cleanup of a start that settled at once', async () => {
    await expect(settleWithin({ timeoutMs: 500, ...errors }, () => { throw new Error('bad option'); })).rejects.toThrow('bad option');
    const cleanup = vi.fn();
    await expect(settleWithin({ timeoutMs: 500, ...errors }, (_resolve, reject) => { reject(new Error('now')); return cleanup; })).rejects.toThrow('now');
    expect(cleanup.mock.calls).toEqual([[true]]);
    expect(vi.getTimerCount()).toBe(0);
  });
});
