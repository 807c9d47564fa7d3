// What the tunnel client tells its owner: its events, its tunnels' states, its stream records.
import type { HostPort } from '../net/host-port.js';
import type { EndReason, EngineName } from '../engine/contract.js';

export type ClientTunnelState = 'pending' | 'up' | 'refused';

export interface ClientTunnelStatus {
  name: string;
  /** The service, as this client reaches it. */
  local: string;
  /** The port asked for (0: the server chooses). */
  remotePort: number;
  state: ClientTunnelState;
  /** Where the server publishes it, while up. */
  remote?: HostPort;
  /** Why the server refused it, while refused. */
  error?: { code: string; message: string };
}

/** What a stream did on the client side, reported once when it ends. */
export interface ClientConnectionRecord {
  tunnel: string;
  local: string;
  /** The public client's address, as the server saw it. */
  client: string;
  streamId: number;
  engine: EngineName | null;
  /** Public client → service. */
  bytesUp: number;
  /** Service → public client. */
  bytesDown: number;
  durationMs: number;
  /** forward()'s reason once the stream ran; `connect-failed` when the service could not be reached; `unknown-tunnel`. */
  reason: EndReason | 'connect-failed' | 'unknown-tunnel';
  code?: string;
}

export interface TunnelClientEvents {
  connected: [{ sessionId: string; server: string; pool: number; mux?: boolean }];
  disconnected: [{ code: string; message: string; remote: boolean; durationMs: number }];
  /** A connect or login that did not reach a session (the next attempt follows after `delayMs`). */
  connectFailed: [{ code: string; message: string; attempt: number; delayMs: number }];
  tunnelUp: [{ name: string; local: string; remote: HostPort }];
  tunnelDown: [{ name: string; reason: string }];
  tunnelRefused: [{ name: string; code: string; message: string }];
  connectionOpen: [{ tunnel: string; client: string; streamId: number }];
  connectionClose: [ClientConnectionRecord];
}
