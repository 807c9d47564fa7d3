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
// Envelope: { name?, type, stream = 'downstream', toxicity = 1, perChunk?, attributes }.
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

// prefault (not default) so an omitted `attributes` still gets each inner default;
// strict so a misspelt attribute is an error rather than a silent 0.
export const LatencyAttributes = z.strictObject({ latency: ms.default(0), jitter: ms.default(0) }).prefault({});
export const BandwidthAttributes = z.strictObject({ rate: whole('KB/s').default(0) }).prefault({});
export const SlicerAttributes = z
  .strictObject({
    average_size: bytes.default(0),
    size_variation: bytes.default(0),
    delay: whole('microseconds').default(0),
  })
  .prefault({})
  // Toxiproxy loops forever on average_size 0 and documents variation < average.
  .refine((a) => a.average_size >= 1, { message: 'must be at least 1 byte', path: ['average_size'] })
  .refine((a) => a.size_variation === 0 || a.size_variation < a.average_size, {
    message: 'must be less than average_size',
    path: ['size_variation'],
  });
export const LimitDataAttributes = z.strictObject({ bytes: bytes.default(0) }).prefault({});
export const TimeoutAttributes = z.strictObject({ timeout: ms.default(0) }).prefault({});
export const ResetPeerAttributes = z.strictObject({ timeout: ms.default(0) }).prefault({});
export const SlowCloseAttributes = z.strictObject({ delay: ms.default(0) }).prefault({});
export const BitflipAttributes = z.strictObject({ rate: probability }, { error: 'expected an object with rate' });
export const StallAttributes = z.strictObject({ after: bytes.default(0), duration: ms }, { error: 'expected an object with duration' });

const envelope = {
  name: z.string().optional(),
  stream: z.enum(DIRECTIONS, { error: "expected 'upstream' or 'downstream'" }).default('downstream'),
  toxicity: probability.default(1),
  perChunk: z.boolean().optional(),
};

const variant = <T extends string, A extends z.ZodType>(type: T, attributes: A) =>
  z.object({ ...envelope, type: z.literal(type), attributes });

// These two act on the stream as a whole (a byte budget, the end), so a per-chunk
// roll has no meaning; rejecting it beats silently ignoring it.
const WHOLE_STREAM_ONLY = new Set(['limit_data', 'slow_close']);

export const ToxicSchema = z
  .discriminatedUnion(
    'type',
    [
      variant('latency', LatencyAttributes),
      variant('bandwidth', BandwidthAttributes),
      variant('slicer', SlicerAttributes),
      variant('limit_data', LimitDataAttributes),
      variant('timeout', TimeoutAttributes),
      variant('reset_peer', ResetPeerAttributes),
      variant('slow_close', SlowCloseAttributes),
      variant('bitflip', BitflipAttributes),
      variant('stall', StallAttributes),
    ],
    { error: 'unknown toxic type' },
  )
  .superRefine((t, ctx) => {
    if (t.perChunk && WHOLE_STREAM_ONLY.has(t.type)) {
      ctx.addIssue({ code: 'custom', path: ['perChunk'], message: `${t.type} acts on the whole stream; it cannot be rolled per chunk` });
    }
  })
  .transform((t) => ({ ...t, name: t.name || `${t.type}_${t.stream}` }));

export type ToxicInput = z.input<typeof ToxicSchema>;
export type Toxic = z.output<typeof ToxicSchema>;
export type ToxicType = Toxic['type'];
export type ToxicOf<T extends ToxicType> = Extract<Toxic, { type: T }>;

export class ToxicError extends Error {
  constructor(readonly issues: readonly string[]) {
    super(issues.join('; '));
    this.name = 'ToxicError';
  }
}

/** Parse one toxic; errors name the field, e.g. "attributes.latency: milliseconds cannot be negative". */
export function parseToxic(input: unknown): Toxic {
  const result = ToxicSchema.safeParse(input);
  if (result.success) return result.data;
  throw new ToxicError(
    result.error.issues.map((issue) => {
      const where = issue.path.join('.') || 'toxic';
      return `${where}: ${issue.message}`;
    }),
  );
}
