/** Reading a benchmark's numeric options, from argv (`--name value`) or the environment, with a default and a floor. */

/**
 * `arg` (from argv) else `envValue`, else `def` when neither is given (or empty); an error naming `name` when the value
 * is not a number ≥ `min` (`integer`: not an integer ≥ `min`).
 */
export function numberOption(
  name: string,
  arg: string | undefined,
  envValue: string | undefined,
  def: number,
  min: number,
  integer = false,
): number {
  const raw = arg ?? envValue;
  const value = raw === undefined || raw === '' ? def : Number(raw);
  if (integer ? !Number.isInteger(value) || value < min : !Number.isFinite(value) || value < min)
    throw new Error(`${name} must be ${integer ? 'an integer' : 'a number'} ≥ ${min} (got ${raw})`);
  return value;
}
