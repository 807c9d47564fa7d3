// forward(a, b): picks the engine for a pair and hands it over.
import type { Duplex } from 'node:stream';
import { forwardJs } from './js-engine.js';
import { loadNative } from './splice/native.js';
import { SpliceEngine } from './splice/engine.js';
import { whyNoFd } from './splice/takeover.js';
import { checkIdleTimeout, type EngineName, type EnginesReport, type ForwardResult, type EngineChoice } from './contract.js';

export interface ForwardOptions {
  /** Default `auto`: splice when the addon is loaded and both sockets have an fd, else js. */
  engine?: EngineChoice;
  /**
   * End the pair with reason `timeout` after this many ms with no byte moved either way.
   * An integer from 0 to 2^31 - 1 (about 24.8 days, setTimeout's limit); 0 or absent: never.
   * Anything else (NaN, Infinity, a negative or fractional number, a larger one, a non-number)
   * is refused with a RangeError (TypeError for a non-number) before the sockets are touched,
   * on either engine.
   */
  idleTimeout?: number;
  /** Aborting ends the pair with reason `aborted`, resetting both sides. */
  signal?: AbortSignal;
  /** The splice engine to use; default: one shared engine with one loop thread, created on first use. */
  spliceEngine?: SpliceEngine;
}

let sharedEngine: SpliceEngine | undefined;

/** The engine `forward()` uses when no `spliceEngine` is given: one loop thread, made on first use. */
export function defaultSpliceEngine(): SpliceEngine {
  if (!sharedEngine || sharedEngine.closed) sharedEngine = new SpliceEngine();
  return sharedEngine;
}

/** Which engines this process can use, and why not. */
export function engines(): EnginesReport {
  const load = loadNative();
  return {
    splice: load.binding ? { available: true, origin: load.origin, file: load.file } : { available: false, reason: load.reason },
    js: { available: true },
  };
}

function validate(options: ForwardOptions): void {
  const { engine, idleTimeout, signal } = options;
  if (engine !== undefined && engine !== 'auto' && engine !== 'splice' && engine !== 'js') {
    throw new TypeError(`engine must be 'auto', 'splice' or 'js', got ${JSON.stringify(engine)}`);
  }
  checkIdleTimeout(idleTimeout);
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError('signal must be an AbortSignal');
  }
}

/** The engine a pair would get, or the reason `splice` was asked for and cannot be had. */
export function chooseEngine(a: Duplex, b: Duplex, options: ForwardOptions = {}): { engine: EngineName; reason?: string } {
  const wanted = options.engine ?? 'auto';
  if (wanted === 'js') return { engine: 'js' };
  const why = (!options.spliceEngine && loadNative().reason) || whyNoFd(a) || whyNoFd(b);
  if (why && wanted === 'splice') throw Object.assign(new Error(`engine 'splice' cannot carry this pair: ${why}`), { code: 'ERR_SPLICE_UNAVAILABLE' });
  return why ? { engine: 'js', reason: why } : { engine: 'splice' };
}

/**
 * Moves bytes both ways between `a` and `b` until both directions are finished,
 * passing on half-closes and resets. Resolves with what happened; both streams
 * are destroyed by then. A drop-in for `a.pipe(b).pipe(a)` that keeps half-close,
 * turns a reset into a reset, and on Linux moves the bytes with splice().
 */
export function forward(a: Duplex, b: Duplex, options: ForwardOptions = {}): Promise<ForwardResult> {
  // Not async: the promise returned is the engine's own, not one more wrapped around it for the
  // pair's whole life; a bad option still rejects.
  try {
    validate(options);
    const { engine } = chooseEngine(a, b, options);
    const pairOptions = { idleTimeout: options.idleTimeout, signal: options.signal };
    if (engine === 'js') return forwardJs(a, b, pairOptions);
    return (options.spliceEngine ?? defaultSpliceEngine()).forward(a, b, pairOptions);
  } catch (err) {
    return Promise.reject(err);
  }
}
