/** Temporary directories for a test file (spool directories, mostly), removed once the file's tests are done. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';

/**
 * Returns a function that creates a fresh directory `<tmp>/<prefix>XXXXXX` each call; every one is removed after the
 * tests of the file that called `useTempDirs` (at the top level, or in a helper it imports).
 */
export function useTempDirs(prefix: string): () => string {
  const dirs: string[] = [];
  after(() => {
    // A process a test started may still be writing there: retried, and never a reason to fail the file.
    for (const dir of dirs.splice(0)) {
      try {
        rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
      } catch {
        // Left in the temporary directory.
      }
    }
  });
  return () => {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(dir);
    return dir;
  };
}
