// The tunnel's wire protocol, version 1 (docs/tunnel-protocol.md): pure encoders and incremental
// parsers over Buffers, the control messages' schemas, and the keyed digests of the auth exchange.
// Nothing here touches a socket.
export * from './protocol-headers.js';
export * from './protocol-messages.js';
export * from './protocol-auth.js';
