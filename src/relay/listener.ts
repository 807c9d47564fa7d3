// The seam between the relay's control layer (named relays, Toxiproxy semantics, the HTTP API)
// and its data path (listening, connecting upstream, moving and faulting bytes, recording).
import type { HostPort } from '../net/host-port.js';
import type { Toxic } from './toxics.js';

/** What the data path needs to open one named relay. */
export interface RelayEndpoint {
  name: string;
  listen: HostPort;
  upstream: HostPort;
}

/**
 * One listening relay, as the data path runs it. The control layer owns its lifetime: it opens
 * one per enabled relay and closes it when the relay is disabled, moved or deleted.
 */
export interface RelayListener {
  /** The address actually bound (port 0 resolved). */
  readonly address: HostPort;
  /** Connections accepted from now on go here; open ones keep their upstream. */
  setUpstream(upstream: HostPort): void;
  /**
   * The full, ordered toxic list. Applies to open connections too, without dropping them: a toxic
   * that is new is appended to each connection's chain, a removed one lets what it holds go on at
   * once, a changed one (same name) is replaced in place.
   */
  setToxics(toxics: readonly Toxic[]): void;
  /** Stops accepting and ends every open connection (Toxiproxy's disable). */
  close(): Promise<void>;
}

/** Opens a listener; rejects (EADDRINUSE, EACCES...) when the address cannot be bound. */
export type OpenRelayListener = (endpoint: RelayEndpoint, toxics: readonly Toxic[]) => Promise<RelayListener>;
