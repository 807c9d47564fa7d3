import { formatHostPort, type HostPort } from '../net/host-port.js';
import type { RelayView } from './view.js';

// The control layer's errors carry the HTTP status Toxiproxy answers with, so the API is a thin
// translation and library callers can branch on `code` without matching messages.

export const RELAY_ERROR_STATUS = {
  ERR_RELAY_BAD_REQUEST: 400,
  ERR_RELAY_EXPOSURE: 403,
  ERR_RELAY_NOT_FOUND: 404,
  ERR_RELAY_CONFLICT: 409,
  ERR_RELAY_TOO_LARGE: 413,
  ERR_RELAY_LISTEN: 500,
  ERR_RELAY_CLOSED: 503,
} as const;

export type RelayErrorCode = keyof typeof RELAY_ERROR_STATUS;

export class RelayError extends Error {
  readonly status: number;
  constructor(
    readonly code: RelayErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'RelayError';
    this.status = RELAY_ERROR_STATUS[code];
  }
}

// Toxiproxy's own wording for these, kept so scripts that print or match them carry over.
export const proxyNotFound = () => new RelayError('ERR_RELAY_NOT_FOUND', 'proxy not found');
export const toxicNotFound = () => new RelayError('ERR_RELAY_NOT_FOUND', 'toxic not found');
export const proxyExists = () => new RelayError('ERR_RELAY_CONFLICT', 'proxy already exists');
export const toxicExists = () => new RelayError('ERR_RELAY_CONFLICT', 'toxic already exists');
export const badRequest = (detail: string) => new RelayError('ERR_RELAY_BAD_REQUEST', `bad request body: ${detail}`);

// The text of Go's syscall errors, for the errors listening can meet.
const GO_ERRNO_TEXT: Record<string, string> = {
  EADDRINUSE: 'address already in use',
  EADDRNOTAVAIL: 'cannot assign requested address',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EAFNOSUPPORT: 'address family not supported by protocol',
};

/**
 * A failure to listen, worded as Go's net.Listen words it ("listen tcp 127.0.0.1:3310: bind:
 * address already in use"): clients and scripts written against Toxiproxy match on that prefix.
 */
export function listenFailed(listen: HostPort, err: unknown): RelayError {
  const code = (err as { code?: unknown } | undefined)?.code;
  const text = typeof code === 'string' ? GO_ERRNO_TEXT[code] : undefined;
  const detail = text ? `bind: ${text}` : err instanceof Error ? err.message : String(err);
  return new RelayError('ERR_RELAY_LISTEN', `listen tcp ${formatHostPort(listen)}: ${detail}`);
}

/** POST /populate stopped at `cause`; `proxies` were applied before it and stay (empty when undone). */
export class PopulateError extends RelayError {
  constructor(
    readonly cause: RelayError,
    readonly proxies: readonly RelayView[],
  ) {
    super(cause.code, cause.message);
    this.name = 'PopulateError';
  }
}
