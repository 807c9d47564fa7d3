// The tunnel's auth exchange (docs/tunnel-protocol.md): HMAC-SHA256 keyed with the token, a label
// per purpose (so no value computed for one purpose is ever valid for another), fixed-length
// nonces, the variable-length field last.
import { createHmac, timingSafeEqual } from 'node:crypto';

/** Each label with the 0 byte that ends it, as bytes once. */
const LABEL = {
  client: Buffer.from('splicer-tunnel/1 client\0', 'latin1'),
  server: Buffer.from('splicer-tunnel/1 server\0', 'latin1'),
  session: Buffer.from('splicer-tunnel/1 session\0', 'latin1'),
  data: Buffer.from('splicer-tunnel/1 data\0', 'latin1'),
  mux: Buffer.from('splicer-tunnel/1 mux\0', 'latin1'),
} as const;

function keyed(key: string | Buffer, label: Buffer, ...parts: Buffer[]): Buffer {
  const hmac = createHmac('sha256', key).update(label);
  for (const part of parts) hmac.update(part);
  return hmac.digest();
}

const withLength = (value: string): Buffer => {
  const bytes = Buffer.from(value, 'utf8');
  const length = Buffer.alloc(2);
  length.writeUInt16BE(bytes.length, 0);
  return Buffer.concat([length, bytes]);
};

/** The client's proof that it knows the token, bound to both nonces and its client id. */
export function clientProof(token: string | Buffer, clientNonce: Buffer, serverNonce: Buffer, clientId: string): Buffer {
  return keyed(token, LABEL.client, clientNonce, serverNonce, withLength(clientId));
}

/** The server's proof, sent only after the client's has been checked, bound to the session id it hands out. */
export function serverProof(token: string | Buffer, clientNonce: Buffer, serverNonce: Buffer, sessionId: Buffer): Buffer {
  return keyed(token, LABEL.server, clientNonce, serverNonce, sessionId);
}

/** The key data connections of one session authenticate with; never sent. */
export function sessionKey(token: string | Buffer, clientNonce: Buffer, serverNonce: Buffer, sessionId: Buffer): Buffer {
  return keyed(token, LABEL.session, clientNonce, serverNonce, sessionId);
}

/** One per data (or mux) connection on both sides, the label naming which: one HMAC over label, session id and u64 request id, nothing else made. */
export function dataMac(key: Buffer, sessionId: Buffer, requestId: number, kind: 'data' | 'mux' = 'data'): Buffer {
  const id = Buffer.allocUnsafe(8);
  // A request id is a safe integer (< 2^53): two u32 halves are its u64, without a BigInt.
  id.writeUInt32BE(Math.floor(requestId / 0x1_0000_0000), 0);
  id.writeUInt32BE(requestId >>> 0, 4);
  return createHmac('sha256', key).update(LABEL[kind]).update(sessionId).update(id).digest();
}

/** Constant-time equality; a length mismatch costs the same comparison as a content mismatch. */
export function safeEqual(a: Buffer, b: Buffer): boolean {
  if (a.length !== b.length) {
    timingSafeEqual(a, a);
    return false;
  }
  return timingSafeEqual(a, b);
}
