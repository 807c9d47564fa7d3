// Where `forward` carries plain mux:// with the addon: whether it can (--mux-data-path), and a
// spliced stream's end told as the JS engine's pairs tell theirs, for the connection records.
import type { EndReason } from '../engine/contract.js';
import type { TransportScheme } from '../net/transport-url.js';
import { splicedMuxUnavailable } from '../mux/spliced-binding.js';
import type { SplicedStreamResult } from '../mux/spliced-session.js';

export type MuxDataPath = 'auto' | 'splice' | 'js';

/**
 * Why the spliced data path cannot carry this hop, or undefined when it can: plain mux:// on one
 * end and plain TCP on the other, the splice engine allowed and loaded.
 */
export function whyNotSpliced(listen: TransportScheme, to: TransportScheme, engine: 'auto' | 'splice' | 'js', idleTimeout = 0): string | undefined {
  const mux = listen === 'mux' ? 'listen' : to === 'mux' ? 'to' : undefined;
  if (!mux) {
    if (listen === 'mux+tls' || to === 'mux+tls') return 'mux+tls:// streams are TLS bytes in user space (only plain mux:// is spliced)';
    return 'neither end is mux://';
  }
  const other = mux === 'listen' ? to : listen;
  if (other !== 'tcp') return `the other end is ${other}:// (a TLS end is bytes in user space; only plain TCP is spliced)`;
  if (engine === 'js') return '--engine js asks for the JS engine';
  if (idleTimeout > 0) return 'a spliced stream has no idle timer (--idle-timeout)';
  return splicedMuxUnavailable();
}

/** The data path a hop runs on: `auto` is splice where it can be, else js. Throws (naming why) for `splice` where it cannot. */
export function resolveMuxDataPath(choice: MuxDataPath, listen: TransportScheme, to: TransportScheme, engine: 'auto' | 'splice' | 'js', idleTimeout = 0): 'splice' | 'js' {
  if (choice === 'js') return 'js';
  const why = whyNotSpliced(listen, to, engine, idleTimeout);
  if (!why) return 'splice';
  if (choice === 'splice') throw new Error(`--mux-data-path splice cannot be used here: ${why}`);
  return 'js';
}

export interface SplicedPairResult {
  engine: 'splice';
  bytesAtoB: number;
  bytesBtoA: number;
  reason: EndReason;
  code?: string;
}

/**
 * A stream's end as a pair's: `clientIsStreamSocket` when the forwarder's client is the spliced
 * socket (n:1: client → session is "up"); 1:n the client is the peer's stream, the socket its upstream.
 */
export function splicedPairResult(result: SplicedStreamResult, clientIsStreamSocket: boolean): SplicedPairResult {
  const toUpstream = clientIsStreamSocket ? result.bytesUp : result.bytesDown;
  const toClient = clientIsStreamSocket ? result.bytesDown : result.bytesUp;
  const out: SplicedPairResult = { engine: 'splice', bytesAtoB: toUpstream, bytesBtoA: toClient, reason: 'eof' };
  switch (result.reason) {
    case 'finished':
      break;
    case 'reset':
    case 'refused':
      out.reason = 'reset';
      out.code = result.reason === 'refused' ? 'ECONNREFUSED' : 'ECONNRESET';
      break;
    case 'error':
      out.reason = 'error';
      out.code = result.code;
      break;
    case 'session':
      out.reason = 'error';
      out.code = 'ERR_MUX_SESSION_CLOSED';
      break;
    case 'aborted':
      out.reason = 'aborted';
      break;
  }
  return out;
}
