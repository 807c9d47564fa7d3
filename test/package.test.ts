// The package as a user gets it. `npm pack` of a copy of this tree (its prepack step compiles the
// prebuild with prebuildify), then a fresh project installs the tarball offline with
// --ignore-scripts: no compiler and no install script run there. A child Node in that project
// loads `splicer` and forwards a stream through it, hashed end to end. Then, with the prebuild
// taken out of the installed copy and no compiler to be had, the install script still succeeds
// and the JS engine carries the stream, saying why in one line.
//
// The pack runs in a copy because prebuildify rebuilds build/ where it runs, and the other test
// files load the addon from this tree's build/ meanwhile.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasTool, nativeDisabled, underCi } from './policy.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
/** What `npm pack` reads: the package's files and what its prepare and prepack scripts need. */
const PACKED_SOURCES = ['package.json', 'binding.gyp', 'tsconfig.json', 'tsconfig.build.json', 'README.md', 'LICENSE', 'native', 'scripts', 'src'];
/** What compiling the addon takes: node-gyp's Python, make, the C++ compiler, and strip for --strip. */
const BUILD_TOOLS = ['python3', 'make', 'g++', 'strip'];
const LIBC = fs.existsSync('/etc/alpine-release') ? 'musl' : 'glibc';
const PREBUILD = `prebuilds/linux-${process.arch}/splicer.${LIBC}.node`;
const NOTICE = /^splicer: the splice engine is not available: (.+); the JS engine will be used$/;
const DISABLED = 'disabled by SPLICER_DISABLE_NATIVE=1';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command to its end and resolves with what it wrote. Past its timeout its whole process
 * group is killed (npm pack and the install script start node-gyp, make and the compiler), and
 * the code is -1.
 */
function run(file: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs: number }): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { cwd: options.cwd, env: options.env ?? childEnv(), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // The group is gone already.
      }
    }, options.timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: timedOut ? -1 : (code ?? -1), stdout, stderr });
    });
  });
}

/**
 * This environment without what `npm test` sets for its own script (npm_lifecycle_*, the
 * package's fields) and vitest's NODE_OPTIONS; npm's config (npm_config_*: the cache, nodedir) stays.
 */
function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('npm_lifecycle_') || key.startsWith('npm_package_') || key === 'NODE_OPTIONS' || key === 'INIT_CWD') continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

/**
 * The fresh project's lock: this repository's production dependencies, pinned as `npm ci` here
 * installed them. With each entry's tarball and integrity known, npm takes them from its cache
 * and asks no registry (--offline), as it would have to for a bare `npm install <tgz>`.
 */
function freshLock(tarball: string): { manifest: object; lock: object } {
  const repoLock = JSON.parse(fs.readFileSync(path.join(REPO, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean; devOptional?: boolean; link?: boolean; version: string; resolved?: string }>;
  };
  const dependencies = { splicer: `file:${tarball}` };
  const packages: Record<string, object> = { '': { name: 'fresh', version: '1.0.0', dependencies } };
  for (const [where, entry] of Object.entries(repoLock.packages)) {
    if (!where || entry.dev || entry.devOptional || entry.link) continue;
    const name = where.slice(where.lastIndexOf('node_modules/') + 'node_modules/'.length);
    const resolved = entry.resolved ?? `https://registry.npmjs.org/${name}/-/${name.split('/').pop()}-${entry.version}.tgz`;
    packages[where] = { ...entry, resolved };
  }
  return {
    manifest: { name: 'fresh', version: '1.0.0', private: true, type: 'module', dependencies },
    lock: { name: 'fresh', version: '1.0.0', lockfileVersion: 3, requires: true, packages },
  };
}

const missingTool = BUILD_TOOLS.find((tool) => !hasTool(tool));
const skipReason =
  process.platform !== 'linux'
    ? 'prebuilds are made for Linux only (the splice engine is Linux only)'
    : missingTool && !underCi
      ? `${missingTool} is not installed: packing compiles the prebuild`
      : undefined;

describe('the packed tarball, installed with --ignore-scripts', () => {
  const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'splicer-package-')));
  const source = path.join(tmp, 'source');
  const out = path.join(tmp, 'out');
  const fresh = path.join(tmp, 'fresh');
  const installed = path.join(fresh, 'node_modules', 'splicer');
  let entries: string[] = [];
  let installFailure: string | undefined;

  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  beforeAll(async () => {
    if (skipReason) return;
    if (missingTool) throw new Error(`${missingTool} is not installed, and CI must have it to pack the prebuild`);
    fs.mkdirSync(source);
    for (const name of PACKED_SOURCES) fs.cpSync(path.join(REPO, name), path.join(source, name), { recursive: true });
    fs.symlinkSync(fs.realpathSync(path.join(REPO, 'node_modules')), path.join(source, 'node_modules'));

    fs.mkdirSync(out);
    const packed = await run('npm', ['pack', '--pack-destination', out, '--no-fund'], { cwd: source, timeoutMs: 240_000 });
    expect(packed.code, `npm pack failed:\n${packed.stdout}\n${packed.stderr}`).toBe(0);
    const [tarball] = fs.readdirSync(out).filter((name) => name.endsWith('.tgz'));
    expect(tarball, `npm pack left no tarball in ${out}`).toBeDefined();
    const listed = await run('tar', ['-tzf', path.join(out, tarball!)], { cwd: tmp, timeoutMs: 30_000 });
    expect(listed.code).toBe(0);
    entries = listed.stdout.split('\n').filter(Boolean).map((entry) => entry.replace(/^package\//, ''));

    fs.mkdirSync(fresh);
    const { manifest, lock } = freshLock(path.join(out, tarball!));
    fs.writeFileSync(path.join(fresh, 'package.json'), JSON.stringify(manifest, null, 2));
    fs.writeFileSync(path.join(fresh, 'package-lock.json'), JSON.stringify(lock, null, 2));
    const install = await run('npm', ['install', '--ignore-scripts', '--offline', '--no-audit', '--no-fund'], { cwd: fresh, timeoutMs: 120_000 });
    if (install.code !== 0 && !install.stderr.includes('ENOTCACHED')) throw new Error(`npm install of the tarball failed:\n${install.stderr}`);
    if (install.code !== 0) installFailure = `npm's cache lacks a dependency of the tarball (npm ci fills it): ${install.stderr.split('\n', 2).join(' ')}`;
    fs.copyFileSync(path.join(REPO, 'test', 'fixtures', 'package-probe.mjs'), path.join(fresh, 'probe.mjs'));
  }, 300_000);

  /** The tarball packed, or a skip saying why it cannot be here. */
  function needsPack(ctx: { skip(note?: string): void }): void {
    if (skipReason) ctx.skip(skipReason);
  }

  /** The fresh project installed, or (outside CI, where npm's cache may lack a dependency: --offline) a skip. */
  function needsInstall(ctx: { skip(note?: string): void }): void {
    needsPack(ctx);
    if (!installFailure) return;
    if (underCi) throw new Error(installFailure);
    ctx.skip(installFailure);
  }

  /** probe.mjs in the fresh project: its JSON line, and its stderr lines. */
  async function probe(): Promise<{ report: ProbeReport; stderr: string[] }> {
    const probed = await run(process.execPath, ['probe.mjs'], { cwd: fresh, timeoutMs: 60_000 });
    expect(probed.code, `probe failed:\n${probed.stderr}`).toBe(0);
    return { report: JSON.parse(probed.stdout) as ProbeReport, stderr: probed.stderr.split('\n').filter(Boolean) };
  }

  it('the tarball carries the prebuild, the compiled JS, and the sources to compile elsewhere', (ctx) => {
    needsPack(ctx);
    expect(entries).toContain(PREBUILD);
    for (const file of ['dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'binding.gyp', 'scripts/install.cjs', 'scripts/node-headers.cjs', 'package.json']) {
      expect(entries).toContain(file);
    }
    const sources = [...fs.readFileSync(path.join(REPO, 'binding.gyp'), 'utf8').matchAll(/"(native\/[\w.]+\.cc)"/g)].map((m) => m[1]);
    expect(sources.length).toBeGreaterThan(0);
    for (const file of sources) expect(entries).toContain(file);
    expect(entries.filter((entry) => /^(build|src|test|bench|node_modules)\//.test(entry))).toEqual([]);
  });

  it('loads the prebuild (no build/ made, nothing compiled) and forwards a stream intact', async (ctx) => {
    needsInstall(ctx);
    expect(fs.existsSync(path.join(installed, PREBUILD))).toBe(true);
    expect(fs.existsSync(path.join(installed, 'build'))).toBe(false);
    const { report, stderr } = await probe();
    expect(report.received).toEqual(report.sent);
    expect(report.result).toMatchObject({ reason: 'eof', bytesAtoB: report.sent.bytes, bytesBtoA: report.sent.bytes });
    expect(stderr).toEqual([]);
    if (nativeDisabled) {
      expect(report.engines.splice).toEqual({ available: false, reason: DISABLED });
      expect(report.result.engine).toBe('js');
    } else {
      expect(report.engines.splice).toEqual({ available: true, origin: 'prebuild', file: path.join(installed, PREBUILD) });
      expect(report.result.engine).toBe('splice');
    }
  });

  it('`splicer engines` says the addon came from the prebuild', async (ctx) => {
    needsInstall(ctx);
    const engines = await run(path.join(fresh, 'node_modules', '.bin', 'splicer'), ['engines'], { cwd: fresh, timeoutMs: 30_000 });
    expect(engines.code, engines.stderr).toBe(0);
    const splice = (JSON.parse(engines.stdout) as ProbeReport['engines']).splice;
    expect(splice).toEqual(nativeDisabled ? { available: false, reason: DISABLED } : { available: true, origin: 'prebuild', file: path.join(installed, PREBUILD) });
  });

  it('where a local build and a prebuild are both there (a checkout after npm pack), the local build serves', async (ctx) => {
    needsPack(ctx);
    // prebuildify moves what it compiled out of build/Release; a later build:native puts one back.
    const built = path.join(source, 'build', 'Release', 'splicer.node');
    fs.mkdirSync(path.dirname(built), { recursive: true });
    fs.copyFileSync(path.join(source, PREBUILD), built);
    const engines = await run(process.execPath, [path.join(source, 'dist', 'cli', 'main.js'), 'engines'], { cwd: source, timeoutMs: 30_000 });
    expect(engines.code, engines.stderr).toBe(0);
    const splice = (JSON.parse(engines.stdout) as ProbeReport['engines']).splice;
    expect(splice).toEqual(nativeDisabled ? { available: false, reason: DISABLED } : { available: true, origin: 'build', file: built });
  });

  it('the install script, where the prebuild loads, compiles nothing', async (ctx) => {
    needsInstall(ctx);
    const installScript = await run(process.execPath, ['scripts/install.cjs'], { cwd: installed, timeoutMs: 60_000 });
    expect(installScript).toEqual({ code: 0, stdout: `splicer: using ${PREBUILD}\n`, stderr: '' });
    expect(fs.existsSync(path.join(installed, 'build'))).toBe(false);
  });

  // Last: it takes the prebuild out of the installed copy.
  it('without the prebuild and with no compiler, the install succeeds and the JS engine serves, saying why in one line', async (ctx) => {
    needsInstall(ctx);
    fs.rmSync(path.join(installed, 'prebuilds'), { recursive: true });
    // A machine with Node and nothing to compile with: node alone on PATH (no Python, make or
    // compiler), and node-gyp where npm would point the install script at its own.
    const bare = path.join(tmp, 'bare-bin');
    fs.mkdirSync(bare);
    fs.symlinkSync(process.execPath, path.join(bare, 'node'));
    const nodeGyp = fs.realpathSync(path.join(REPO, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
    const env = childEnv({ PATH: bare, npm_config_node_gyp: nodeGyp });
    const installScript = await run(process.execPath, ['scripts/install.cjs'], { cwd: installed, env, timeoutMs: 60_000 });
    expect(installScript.code).toBe(0);
    expect(installScript.stderr).toBe('');
    expect(installScript.stdout).toMatch(/^splicer: the splice engine could not be compiled \(.+\); the JS engine will be used\n$/);

    const { report, stderr } = await probe();
    expect(report.result.engine).toBe('js');
    expect(report.received).toEqual(report.sent);
    expect(report.result).toMatchObject({ reason: 'eof', bytesAtoB: report.sent.bytes, bytesBtoA: report.sent.bytes });
    if (nativeDisabled) {
      // Switched off on purpose: the JS engine is what was asked for, and nothing is said.
      expect(report.engines.splice).toEqual({ available: false, reason: DISABLED });
      expect(stderr).toEqual([]);
    } else {
      const reason = `no prebuild for linux-${process.arch} ${LIBC} and no local build in ${installed}`;
      expect(report.engines.splice).toEqual({ available: false, reason });
      expect(stderr).toHaveLength(1);
      expect(stderr[0]).toMatch(NOTICE);
      expect(NOTICE.exec(stderr[0]!)![1]).toBe(reason);
    }
  });
});

interface ProbeReport {
  engines: { splice: Record<string, unknown>; js: { available: boolean } };
  result: { engine: string; reason: string; bytesAtoB: number; bytesBtoA: number };
  sent: { bytes: number; sha: string };
  received: { bytes: number; sha: string };
}
