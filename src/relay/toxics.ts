// Toxic definitions in Toxiproxy's JSON shape, so existing Toxiproxy clients and
// habits carry over: same type names, attribute names, units and zero defaults
// (Toxiproxy decodes attributes into Go structs, so a missing attribute is 0).
//
//   latency     latency ms, jitter ms         each chunk delayed latency ± jitter
//   bandwidth   rate KB/s (1 KB = 1000 B)     0 = unlimited, as Toxiproxy
//   slicer      average_size B, size_variation B, delay µs
//   limit_data  bytes                         pass exactly `bytes`, then close
//   timeout     timeout ms                    drop data, close after timeout; 0 = never
//   reset_peer  timeout ms                    T after the first data, reset (RST)
//   slow_close  delay ms                      hold the FIN back by delay
//   noop        (none)                        passes everything on unchanged
// Not in Toxiproxy:
//   bitflip     rate (0..1, required)         each byte, with probability `rate`, gets one
//                                             uniformly chosen bit flipped; expected flipped
//                                             bits = rate × bytes
//   stall       after B (default 0), duration ms (required)
//                                             once `after` bytes have passed, hold delivery for
//                                             `duration`, then resume with nothing lost: how a
//                                             lost segment looks above TCP (a retransmit wait).
//                                             With perChunk, every chunk past `after` whose roll
//                                             succeeds stalls, which models random loss.
//
// Envelope: { name?, type, stream = 'downstream', toxicity = 1, perChunk?, attributes }; null is absent.
// name defaults to `${type}_${stream}` as Toxiproxy. toxicity is rolled once per
// connection and direction, as Toxiproxy; `perChunk: true` rolls it for every chunk.
import { z } from 'zod';

export const DIRECTIONS = ['upstream', 'downstream'] as const;
export type Direction = (typeof DIRECTIONS)[number];

const whole = (unit: string) =>
  z.number({ error: `expected a number of ${unit}` }).int(`expected a whole number of ${unit}`).nonnegative(`${unit} cannot be negative`);
const ms = whole('milliseconds');
const bytes = whole('bytes');
const probability = z.number({ error: 'expected a probability' }).min(0, 'must be between 0 and 1').max(1, 'must be between 0 and 1');

/**
 * Toxiproxy decodes into Go structs, so it ignores fields it does not know, and a toxicity outside
 * 0..1 is only a roll that always (above 1) or never (below 0) succeeds. The lenient schema takes
 * what Toxiproxy takes, so its clients and config files work; the strict one (--strict-api, the
 * command line's own --toxic) refuses those, to catch a misspelt attribute rather than ignore it.
 */
function makeToxicSchema(strict: boolean) {
  const object = <S extends z.core.$ZodLooseShape>(shape: S, params?: { error: string }) => (strict ? z.strictObject(shape, params) : z.object(shape, params));
  const slicer = object({
    average_size: bytes.default(0),
    size_variation: bytes.default(0),
    delay: whole('microseconds').default(0),
  }).prefault({});
  const attributes = {
    latency: object({ latency: ms.default(0), jitter: ms.default(0) }).prefault({}),
    bandwidth: object({ rate: whole('KB/s').default(0) }).prefault({}),
    // The slicer stage cuts pieces of at least one byte whatever the sizes, so Toxiproxy's
    // documented "variation below average" is enforced only when strict.
    slicer: strict
      ? slicer
          .refine((a) => a.average_size >= 1, { message: 'must be at least 1 byte', path: ['average_size'] })
          .refine((a) => a.size_variation === 0 || a.size_variation < a.average_size, {
            message: 'must be less than average_size',
            path: ['size_variation'],
          })
      : slicer,
    limit_data: object({ bytes: bytes.default(0) }).prefault({}),
    timeout: object({ timeout: ms.default(0) }).prefault({}),
    reset_peer: object({ timeout: ms.default(0) }).prefault({}),
    slow_close: object({ delay: ms.default(0) }).prefault({}),
    noop: object({}).prefault({}),
    bitflip: object({ rate: probability }, { error: 'expected an object with rate' }),
    stall: object({ after: bytes.default(0), duration: ms }, { error: 'expected an object with duration' }),
  };
  const direction = z.enum(DIRECTIONS, { error: "expected 'upstream' or 'downstream'" });
  const envelope = {
    name: z.string().optional(),
    // Toxiproxy compares the stream case-insensitively (and echoes it as sent); here it is kept
    // lower case, so the default name is latency_upstream whatever the case sent.
    stream: (strict ? direction : z.preprocess((v) => (typeof v === 'string' ? v.toLowerCase() : v), direction)).default('downstream'),
    toxicity: (strict ? probability : z.number({ error: 'expected a number' })).default(1),
    perChunk: z.boolean().optional(),
  };
  const variant = <T extends string, A extends z.ZodType>(type: T, attrs: A) => object({ ...envelope, type: z.literal(type), attributes: attrs });
  return z
    .discriminatedUnion(
      'type',
      [
        variant('latency', attributes.latency),
        variant('bandwidth', attributes.bandwidth),
        variant('slicer', attributes.slicer),
        variant('limit_data', attributes.limit_data),
        variant('timeout', attributes.timeout),
        variant('reset_peer', attributes.reset_peer),
        variant('slow_close', attributes.slow_close),
        variant('noop', attributes.noop),
        variant('bitflip', attributes.bitflip),
        variant('stall', attributes.stall),
      ],
      { error: 'unknown toxic type' },
    )
    .superRefine((t, ctx) => {
      if (t.perChunk && WHOLE_STREAM_ONLY.has(t.type)) {
        ctx.addIssue({ code: 'custom', path: ['perChunk'], message: `${t.type} acts on the whole stream; it cannot be rolled per chunk` });
      }
    })
    .transform((t) => ({ ...t, name: t.name || `${t.type}_${t.stream}` }));
}

// These two act on the stream as a whole (a byte budget, the end), so a per-chunk
// roll has no meaning; rejecting it beats silently ignoring it.
const WHOLE_STREAM_ONLY = new Set(['limit_data', 'slow_close']);

export const ToxicSchema = makeToxicSchema(false);
export const StrictToxicSchema = makeToxicSchema(true);

// The input type is the strict one: what a library caller should write.
export type ToxicInput = z.input<typeof StrictToxicSchema>;
export type Toxic = z.output<typeof ToxicSchema>;
export type ToxicType = Toxic['type'];
export type ToxicOf<T extends ToxicType> = Extract<Toxic, { type: T }>;

/** A copy with the keys in Toxiproxy's order (attributes first), for clients that compare JSON text. */
export function toxicJson(toxic: Toxic): Toxic {
  const { attributes, name, type, stream, toxicity, perChunk } = toxic;
  return { attributes: structuredClone(attributes), name, type, stream, toxicity, ...(perChunk === undefined ? {} : { perChunk }) } as Toxic;
}

export class ToxicError extends Error {
  constructor(readonly issues: readonly string[]) {
    super(issues.join('; '));
    this.name = 'ToxicError';
  }
}

/** JSON `null` is "absent", as Go's decoder (and so Toxiproxy) reads it: clients send it for unset fields. */
function withoutNulls(input: unknown): unknown {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return input;
  const fields = Object.fromEntries(Object.entries(input).filter(([, value]) => value !== null));
  if (typeof fields.attributes === 'object' && fields.attributes !== null && !Array.isArray(fields.attributes)) {
    fields.attributes = Object.fromEntries(Object.entries(fields.attributes).filter(([, value]) => value !== null));
  }
  return fields;
}

/** Parse one toxic as Toxiproxy would take it; errors name the field, e.g. "attributes.latency: milliseconds cannot be negative". */
export function parseToxic(input: unknown): Toxic {
  return parseWith(ToxicSchema, input);
}

/** Parse one toxic, refusing what Toxiproxy lets through: unknown fields and attributes, toxicity outside 0..1, any case of stream. */
export function parseStrictToxic(input: unknown): Toxic {
  return parseWith(StrictToxicSchema, input);
}

function parseWith(schema: typeof ToxicSchema | typeof StrictToxicSchema, input: unknown): Toxic {
  const result = schema.safeParse(withoutNulls(input));
  if (result.success) return result.data;
  throw new ToxicError(
    result.error.issues.map((issue) => {
      const where = issue.path.join('.') || 'toxic';
      return `${where}: ${issue.message}`;
    }),
  );
}
