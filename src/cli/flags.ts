/** The flags of an operator command. */
import { type ParseArgsConfig, parseArgs } from 'node:util';

type FlagOptions = NonNullable<ParseArgsConfig['options']>;
type Flags<O extends FlagOptions> = ReturnType<
  typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: false }>
>['values'];

/**
 * An operator command's flags (node:util `parseArgs`: strict, no positional arguments): their values, or the
 * usage error to print (parseArgs' message, then `usage`).
 */
export function parseFlags<const O extends FlagOptions>(args: string[], options: O, usage: string): Flags<O> | string {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    return `${(err as Error).message}\n${usage}`;
  }
}
