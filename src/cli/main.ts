#!/usr/bin/env node
// The `splicer` command line.
import { Command } from 'commander';
import { createRequire } from 'node:module';
import { addEnginesCommand } from './engines.js';
import { keepFreedMemoryForReuse, keepYoungGenerationSmall } from './heap.js';
import { addForwardCommand } from './forward.js';
import { addProxyCommand } from './proxy.js';
import { relayCommand } from './relay.js';
import { tunnelCommand } from './tunnel.js';

const version = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

export function buildProgram(): Command {
  const program = new Command('splicer')
    .description('Forward TCP connections with Linux splice() zero copy')
    .version(version)
    .showHelpAfterError('(run with --help for usage)');

  addForwardCommand(program);
  addProxyCommand(program);
  program.addCommand(relayCommand());
  addEnginesCommand(program);
  program.addCommand(tunnelCommand());
  return program;
}

keepYoungGenerationSmall();
keepFreedMemoryForReuse();
buildProgram()
  .parseAsync(process.argv)
  .catch((err: Error) => {
    console.error(`splicer: ${err.message}`);
    process.exit(1);
  });
