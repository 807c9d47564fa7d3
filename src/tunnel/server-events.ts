// What the tunnel server tells its owner: its events, and the records and infos they carry.
import type { EndReason, EngineName } from '../engine/contract.js';

/** A published tunnel. */
export interface ServerTunnelInfo {
  name: string;
  clientId: string;
  sessionId: string;
  host: string;
  port: number;
}

export interface SessionInfo {
  clientId: string;
  sessionId: string;
  /** The client's address as the server sees it. */
  remote: string;
  pool: number;
  /** The client takes its streams on a mux connection. */
  mux?: true;
}

/** What a public connection did, reported once when it ends. */
export interface ServerConnectionRecord {
  tunnel: string;
  /** The published address the public client connected to. */
  public: string;
  /** The public client's address. */
  client: string;
  clientId: string;
  streamId: number | null;
  engine: EngineName | null;
  /** Public client → service. */
  bytesUp: number;
  /** Service → public client. */
  bytesDown: number;
  /** Time from accept to the data connection being there. */
  waitMs: number;
  durationMs: number;
  /** forward()'s reason once the stream ran; else why it never did (the public client was reset). */
  reason: EndReason | 'no-data-connection' | 'session-closed' | 'limit' | 'shutdown';
  code?: string;
}

export interface RejectedInfo {
  remote: string;
  kind: 'control' | 'data' | 'mux' | 'unknown';
  code: string;
  message: string;
  clientId?: string;
}

export interface TunnelServerEvents {
  sessionOpen: [SessionInfo];
  sessionClose: [SessionInfo & { code: string; message: string; durationMs: number }];
  tunnelUp: [ServerTunnelInfo];
  tunnelDown: [ServerTunnelInfo & { reason: string }];
  tunnelRefused: [{ name: string; clientId: string; port: number; code: string; message: string }];
  connectionOpen: [{ tunnel: string; public: string; client: string; clientId: string; streamId: number }];
  connectionClose: [ServerConnectionRecord];
  rejected: [RejectedInfo];
}
