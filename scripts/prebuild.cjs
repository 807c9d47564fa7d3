#!/usr/bin/env node
'use strict';
// The addon compiled for this host into prebuilds/<platform>-<arch>/, where node-gyp-build finds
// it: `npm pack` runs this (prepack), so an install from the tarball needs no compiler and no
// install script. The addon is N-API, so one build serves every Node from 20 on; the file is
// tagged with its libc (splicer.glibc.node), so a glibc build is never loaded on musl (Alpine),
// where the install compiles or the JS engine serves.
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const { withLocalHeaders } = require('./node-headers.cjs');

if (process.platform !== 'linux') {
  console.log('splicer: no prebuild on ' + process.platform + ': the splice engine is Linux only');
  process.exit(0);
}

const root = path.join(__dirname, '..');
const resolveIn = (request) => require.resolve(request, { paths: [root] });

// Every core unless told otherwise (JOBS): node-gyp compiles one file at a time by default.
const env = withLocalHeaders({ JOBS: 'max', ...process.env });

const args = [
  resolveIn('prebuildify/bin.js'),
  '--napi',
  '--strip',
  '--tag-libc',
  '--target', 'node@' + process.versions.node,
  '--node-gyp', resolveIn('node-gyp/bin/node-gyp.js'),
];
const built = spawnSync(process.execPath, args, { cwd: root, env, stdio: 'inherit' });
if (built.status !== 0) {
  console.error('splicer: prebuildify failed (' + (built.error ? built.error.message : 'exit ' + built.status) + ')');
  process.exit(1);
}

// A prebuild that does not load must not reach a tarball: load it as an install would.
const probe = spawnSync(
  process.execPath,
  ['-e', 'const f = require(process.argv[1]).resolve(process.argv[2]); require(f); console.log(f)', resolveIn('node-gyp-build'), root],
  { env: { ...process.env, PREBUILDS_ONLY: '1' }, encoding: 'utf8' },
);
if (probe.status !== 0) {
  console.error('splicer: the prebuild does not load: ' + (probe.stderr || '').trim().split('\n')[0]);
  process.exit(1);
}
console.log('splicer: prebuild ' + path.relative(root, probe.stdout.trim()));
