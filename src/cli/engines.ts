// `splicer engines`: which forwarding engines this machine can use, and where the addon came from.
import { Command } from 'commander';
import { engines } from '../engine/forward.js';

export function addEnginesCommand(program: Command): void {
  program
    .command('engines')
    .description('say which forwarding engines this machine can use, why not, and which addon file serves splice (prebuild or local build)')
    .action(() => {
      console.log(JSON.stringify(engines(), null, 2));
    });
}
