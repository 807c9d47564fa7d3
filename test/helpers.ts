// Test helpers: real sockets on 127.0.0.1 only, one file per subject under helpers/. Everything a
// helper opens is registered with `track()` and closed by `closeAll()`, which every test file
// calls in afterEach.
export * from './helpers/cleanup.js';
export * from './helpers/data.js';
export * from './helpers/sockets.js';
export * from './helpers/servers.js';
export * from './helpers/fds.js';
