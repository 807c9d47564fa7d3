// `npm run test:unit`: the tests that open no socket and spawn no process (parsers, schemas, the
// toxic stages on in-memory streams, pure functions), for running on every save. `npm test` runs
// these too, once, with everything else: this config only picks a subset of the same files.
// test/unit-guard.ts makes a socket or a child process in any of them fail the file, so a test
// that needs one cannot slip into this list.
import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

const UNIT_TESTS = [
  'test/abort.test.ts',
  'test/address.test.ts',
  'test/config-file.test.ts',
  'test/connect.test.ts',
  'test/drain.test.ts',
  'test/ip.test.ts',
  'test/metrics-unit.test.ts',
  'test/mux-frame.test.ts',
  'test/protocol-detect.test.ts',
  'test/protocol-http.test.ts',
  'test/protocol-proxy.test.ts',
  'test/protocol-socks4.test.ts',
  'test/protocol-socks5.test.ts',
  'test/proxy-auth.test.ts',
  'test/proxy-mux-args.test.ts',
  'test/proxy-rules.test.ts',
  'test/reload.test.ts',
  'test/relay-pcap.test.ts',
  'test/relay-pcap-state.test.ts',
  'test/relay-random.test.ts',
  'test/relay-stages.test.ts',
  'test/relay-toxic-schema.test.ts',
  'test/relay-toxic-spec.test.ts',
  'test/relay-toxics.test.ts',
  'test/tunnel-mux-protocol.test.ts',
  'test/transport-url.test.ts',
  'test/tunnel-protocol.test.ts',
];

export default defineConfig({
  test: {
    ...base.test,
    include: UNIT_TESTS,
    // Threads start faster than the full suite's forks; with no socket and no native engine in
    // these files there are no per-process fd counts or threads to keep apart.
    pool: 'threads',
    setupFiles: ['test/unit-guard.ts'],
  },
});
