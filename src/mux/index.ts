export { createMuxSession, MuxSession, type MuxSessionEvents } from './session.js';
export { MuxStream } from './stream.js';
export { MuxError, type MuxErrorCode } from './errors.js';
export { MUX_DEFAULTS, type MuxSessionOptions } from './options.js';
export * as yamuxFrame from './frame.js';
export { SplicedMuxSession, type SplicedMuxSessionOptions, type SplicedStreamResult, type IncomingSplicedStream } from './spliced-session.js';
export { splicedMuxUnavailable } from './spliced-binding.js';
