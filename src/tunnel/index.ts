// The tunnel's public surface.
export { createTunnelServer, TunnelServer, type TunnelServerEvents, type ServerConnectionRecord, type ServerTunnelInfo, type SessionInfo, type RejectedInfo } from './server.js';
export { createTunnelClient, TunnelClient, type TunnelClientEvents, type ClientConnectionRecord, type ClientTunnelStatus, type ClientTunnelState } from './client.js';
export { TunnelOptionsError, parseExpose, parsePortRanges, type TunnelServerOptions, type TunnelClientOptions, type ExposeSpec, type PortRange } from './options.js';
export { certificateFingerprint, parseFingerprint, type ClientTlsOptions } from './server-dialer.js';
export { PROTOCOL_VERSION } from './protocol.js';
