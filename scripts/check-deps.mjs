#!/usr/bin/env node
// The layer rules of .dependency-cruiser.cjs over src/: exits 1 on any violation, and also when
// dependency-cruiser checked fewer modules than src/ holds (with no parser for TypeScript it
// reports "no violations" over 0 modules; that must fail, not pass).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.join(import.meta.dirname, '..');
const bin = path.join(root, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');

const sources = fs
  .readdirSync(path.join(root, 'src'), { recursive: true, encoding: 'utf8' })
  .filter((f) => /\.(ts|mts|cts|js|mjs|cjs)$/.test(f) && !f.endsWith('.d.ts'))
  .map((f) => `src/${f.split(path.sep).join('/')}`);

let output;
try {
  output = execFileSync(process.execPath, [bin, 'src', '--config', '.dependency-cruiser.cjs', '--output-type', 'json'], {
    cwd: root,
    encoding: 'utf8',
    maxBuffer: 256 << 20,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
} catch (err) {
  // Exit code = the number of error violations; the report is on stdout all the same.
  if (typeof err.stdout !== 'string' || !err.stdout.trim().startsWith('{')) throw err;
  output = err.stdout;
}
const result = JSON.parse(output);
const checked = new Set(result.modules.map((m) => m.source).filter((s) => s.startsWith('src/')));
const missed = sources.filter((s) => !checked.has(s));
const violations = result.summary.violations;

for (const v of violations) {
  const where = v.cycle?.length ? [v.from, ...v.cycle.map((c) => (typeof c === 'string' ? c : c.name))].join(' → ') : `${v.from} → ${v.to}`;
  console.error(`${v.rule.severity} ${v.rule.name}: ${where}`);
}
if (missed.length) {
  console.error(`dependency-cruiser checked ${checked.size} of the ${sources.length} modules in src/; not checked: ${missed.slice(0, 5).join(', ')}${missed.length > 5 ? ', …' : ''}`);
  console.error("(TypeScript 7 gives it no compiler API: it needs @swc/core installed and parser: 'swc')");
}
const errors = violations.filter((v) => v.rule.severity === 'error').length;
console.log(`check:deps: ${checked.size} modules in src/, ${result.summary.totalDependenciesCruised} dependencies, ${errors} error(s), ${violations.length - errors} warning(s)`);
if (errors || missed.length) process.exit(1);
