// This process's open fds (Linux /proc), for tests that prove nothing leaks.
import fs from 'node:fs';

/** Open fds of this process (Linux). */
export function openFdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** fd -> what it points at ('socket:[123]', 'pipe:[456]', a path...), for failure messages. */
export function fdTable(): Map<string, string> {
  const table = new Map<string, string>();
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      table.set(fd, fs.readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      // closed meanwhile (the readdir's own fd)
    }
  }
  return table;
}

/** The kinds of fds in `now` that were not in `before`, counted: { 'socket': 12, 'pipe': 2 }. */
export function fdDiff(before: Map<string, string>, now: Map<string, string>): Record<string, number> {
  const diff: Record<string, number> = {};
  for (const [fd, target] of now) {
    if (before.get(fd) === target) continue;
    const kind = target.replace(/:\[\d+\]$/, '').replace(/^anon_inode:/, '');
    diff[kind] = (diff[kind] ?? 0) + 1;
  }
  return diff;
}
