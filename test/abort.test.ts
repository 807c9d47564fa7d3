import { describe, expect, it } from 'vitest';
import { onAbort } from '../src/net/abort.js';

describe('onAbort', () => {
  it('calls each callback once, in the order added, and not those removed', () => {
    const ac = new AbortController();
    const calls: string[] = [];
    onAbort(ac.signal, () => calls.push('a'));
    const removeB = onAbort(ac.signal, () => calls.push('b'));
    onAbort(ac.signal, () => calls.push('c'));
    removeB();
    ac.abort();
    ac.abort();
    expect(calls).toEqual(['a', 'c']);
  });

  it('skips a callback removed by one that ran before it, and never calls one added after the abort', () => {
    const ac = new AbortController();
    const calls: string[] = [];
    let removeB = () => {};
    onAbort(ac.signal, () => {
      calls.push('a');
      removeB();
      onAbort(ac.signal, () => calls.push('late'));
    });
    removeB = onAbort(ac.signal, () => calls.push('b'));
    ac.abort();
    onAbort(ac.signal, () => calls.push('after'));
    expect(calls).toEqual(['a']);
  });

  it('keeps calling the others when one throws, and throws its error uncaught', async () => {
    const ac = new AbortController();
    const calls: string[] = [];
    const uncaught: unknown[] = [];
    const listeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.on('uncaughtException', (err) => uncaught.push(err));
    try {
      onAbort(ac.signal, () => {
        throw new Error('boom');
      });
      onAbort(ac.signal, () => calls.push('b'));
      ac.abort();
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.removeAllListeners('uncaughtException');
      for (const l of listeners) process.on('uncaughtException', l);
    }
    expect(calls).toEqual(['b']);
    expect(uncaught).toHaveLength(1);
    expect((uncaught[0] as Error).message).toBe('boom');
  });
});
