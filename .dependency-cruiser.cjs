// The layer rules of src/ (docs/architecture.md), checked by `npm run check:deps` before every
// `npm test`. Layers, lowest first; each imports only from the ones before it:
//
//   protocol/   pure parsers: nothing but themselves, node:buffer / node:net (net.isIP*) and
//               net/ip.ts, the IP codec, which is as pure and imports nothing of ours
//   logger.ts   the Logger type every layer takes; imports nothing from src/
//   net/        host:port and IP codecs, listeners, connecting and dialing, abort
//   pcap/       the TCP-conversation writer
//   engine/     forward(), the contract, the JS engine; engine/splice/ the native side
//   mux/        yamux sessions and streams over any Duplex; imports no other layer of ours
//   proxy/ relay/ tunnel/ forwarder/   the services: each on the shared layers only, never on
//                                      each other
//   cli/        one file per command; the only importer of several services
//   index.ts    the package entry
//
// TypeScript 7 has no compiler API for dependency-cruiser to use, so the files are parsed with
// swc (parser: 'swc', @swc/core in devDependencies). swc keeps `import type` in what it
// reports, so type-only imports count for every rule here, cycles included.
// scripts/check-deps.mjs fails when fewer modules were checked than src/ holds: a parser that
// silently found nothing must not pass as "no violations".

const SERVICES = '(proxy|relay|tunnel|forwarder)';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'No import cycles, type-only imports included.',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'shared-imports-no-service',
      severity: 'error',
      comment: 'engine/, mux/, net/, pcap/, protocol/ and logger.ts are shared: they import no service and no command.',
      from: { path: '^src/(engine|mux|net|pcap|protocol)/|^src/logger\\.ts$' },
      to: { path: '^src/(proxy|relay|tunnel|forwarder|cli)/' },
    },
    {
      name: 'protocol-is-pure',
      severity: 'error',
      comment: 'protocol/ holds pure parsers: they import each other, node:buffer, node:net (net.isIP*) and the IP codec, nothing else.',
      from: { path: '^src/protocol/' },
      to: { pathNot: ['^src/protocol/', '^src/net/ip\\.ts$', '^(node:)?(buffer|net)$'] },
    },
    {
      name: 'ip-codec-is-a-leaf',
      severity: 'error',
      comment: 'net/ip.ts is the one IP codec of every layer, protocol/ included: it imports nothing of ours.',
      from: { path: '^src/net/ip\\.ts$' },
      to: { path: '^src/' },
    },
    {
      name: 'net-is-the-bottom',
      severity: 'error',
      comment: 'net/ imports only itself, protocol/ and logger.ts.',
      from: { path: '^src/net/' },
      to: { path: '^src/', pathNot: ['^src/net/', '^src/protocol/', '^src/logger\\.ts$'] },
    },
    {
      name: 'pcap-on-net-only',
      severity: 'error',
      comment: 'pcap/ imports only itself and net/.',
      from: { path: '^src/pcap/' },
      to: { path: '^src/', pathNot: ['^src/pcap/', '^src/net/'] },
    },
    {
      name: 'logger-imports-nothing',
      severity: 'error',
      from: { path: '^src/logger\\.ts$' },
      to: { path: '^src/' },
    },
    {
      name: 'services-do-not-import-each-other',
      severity: 'error',
      comment: 'A service uses the shared layers; what two services share moves down into one of them.',
      from: { path: `^src/${SERVICES}/` },
      to: { path: `^src/${SERVICES}/`, pathNot: '^src/$1/' },
    },
    {
      name: 'metrics-imports-no-service',
      severity: 'error',
      comment: 'metrics/ reads what the commands hand it; it imports no service and no command.',
      from: { path: '^src/metrics/' },
      to: { path: `^src/(${SERVICES.slice(1, -1)}|cli)/` },
    },
    {
      name: 'only-cli-imports-cli',
      severity: 'error',
      comment: 'cli/ is the top: nothing else imports it (index.ts included: importing cli/main runs the program).',
      from: { path: '^src/', pathNot: '^src/cli/' },
      to: { path: '^src/cli/' },
    },
    {
      name: 'nothing-imports-the-entry',
      severity: 'error',
      comment: 'src/index.ts is for users; inside src/ import the module itself.',
      from: { path: '^src/', pathNot: '^src/index\\.ts$' },
      to: { path: '^src/index\\.ts$' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      from: { path: '^src/' },
      to: { couldNotResolve: true },
    },
    {
      name: 'no-dev-deps-in-src',
      severity: 'error',
      comment: 'The published package installs dependencies only.',
      from: { path: '^src/' },
      to: { dependencyTypes: ['npm-dev'] },
    },
  ],
  options: {
    parser: 'swc',
    // Counts `import type` too. With swc it always does; this keeps it so if a TypeScript with a
    // compiler API is ever installed (dependency-cruiser then prefers tsc).
    tsPreCompilationDeps: true,
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|build|node_modules)/' },
    // Imports name the emitted .js file; dependency-cruiser falls back to the .ts source itself.
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.mjs', '.cjs', '.json', '.node'] },
    reporterOptions: {
      text: { highlightFocused: true },
    },
  },
};
