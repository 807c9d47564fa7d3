#!/usr/bin/env node
'use strict';
// The splice engine exists only on Linux. Elsewhere nothing is compiled and
// the JS engine serves, so `npm install` needs no compiler there.
const { spawnSync } = require('node:child_process');
const path = require('node:path');

if (process.platform !== 'linux') {
  console.log('splicer: no native engine on ' + process.platform + '; the JS engine will be used');
  process.exit(0);
}

const root = path.join(__dirname, '..');
const force = process.argv.includes('--force');
const bin = (name) => require.resolve(name + '/package.json', { paths: [root] }).replace(/package\.json$/, '');

let result;
if (force) {
  result = spawnSync(process.execPath, [path.join(bin('node-gyp'), 'bin', 'node-gyp.js'), 'rebuild'], { cwd: root, stdio: 'inherit' });
} else {
  // node-gyp-build uses a matching prebuild when there is one, else compiles.
  result = spawnSync(process.execPath, [path.join(bin('node-gyp-build'), 'bin.js')], { cwd: root, stdio: 'inherit' });
}
process.exit(result.status === null ? 1 : result.status);
