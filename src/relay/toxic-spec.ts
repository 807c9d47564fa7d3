// The command line's short form of a toxic, so a fault needs no JSON quoting:
//
//   TYPE[@STREAM][:KEY=VALUE,...]      latency@downstream:latency=100,jitter=20
//                                     bitflip@upstream:rate=0.0001,toxicity=0.5,perChunk=true
//
// KEY is an attribute of the type, or one of the envelope fields name, toxicity and perChunk.
// A value that starts with `{` is taken as Toxiproxy's JSON instead.
import { parseStrictToxic, ToxicError, type Toxic } from './toxics.js';

const ENVELOPE = new Set(['name', 'toxicity', 'perChunk']);

export function parseToxicSpec(text: string): Toxic {
  const spec = text.trim();
  if (spec.startsWith('{')) {
    let json: unknown;
    try {
      json = JSON.parse(spec);
    } catch (err) {
      throw new ToxicError([`not valid JSON: ${(err as Error).message}`]);
    }
    return parseStrictToxic(json);
  }
  const match = /^([a-z_]+)(?:@([a-z]+))?(?::(.*))?$/.exec(spec);
  if (!match) throw new ToxicError([`"${text}": expected TYPE[@STREAM][:KEY=VALUE,...], e.g. latency@downstream:latency=100`]);
  const [, type, stream, rest] = match;
  const toxic: Record<string, unknown> = { type, ...(stream ? { stream } : {}) };
  const attributes: Record<string, unknown> = {};
  for (const pair of rest ? rest.split(',') : []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new ToxicError([`"${pair}": expected KEY=VALUE`]);
    const key = pair.slice(0, eq).trim();
    const raw = pair.slice(eq + 1).trim();
    const value = key === 'name' ? raw : raw === 'true' ? true : raw === 'false' ? false : raw !== '' && Number.isFinite(Number(raw)) ? Number(raw) : raw;
    if (ENVELOPE.has(key)) toxic[key] = value;
    else attributes[key] = value;
  }
  toxic.attributes = attributes;
  return parseStrictToxic(toxic);
}
