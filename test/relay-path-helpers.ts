// Running the relay's data path in tests: one named relay on 127.0.0.1:0 in front of an upstream.
import { afterEach } from 'vitest';
import { relayDataPath, type RelayConnectionRecord, type RelayDataOptions } from '../src/relay/relay.js';
import { parseToxic, type ToxicInput } from '../src/relay/toxics.js';
import type { RelayListener } from '../src/relay/listener.js';
import { engines } from '../src/engine/forward.js';
import { SpliceEngine } from '../src/engine/splice/engine.js';
import { Arrivals, closeAll, HOST, onCleanup } from './helpers.js';
import { spliceSkipReason } from './policy.js';

const spliceAvailable = engines().splice.available;
/** `auto` runs in every leg: where splice is off it must fall back to the JS engine. */
export const modes = ['auto', 'js'] as const;
/** What `auto` carries an unfaulted connection on in this run. */
export const autoEngine = spliceSkipReason ? 'js' : 'splice';

let engines_: SpliceEngine[] = [];

afterEach(async () => {
  await closeAll();
  await Promise.all(engines_.map((e) => e.close()));
  engines_ = [];
});

/** A splice engine closed after the test, or none for the JS engine or where there is no addon. */
export function spliceEngineFor(engine: 'auto' | 'js'): SpliceEngine | undefined {
  if (engine === 'js' || !spliceAvailable) return undefined;
  const e = new SpliceEngine();
  engines_.push(e);
  return e;
}

export interface Running {
  listener: RelayListener;
  port: number;
  records: Arrivals<RelayConnectionRecord>;
}

export async function startRelay(upstreamPort: number, toxics: ToxicInput[] = [], options: Partial<RelayDataOptions> = {}): Promise<Running> {
  const records = new Arrivals<RelayConnectionRecord>();
  if (options.engine !== 'js' && spliceAvailable && !options.spliceEngine) {
    options.spliceEngine = new SpliceEngine();
    engines_.push(options.spliceEngine);
  }
  const open = relayDataPath({ seed: 1, ...options, onConnection: (r) => records.push(r) });
  const listener = await open({ name: 'test', listen: { host: HOST, port: 0 }, upstream: { host: HOST, port: upstreamPort } }, toxics.map(parseToxic));
  onCleanup(() => void listener.close());
  return { listener, port: listener.address.port, records };
}
