// Loaded before every file of `npm run test:unit` (vitest.unit.config.ts): a unit test that
// connects, listens, binds or starts a process fails at that call, naming the file's move out of
// the list, instead of quietly making the fast tier slow and dependent on the machine.
import childProcess, { ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { syncBuiltinESMExports } from 'node:module';

function refuse(what: string): never {
  throw new Error(`${what} in a unit test: this file opens sockets or starts processes, so it belongs in \`npm test\` only (remove it from vitest.unit.config.ts)`);
}

net.Socket.prototype.connect = () => refuse('net.Socket.connect');
net.Server.prototype.listen = () => refuse('net.Server.listen');
dgram.Socket.prototype.bind = () => refuse('dgram.Socket.bind');
// spawn, exec, execFile and fork all start their child through this (untyped) method.
(ChildProcess.prototype as unknown as { spawn: () => never }).spawn = () => refuse('child_process.spawn');
childProcess.spawnSync = () => refuse('child_process.spawnSync');
childProcess.execSync = () => refuse('child_process.execSync');
childProcess.execFileSync = () => refuse('child_process.execFileSync');
syncBuiltinESMExports();
