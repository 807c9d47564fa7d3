// The errors of the mux layer: one class, a stable `code` on each, messages that say what happened.
// A stream reset by the peer carries ECONNRESET and a stream the peer refused ECONNREFUSED, as a
// TCP socket would, so forward() and its callers treat them like the TCP events they stand for.

export type MuxErrorCode =
  | 'ECONNRESET'
  | 'ECONNREFUSED'
  | 'ERR_MUX_PROTOCOL'
  | 'ERR_MUX_PEER_ERROR'
  | 'ERR_MUX_KEEPALIVE_TIMEOUT'
  | 'ERR_MUX_SESSION_CLOSED'
  | 'ERR_MUX_GOING_AWAY'
  | 'ERR_MUX_TOO_MANY_STREAMS'
  | 'ERR_MUX_STREAMS_EXHAUSTED'
  | 'ERR_MUX_OPTIONS';

export class MuxError extends Error {
  override name = 'MuxError';
  constructor(
    readonly code: MuxErrorCode,
    message: string,
    /** For ERR_MUX_PROTOCOL: which rule the peer broke (ERR_MUX_BAD_VERSION, ERR_MUX_WINDOW_EXCEEDED, …). */
    readonly detail?: string,
  ) {
    super(message);
  }
}
