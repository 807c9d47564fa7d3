// --config FILE: a command's flags as the keys of a YAML or JSON file. The keys are made from the
// command's own options (every long flag is a key of the same name, `--max-connections` is
// `max-connections`), and each value goes through that flag's own parser, so a value in the file
// means exactly what the same flag means on the command line. A flag that may be repeated takes a
// list. The file's structure (known keys, a list where one is due, scalars elsewhere) is checked
// with zod first; an unknown key is an error, so a typo is never silently ignored.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Command, Option } from 'commander';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

export class ConfigError extends Error {
  readonly code = 'ERR_CONFIG';
}

/** The flag a key stands for, and how its value is read. */
interface ConfigKey {
  option: Option;
  kind: 'flag' | 'value' | 'list';
}

/**
 * The keys of a command's file. A parser that takes the previous value (commander's second
 * argument) accumulates: that flag is repeatable, and its key takes a list. `--choices` options
 * have such a parser too, but take one value.
 */
export function configKeys(command: Command): Map<string, ConfigKey> {
  const keys = new Map<string, ConfigKey>();
  for (const option of command.options) {
    if (!option.long || option.long === '--config' || option.negate || option.hidden) continue;
    const kind = !option.required && !option.optional ? 'flag' : option.parseArg && option.parseArg.length >= 2 && !option.argChoices ? 'list' : 'value';
    keys.set(option.long.slice(2), { option, kind });
  }
  return keys;
}

const scalar = z.union([z.string(), z.number()], { error: 'expected a string or a number' });

function schemaFor(keys: Map<string, ConfigKey>) {
  const shape: Record<string, z.ZodType> = {};
  for (const [name, { option, kind }] of keys) {
    if (kind === 'flag') shape[name] = z.boolean({ error: 'expected true or false' });
    else if (kind === 'list') shape[name] = z.array(scalar, { error: 'expected a list (this flag is repeatable)' });
    else shape[name] = option.argChoices ? z.enum(option.argChoices as [string, ...string[]], { error: `expected one of ${option.argChoices.join(', ')}` }) : scalar;
  }
  for (const name of Object.keys(shape)) shape[name] = shape[name]!.optional();
  return z.strictObject(shape, { error: 'expected a mapping of flag names to values' });
}

/** The text of a YAML or JSON file, parsed by its extension. */
export function readConfigText(file: string): unknown {
  const extension = path.extname(file).toLowerCase();
  if (!['.yaml', '.yml', '.json'].includes(extension)) throw new ConfigError(`${file}: a config file ends in .yaml, .yml or .json`);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${file}: cannot read it: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    return extension === '.json' ? JSON.parse(text) : parseYaml(text, { prettyErrors: false });
  } catch (err) {
    throw new ConfigError(`${file}: not valid ${extension === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message.split('\n')[0]}`);
  }
}

const pathText = (at: readonly PropertyKey[]) => at.map((part, i) => (typeof part === 'number' ? `[${part}]` : `${i === 0 ? '' : '.'}${String(part)}`)).join('');

/** The closest known key to a misspelt one, when there is a close one. */
function closest(name: string, known: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of known) {
    const distance = editDistance(name, candidate);
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length]!;
}

/**
 * The file's values, keyed by the options' attribute names (`maxConnections`), each parsed by
 * its flag's parser. Keys are converted in the order the file gives them, so parsers that keep
 * an order across flags (--allow and --deny) see the file's order. Throws a ConfigError naming
 * every key that is wrong and why.
 */
export function parseConfig(command: Command, raw: unknown, file: string): Record<string, unknown> {
  const keys = configKeys(command);
  const checked = schemaFor(keys).safeParse(raw ?? {});
  if (!checked.success) {
    const problems = checked.error.issues.flatMap((issue) => {
      if (issue.code === 'unrecognized_keys') {
        return issue.keys.map((key) => {
          const near = closest(key, keys.keys());
          return `${pathText([...issue.path, key])}: unknown key${near ? ` (did you mean "${near}"?)` : ''}`;
        });
      }
      return [`${issue.path.length > 0 ? pathText(issue.path) : '(top level)'}: ${issue.message}`];
    });
    throw new ConfigError(`${file}: ${problems.join('; ')}`);
  }
  const values: Record<string, unknown> = {};
  const problems: string[] = [];
  const data = checked.data as Record<string, unknown>;
  // The file's own key order (zod's output follows the schema's).
  for (const name of Object.keys(raw ?? {})) {
    const value = data[name];
    const { option, kind } = keys.get(name)!;
    const attribute = option.attributeName();
    const parse = (text: string, previous: unknown, at: PropertyKey[]) => {
      if (!option.parseArg) return text;
      try {
        return option.parseArg(text, previous);
      } catch (err) {
        problems.push(`${pathText(at)}: ${(err as Error).message}`);
        return previous;
      }
    };
    if (kind === 'flag') {
      if (value === true) values[attribute] = true;
    } else if (kind === 'list') {
      let accumulated: unknown = undefined;
      (value as Array<string | number>).forEach((item, i) => (accumulated = parse(String(item), accumulated, [name, i])));
      if (accumulated !== undefined) values[attribute] = accumulated;
    } else {
      values[attribute] = parse(String(value), undefined, [name]);
    }
  }
  if (problems.length > 0) throw new ConfigError(`${file}: ${problems.join('; ')}`);
  return values;
}

/** `parseConfig` of a file read from disk. */
export function loadConfig(command: Command, file: string): Record<string, unknown> {
  return parseConfig(command, readConfigText(file), file);
}

/**
 * The options a command runs with: the file's values over the defaults, and flags given on the
 * command line (or from the environment) over the file. `together` lists groups of attribute names
 * that override as one (--allow and --deny are one ordered list: any of them on the command line
 * replaces all of them from the file).
 */
export function mergeConfig<T extends object>(command: Command, cli: T, fromFile: Record<string, unknown>, together: string[][] = []): T {
  const fromCli = (attribute: string) => {
    const source = command.getOptionValueSource(attribute);
    return source === 'cli' || source === 'env';
  };
  const merged: Record<string, unknown> = { ...(cli as Record<string, unknown>) };
  for (const [attribute, value] of Object.entries(fromFile)) {
    const group = together.find((names) => names.includes(attribute)) ?? [attribute];
    if (!group.some(fromCli)) merged[attribute] = value;
  }
  for (const group of together) {
    if (group.some(fromCli)) continue;
    // Not on the command line: what the file says for the group, and nothing else.
    for (const attribute of group) if (!(attribute in fromFile)) delete merged[attribute];
  }
  return merged as T;
}

/** The option every command with a config file has. */
export const configOption = () =>
  new Option('--config <file>', 'read flags from a YAML (.yaml/.yml) or JSON (.json) file: each long flag is a key, a repeatable one takes a list; flags given here override it; SIGHUP re-reads it');

/**
 * The options of a command run with `--config`: read now, and again by each call of the function
 * returned (a reload), against the same command line. Without `--config`, the command line alone.
 */
export function configuredOptions<T extends { config?: string }>(command: Command, cli: T, together: string[][] = []): () => T {
  return () => (cli.config ? mergeConfig(command, cli, loadConfig(command, cli.config), together) : { ...cli });
}
