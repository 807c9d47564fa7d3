// What the control layer accepts, in Toxiproxy's JSON shape, checked field by field. Every input
// is untrusted JSON (the HTTP API passes bodies through as they arrived), so each failure becomes a
// 400 or 403 RelayError whose message names the field.
//
// By default it takes what Toxiproxy takes, because Toxiproxy's clients rely on it: Go's decoder
// reads JSON null as "absent" and skips fields it does not know, and an update ignores a changed
// name, type or stream. `strict` (--strict-api) refuses unknown fields, renames and type changes.
import { AddressError, isLoopback, parseHostPort, type HostPort } from '../net/host-port.js';
import { badRequest, RelayError } from './control-errors.js';
import { parseStrictToxic, parseToxic, ToxicError, type Toxic } from './toxics.js';

/** A relay as created or populated: addresses parsed, defaults filled. */
export interface RelaySpec {
  name: string;
  listen: HostPort;
  /** `listen` as given: reported until the relay has listened, as Toxiproxy does. */
  listenText: string;
  upstream: HostPort;
  enabled: boolean;
}

/** The fields POST /proxies/{name} may change; absent ones stay as they are. */
export interface RelayChange {
  listen?: HostPort;
  listenText?: string;
  upstream?: HostPort;
  enabled?: boolean;
}

/** Toxiproxy's JSON for a proxy, as a library caller writes it. */
export interface RelayInput {
  name: string;
  listen?: string;
  upstream: string;
  enabled?: boolean;
}

export type RelayChangeInput = Partial<RelayInput>;

/** Toxiproxy's JSON for a toxic update: attributes merge into the current ones. */
export interface ToxicChangeInput {
  attributes?: Record<string, unknown>;
  toxicity?: number;
  perChunk?: boolean;
  name?: string;
  type?: string;
  stream?: string;
}

const LOOPBACK_DEFAULT = '127.0.0.1';

// `toxics` is accepted so Toxiproxy's own GET output can be fed back (populate files are often
// made that way); like Toxiproxy, the registry ignores it.
const RELAY_FIELDS = ['name', 'listen', 'upstream', 'enabled', 'toxics'];
const TOXIC_CHANGE_FIELDS = ['name', 'type', 'stream', 'toxicity', 'attributes', 'perChunk'];

type Fields = Record<string, unknown>;

/** The known, non-null fields of a JSON object; a null body is an empty one, as Go decodes it. */
function objectWith(input: unknown, allowed: readonly string[], at: string, strict: boolean): Fields {
  if (input === null) return {};
  if (typeof input !== 'object' || Array.isArray(input)) throw badRequest(`expected a JSON object${at}`);
  const fields: Fields = {};
  for (const [key, value] of Object.entries(input)) {
    if (!allowed.includes(key)) {
      if (strict) throw badRequest(`unknown field "${key}"${at}; expected ${allowed.join(', ')}`);
      continue;
    }
    if (value !== null) fields[key] = value;
  }
  return fields;
}

function stringField(fields: Fields, key: string, at: string): string | undefined {
  const value = fields[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw badRequest(`${key}${at}: expected a string`);
  return value;
}

function booleanField(fields: Fields, key: string, at: string): boolean | undefined {
  const value = fields[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'boolean') throw badRequest(`${key}${at}: expected true or false`);
  return value;
}

function required(value: string | undefined, key: string, at: string): string {
  // Toxiproxy treats "" as missing too.
  if (!value) throw new RelayError('ERR_RELAY_BAD_REQUEST', `missing required field: ${key}${at}`);
  return value;
}

function address(text: string, key: string, at: string, allowZero: boolean): HostPort {
  try {
    return parseHostPort(text, { defaultHost: LOOPBACK_DEFAULT, allowZero });
  } catch (err) {
    if (err instanceof AddressError) throw badRequest(`${key}${at}: ${err.message}`);
    throw err;
  }
}

/**
 * A listen address: `host:port`, `[v6]:port`, `:port` or empty (loopback, any free port).
 * `localhost` binds 127.0.0.1, as Toxiproxy (Go listens on the first IPv4 address of a name).
 * Beyond loopback only when `open`: a relay reachable from the network is never an accident.
 */
export function parseListen(text: string, open: boolean, at = ''): HostPort {
  const parsed = text.trim() === '' ? { host: LOOPBACK_DEFAULT, port: 0 } : address(text, 'listen', at, true);
  const listen = parsed.host === 'localhost' ? { host: LOOPBACK_DEFAULT, port: parsed.port } : parsed;
  if (!open && !isLoopback(listen.host)) {
    throw new RelayError(
      'ERR_RELAY_EXPOSURE',
      `listen "${text}"${at} is not a loopback address; the relay listens beyond this machine only when started with --open (open: true)`,
    );
  }
  return listen;
}

export function parseUpstream(text: string, at = ''): HostPort {
  return address(text, 'upstream', at, false);
}

/** One proxy of POST /proxies or /populate; `at` names its place in a populate list. */
export function parseRelaySpec(input: unknown, open: boolean, strict = false, at = ''): RelaySpec {
  const fields = objectWith(input, RELAY_FIELDS, at, strict);
  const name = required(stringField(fields, 'name', at), 'name', at);
  const upstreamText = required(stringField(fields, 'upstream', at), 'upstream', at);
  const listenText = stringField(fields, 'listen', at) ?? '';
  const enabled = booleanField(fields, 'enabled', at) ?? true;
  return { name, listen: parseListen(listenText, open, at), listenText, upstream: parseUpstream(upstreamText, at), enabled };
}

/**
 * The body of POST /populate: an array of proxies (null is an empty one). Toxiproxy applies a name
 * given twice twice, the later entry winning; strict refuses it.
 */
export function parsePopulate(input: unknown, open: boolean, strict = false): RelaySpec[] {
  if (input === null) return [];
  if (!Array.isArray(input)) throw badRequest('expected a JSON array of proxies');
  const seen = new Set<string>();
  return input.map((item, i) => {
    const spec = parseRelaySpec(item, open, strict, ` at proxy ${i + 1}`);
    if (strict && seen.has(spec.name)) throw badRequest(`duplicate proxy name "${spec.name}" at proxy ${i + 1}`);
    seen.add(spec.name);
    return spec;
  });
}

/** The body of POST/PATCH /proxies/{name}. A proxy cannot be renamed: Toxiproxy ignores a new name, strict refuses it. */
export function parseRelayChange(input: unknown, name: string, open: boolean, strict = false): RelayChange {
  const fields = objectWith(input, RELAY_FIELDS, '', strict);
  const newName = stringField(fields, 'name', '');
  if (strict && newName !== undefined && newName !== name) throw badRequest(`name: a proxy cannot be renamed (from "${name}" to "${newName}")`);
  const listen = stringField(fields, 'listen', '');
  const upstream = stringField(fields, 'upstream', '');
  return {
    listen: listen === undefined ? undefined : parseListen(listen, open),
    listenText: listen,
    upstream: upstream === undefined ? undefined : parseUpstream(required(upstream, 'upstream', '')),
    enabled: booleanField(fields, 'enabled', ''),
  };
}

/** The body of POST /proxies/{name}/toxics. */
export function parseNewToxic(input: unknown, strict = false): Toxic {
  try {
    return strict ? parseStrictToxic(input) : parseToxic(input);
  } catch (err) {
    if (err instanceof ToxicError) throw badRequest(err.message);
    throw err;
  }
}

/**
 * The body of POST/PATCH /proxies/{name}/toxics/{toxic}, applied to `current`: attributes merge
 * (an omitted one keeps its value, as Toxiproxy decodes into a copy of the toxic), toxicity and
 * perChunk replace; a null one keeps its value, as Go's decoder leaves the field alone. Clients
 * send the whole toxic back, so name, type and stream may come along: a change to them is ignored
 * as Toxiproxy does, or refused when strict.
 */
export function applyToxicChange(current: Toxic, input: unknown, strict = false): Toxic {
  const fields = objectWith(input, TOXIC_CHANGE_FIELDS, '', strict);
  if (strict) {
    for (const key of ['name', 'type', 'stream'] as const) {
      if (fields[key] !== undefined && fields[key] !== current[key]) {
        throw badRequest(`${key}: cannot be changed by an update (remove the toxic and add a new one)`);
      }
    }
  }
  const attributes = fields.attributes ?? {};
  if (typeof attributes !== 'object' || attributes === null || Array.isArray(attributes)) throw badRequest('attributes: expected an object');
  const given = Object.fromEntries(Object.entries(attributes).filter(([, value]) => value !== null));
  return parseNewToxic(
    {
      ...current,
      attributes: { ...current.attributes, ...given },
      toxicity: fields.toxicity ?? current.toxicity,
      perChunk: fields.perChunk ?? current.perChunk,
    },
    strict,
  );
}
