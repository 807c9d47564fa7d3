// The tunnel's control connection (docs/tunnel-protocol.md): length-prefixed frames, each one JSON
// control message checked against its schema (zod).
import { z } from 'zod';
import { INCOMPLETE, type Incomplete, type ProtocolError, protocolError } from '../protocol/reader.js';
import { MAC_LENGTH, NONCE_LENGTH, SESSION_ID_LENGTH, TUNNEL_NAME } from './protocol-headers.js';

// Control connection frames: after the preamble, both ways until the connection closes.
//
//   +------------+--------------------------+
//   |   LENGTH   |  BODY: one JSON object   |
//   |  4 (u32)   |  LENGTH bytes, UTF-8     |
//   +------------+--------------------------+
//   1 <= LENGTH <= MAX_FRAME; a larger length is refused before its body is read.

export const MAX_FRAME = 64 * 1024;

export type FrameCode = 'frame-too-large' | 'empty-frame';

export function parseFrame(buf: Buffer): Incomplete | { status: 'ok'; body: Buffer; consumed: number } | ProtocolError<FrameCode> {
  if (buf.length < 4) return INCOMPLETE;
  const length = buf.readUInt32BE(0);
  if (length === 0) return protocolError('empty-frame', 0, 'empty frame');
  if (length > MAX_FRAME) return protocolError('frame-too-large', 0, `frame of ${length} bytes is over the limit of ${MAX_FRAME}`);
  if (buf.length < 4 + length) return INCOMPLETE;
  return { status: 'ok', body: buf.subarray(4, 4 + length), consumed: 4 + length };
}

export function encodeFrame(message: ControlMessage): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  if (body.length > MAX_FRAME) throw new RangeError(`control message of ${body.length} bytes is over the frame limit`);
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, 4);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Control messages. Unknown fields are ignored (a later minor revision may add some); an unknown
// type, a missing or malformed field is a `bad-message` error.

const base64Of = (bytes: number) =>
  z
    .string()
    .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'expected base64')
    .refine((s) => Buffer.from(s, 'base64').length === bytes, `expected ${bytes} bytes in base64`);
const code = z.string().min(1).max(64);
const text = z.string().max(1024);
const port = z.number().int().min(0).max(65535);
const requestId = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const ms = z.number().int().min(1).max(3_600_000);
export const MAX_TUNNELS_PER_MESSAGE = 64;
export const MAX_POOL = 1024;
/** Data connections one `connect` may ask a client for (its `count`), when the client said `batch` in hello. */
export const MAX_CONNECT_BATCH = 64;
const tunnelName = z.string().regex(TUNNEL_NAME, 'a tunnel name is 1-64 of [A-Za-z0-9_.-], starting with a letter or digit');

export const HelloMessage = z.object({
  type: z.literal('hello'),
  nonce: base64Of(NONCE_LENGTH),
  clientId: z.string().min(1).max(128),
  pool: z.number().int().min(0).max(MAX_POOL).default(0),
  software: z.string().max(64).optional(),
  /** The client reads `count` in connect: one request for several data connections. */
  batch: z.boolean().optional(),
  /** The client takes its streams on one mux connection (yamux) instead of a data connection each. */
  mux: z.boolean().optional(),
});
export const ChallengeMessage = z.object({ type: z.literal('challenge'), nonce: base64Of(NONCE_LENGTH) });
export const AuthMessage = z.object({ type: z.literal('auth'), proof: base64Of(MAC_LENGTH) });
export const WelcomeMessage = z.object({
  type: z.literal('welcome'),
  sessionId: base64Of(SESSION_ID_LENGTH),
  proof: base64Of(MAC_LENGTH),
  heartbeatInterval: ms,
  heartbeatTimeout: ms,
  pool: z.number().int().min(0).max(MAX_POOL),
  /** The server will ask for a mux connection (the client said `mux` in hello, and this server speaks it). */
  mux: z.boolean().optional(),
});
export const RegisterMessage = z.object({
  type: z.literal('register'),
  tunnels: z.array(z.object({ name: tunnelName, port })).min(1).max(MAX_TUNNELS_PER_MESSAGE),
});
export const RegisteredMessage = z.object({
  type: z.literal('registered'),
  tunnels: z
    .array(
      z.union([
        z.object({ name: tunnelName, ok: z.literal(true), host: z.string().max(255), port }),
        z.object({ name: tunnelName, ok: z.literal(false), code, message: text }),
      ]),
    )
    .max(MAX_TUNNELS_PER_MESSAGE),
});
export const ConnectMessage = z
  .object({
    type: z.literal('connect'),
    id: requestId,
    count: z.number().int().min(1).max(MAX_CONNECT_BATCH).optional(),
    /** Open the session's mux connection with this request id (count is then absent). */
    mux: z.boolean().optional(),
  })
    // The last id, id + count − 1, is a safe integer too (compared without summing past 2^53).
  .refine((m) => m.id <= Number.MAX_SAFE_INTEGER - ((m.count ?? 1) - 1), { message: 'request ids past 2^53 - 1', path: ['count'] });
export const ConnectFailedMessage = z.object({ type: z.literal('connect-failed'), id: requestId, code });
export const PingMessage = z.object({ type: z.literal('ping') });
export const PongMessage = z.object({ type: z.literal('pong') });
export const ErrorMessage = z.object({ type: z.literal('error'), code, message: text });

export const ControlMessageSchema = z.discriminatedUnion('type', [
  HelloMessage,
  ChallengeMessage,
  AuthMessage,
  WelcomeMessage,
  RegisterMessage,
  RegisteredMessage,
  ConnectMessage,
  ConnectFailedMessage,
  PingMessage,
  PongMessage,
  ErrorMessage,
]);
export type ControlMessage = z.input<typeof ControlMessageSchema>;
export type ParsedControlMessage = z.output<typeof ControlMessageSchema>;
export type MessageOf<T extends ParsedControlMessage['type']> = Extract<ParsedControlMessage, { type: T }>;

/** One frame's body as a control message, or a `bad-message` error naming what is wrong (never echoing it). */
export function decodeMessage(body: Buffer): { status: 'ok'; message: ParsedControlMessage } | ProtocolError<'bad-message'> {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    return protocolError('bad-message', 0, 'frame body is not JSON');
  }
  // The messages of every public connection and heartbeat skip the schema: same result, a fraction of the cost.
  if (typeof value === 'object' && value !== null) {
    const { type, id, count, mux } = value as { type?: unknown; id?: unknown; count?: unknown; mux?: unknown };
    if (type === 'ping' || type === 'pong') return { status: 'ok', message: { type } };
    if (type === 'connect' && mux === undefined && typeof id === 'number' && Number.isSafeInteger(id) && id >= 1) {
      if (count === undefined) return { status: 'ok', message: { type, id } };
      if (typeof count === 'number' && Number.isInteger(count) && count >= 1 && count <= MAX_CONNECT_BATCH && id <= Number.MAX_SAFE_INTEGER - (count - 1)) {
        return { status: 'ok', message: { type, id, count } };
      }
    }
  }
  const result = ControlMessageSchema.safeParse(value);
  if (result.success) return { status: 'ok', message: result.data };
  const issue = result.error.issues[0];
  const where = issue.path.length > 0 ? issue.path.join('.') : 'message';
  return protocolError('bad-message', 0, `${where}: ${issue.message}`);
}
