// The tunnel's auth exchange (docs/tunnel-protocol.md): HMAC-SHA256 keyed with the token, a label
// per purpose (so no value computed for one purpose is ever valid for another), fixed-length
// nonces, the variable-length field last.
import { createHmac, timingSafeEqual } from 'node:crypto';

const LABEL = {
  client: 'splicer-tunnel/1 client',
  server: 'splicer-tunnel/1 server',
  session: 'splicer-tunnel/1 session',
  data: 'splicer-tunnel/1 data',
} as const;

function keyed(key: string | Buffer, label: string, ...parts: Buffer[]): Buffer {
  const hmac = createHmac('sha256', key).update(label).update(Buffer.from([0]));
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

export function dataMac(key: Buffer, sessionId: Buffer, requestId: number): Buffer {
  const id = Buffer.alloc(8);
  id.writeBigUInt64BE(BigInt(requestId), 0);
  return keyed(key, LABEL.data, sessionId, id);
}

/** Constant-time equality; a length mismatch costs the same comparison as a content mismatch. */
export function safeEqual(a: Buffer, b: Buffer): boolean {
  if (a.length !== b.length) {
    timingSafeEqual(a, a);
    return false;
  }
  return timingSafeEqual(a, b);
}
