// `splicer engines`: which forwarding engines this machine can use.
import { Command } from 'commander';
import { engines } from '../engine/forward.js';

export function addEnginesCommand(program: Command): void {
  program
    .command('engines')
    .description('say which forwarding engines this machine can use, and why not')
    .action(() => {
      console.log(JSON.stringify(engines(), null, 2));
    });
}
