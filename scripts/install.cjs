#!/usr/bin/env node
'use strict';
// The splice engine exists only on Linux. Elsewhere nothing is compiled and the JS engine serves,
// so `npm install` needs no compiler there. On Linux a prebuild that loads (prebuilds/, shipped in
// the package) means there is nothing to do; without one the addon is compiled, and when that
// cannot be done (no compiler, no Python) the install still succeeds: the JS engine serves, and
// says so. Nothing here is needed where a prebuild exists, so `--ignore-scripts` loses nothing.
//
//   --force   compile, whatever is there, and fail when the compiler does (npm run build:native)
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const { withLocalHeaders } = require('./node-headers.cjs');

if (process.platform !== 'linux') {
  console.log('splicer: no native engine on ' + process.platform + '; the JS engine will be used');
  process.exit(0);
}

const root = path.join(__dirname, '..');
const force = process.argv.includes('--force');
// npm's own switches: `npm install --build-from-source` and `npm install --verbose`.
const fromSource = process.env.npm_config_build_from_source === 'true';
const verbose = process.env.npm_config_loglevel === 'verbose' || process.env.npm_config_loglevel === 'silly';

if (!force && !fromSource) {
  const loads = loadable();
  if (loads) {
    console.log('splicer: using ' + path.relative(root, loads));
    process.exit(0);
  }
}

const compiled = compile();
if (compiled.status === 0) {
  if (!force) console.log('splicer: compiled build/Release/splicer.node');
  process.exit(0);
}
if (force) process.exit(compiled.status === null ? 1 : compiled.status);
const why = compiled.error ? compiled.error.message : firstError((compiled.stdout || '') + '\n' + (compiled.stderr || '')) || 'node-gyp exited ' + compiled.status;
console.log('splicer: the splice engine could not be compiled (' + why + '); the JS engine will be used');
process.exit(0);

/** `node-gyp rebuild`: its output shown with --force or npm's --verbose, else kept for the one-line notice. */
function compile() {
  const [command, ...args] = nodeGyp();
  return spawnSync(command, [...args, 'rebuild'], {
    cwd: root,
    env: withLocalHeaders(process.env),
    stdio: force || verbose ? 'inherit' : ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
}

/** The addon file node-gyp-build would load at run time, if it loads; else undefined. */
function loadable() {
  const probe = spawnSync(
    process.execPath,
    ['-e', 'const f = require(process.argv[1]).resolve(process.argv[2]); require(f); console.log(f)', require.resolve('node-gyp-build', { paths: [root] }), root],
    { encoding: 'utf8' },
  );
  return probe.status === 0 ? probe.stdout.trim() : undefined;
}

/** node-gyp: the package's own (a checkout's devDependency), else the one npm runs scripts with, else PATH's. */
function nodeGyp() {
  try {
    return [process.execPath, require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] })];
  } catch {
    const npms = process.env.npm_config_node_gyp;
    return npms && npms.endsWith('.js') ? [process.execPath, npms] : ['node-gyp'];
  }
}

/** What failed, from node-gyp's output: its error's message (`stack Error: ...`), else its first `gyp ERR!` line. */
function firstError(output) {
  const errors = output.split('\n').map((line) => line.trim()).filter((line) => line.startsWith('gyp ERR!'));
  const stack = errors.findIndex((line) => line.startsWith('gyp ERR! stack Error:'));
  if (stack >= 0) {
    const message = [];
    for (const line of errors.slice(stack)) {
      const text = line.replace(/^gyp ERR! stack (Error: )?/, '');
      if (!line.startsWith('gyp ERR! stack ') || text.startsWith('at ')) break;
      message.push(text);
    }
    return message.join(' ');
  }
  const first = errors.find((line) => !/^gyp ERR! (System|command|cwd|node -v|node-gyp -v|not ok)/.test(line));
  return first ? first.replace(/^gyp ERR! /, '').trim() : undefined;
}
