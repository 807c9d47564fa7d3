// A request body as strict JSON: bounded in size, UTF-8 that decodes without loss, one JSON value.
import type { IncomingMessage } from 'node:http';
import { badRequest, RelayError } from './control-errors.js';

const tooLarge = (limit: number) => new RelayError('ERR_RELAY_TOO_LARGE', `request body larger than ${limit} bytes`);

export function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) return Promise.reject(tooLarge(limit));
  return new Promise<unknown>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        // Stop reading: the reply closes the connection, so the rest is never parsed as a request.
        req.off('data', onData);
        req.pause();
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('error', reject);
    req.once('end', () => {
      if (size > limit) return;
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
