// A request body as strict JSON: bounded in size, UTF-8 that decodes without loss, one JSON value.
import type { IncomingMessage } from 'node:http';
import { badRequest, RelayError } from './control-errors.js';

/**
 * Past `limit` the body is read to its end and discarded, and only then refused: closing on a
 * client that is still sending would reset the connection, and a reset can destroy the 413 before
 * the client reads it. The server's request timeout bounds how long that can take.
 */
export function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  return new Promise<unknown>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
      else chunks.length = 0;
    });
    req.once('error', reject);
    req.once('end', () => {
      if (size > limit) {
        reject(new RelayError('ERR_RELAY_TOO_LARGE', `request body larger than ${limit} bytes`));
        return;
      }
      try {
        resolve(parseJson(Buffer.concat(chunks)));
      } catch (err) {
        reject(err);
      }
    });
  });
}

function parseJson(body: Buffer): unknown {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw badRequest('not valid UTF-8');
  }
  if (text.trim() === '') throw badRequest('empty, expected JSON');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw badRequest((err as Error).message);
  }
}
