// What the control layer accepts, in Toxiproxy's JSON shape, checked field by field. Every input
// is untrusted JSON (the HTTP API passes bodies through as they arrived), so each failure becomes a
// 400 or 403 RelayError whose message names the field.
import { AddressError, isLoopback, parseHostPort, type HostPort } from '../address.js';
import { badRequest, RelayError } from './control-errors.js';
import { parseToxic, ToxicError, type Toxic } from './toxics.js';

/** A relay as created or populated: addresses parsed, defaults filled. */
export interface RelaySpec {
  name: string;
  listen: HostPort;
  upstream: HostPort;
  enabled: boolean;
}

/** The fields POST /proxies/{name} may change; absent ones stay as they are. */
export interface RelayChange {
  listen?: HostPort;
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

function objectWith(input: unknown, allowed: readonly string[], at: string): Fields {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw badRequest(`expected a JSON object${at}`);
  for (const key of Object.keys(input)) {
    if (!allowed.includes(key)) throw badRequest(`unknown field "${key}"${at}; expected ${allowed.join(', ')}`);
  }
  return input as Fields;
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
export function parseRelaySpec(input: unknown, open: boolean, at = ''): RelaySpec {
  const fields = objectWith(input, RELAY_FIELDS, at);
  const name = required(stringField(fields, 'name', at), 'name', at);
  const upstreamText = required(stringField(fields, 'upstream', at), 'upstream', at);
  const listenText = stringField(fields, 'listen', at) ?? '';
  const enabled = booleanField(fields, 'enabled', at) ?? true;
  return { name, listen: parseListen(listenText, open, at), upstream: parseUpstream(upstreamText, at), enabled };
}

/** The body of POST /populate: an array of proxies, names unique within it. */
export function parsePopulate(input: unknown, open: boolean): RelaySpec[] {
  if (!Array.isArray(input)) throw badRequest('expected a JSON array of proxies');
  const seen = new Set<string>();
  return input.map((item, i) => {
    const spec = parseRelaySpec(item, open, ` at proxy ${i + 1}`);
    if (seen.has(spec.name)) throw badRequest(`duplicate proxy name "${spec.name}" at proxy ${i + 1}`);
    seen.add(spec.name);
    return spec;
  });
}

/** The body of POST/PATCH /proxies/{name}. A proxy cannot be renamed. */
export function parseRelayChange(input: unknown, name: string, open: boolean): RelayChange {
  const fields = objectWith(input, RELAY_FIELDS, '');
  const newName = stringField(fields, 'name', '');
  if (newName !== undefined && newName !== name) throw badRequest(`name: a proxy cannot be renamed (from "${name}" to "${newName}")`);
  const listen = stringField(fields, 'listen', '');
  const upstream = stringField(fields, 'upstream', '');
  return {
    listen: listen === undefined ? undefined : parseListen(listen, open),
    upstream: upstream === undefined ? undefined : parseUpstream(required(upstream, 'upstream', '')),
    enabled: booleanField(fields, 'enabled', ''),
  };
}

/** The body of POST /proxies/{name}/toxics. */
export function parseNewToxic(input: unknown): Toxic {
  try {
    return parseToxic(input);
  } catch (err) {
    if (err instanceof ToxicError) throw badRequest(err.message);
    throw err;
  }
}

/**
 * The body of POST/PATCH /proxies/{name}/toxics/{toxic}, applied to `current`: attributes merge
 * (an omitted one keeps its value, as Toxiproxy decodes into a copy of the toxic), toxicity and
 * perChunk replace. name, type and stream are accepted when unchanged, since clients send the
 * whole toxic back; changing them is refused rather than silently ignored as Toxiproxy does.
 */
export function applyToxicChange(current: Toxic, input: unknown): Toxic {
  const fields = objectWith(input, TOXIC_CHANGE_FIELDS, '');
  for (const key of ['name', 'type', 'stream'] as const) {
    if (fields[key] !== undefined && fields[key] !== current[key]) {
      throw badRequest(`${key}: cannot be changed by an update (remove the toxic and add a new one)`);
    }
  }
  const attributes = fields.attributes ?? {};
  if (typeof attributes !== 'object' || attributes === null || Array.isArray(attributes)) throw badRequest('attributes: expected an object');
  return parseNewToxic({
    ...current,
    attributes: { ...current.attributes, ...attributes },
    toxicity: fields.toxicity ?? current.toxicity,
    perChunk: fields.perChunk ?? current.perChunk,
  });
}
