// What a connection's record or a refusal says, in the metrics' few label values. Pure.
import type { HandshakeFailure } from './registry.js';

/** The proxy's record outcomes that are a failed handshake, by the reason the metrics give them. */
const PROXY_HANDSHAKE_FAILURES: Record<string, HandshakeFailure> = {
  'auth-failed': 'auth',
  denied: 'denied',
  'bad-request': 'bad_request',
  // No valid PROXY header (--accept-proxy-protocol): the connection's first bytes were not what was owed.
  'bad-proxy-header': 'bad_request',
  'handshake-timeout': 'timeout',
};

/** The handshake failure a proxy record's outcome is, or undefined (it got through, or failed later). */
export function proxyHandshakeFailure(outcome: string): HandshakeFailure | undefined {
  return Object.hasOwn(PROXY_HANDSHAKE_FAILURES, outcome) ? PROXY_HANDSHAKE_FAILURES[outcome] : undefined;
}

/**
 * A tunnel server's refused connection (its `rejected` event), as a handshake failure; undefined
 * for what is no handshake failure (the server shutting down, a client that left before a word).
 *   auth: a wrong token or data MAC; timeout: no login or header in time; denied: a limit
 *   (sessions, connections logging in); bad_request: anything else that broke the protocol.
 */
export function tunnelRejectionReason(code: string): HandshakeFailure | undefined {
  switch (code) {
    case 'shutting-down':
    case 'ECLOSED':
    case 'ABORT_ERR':
      return undefined;
    case 'auth-failed':
    case 'bad-mac':
    case 'unknown-session':
      return 'auth';
    case 'busy':
    case 'too-many-sessions':
      return 'denied';
    case 'ETIMEDOUT':
    case 'timeout':
    case 'handshake-timeout':
      return 'timeout';
    default:
      return 'bad_request';
  }
}
