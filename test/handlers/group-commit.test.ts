import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GroupCommit, type GroupCommitOptions, type RowStore } from '../../src/handlers/group-commit.ts';

class RowError extends Error {}

/**
 * A store in memory whose statements end when the test says so: `many` and `one` list the statements sent, `done()`
 * ends the oldest one still open. A row `bad` fails any statement holding it with a RowError; `down` fails every
 * statement with an ordinary Error (a lost connection).
 */
class FakeStore implements RowStore<string> {
  readonly stored = new Set<string>();
  readonly many: string[][] = [];
  readonly one: string[] = [];
  down = false;
  readonly #open: (() => void)[] = [];

  insertMany(rows: readonly string[]): Promise<boolean[]> {
    this.many.push([...rows]);
    return this.#statement(rows);
  }

  async insertOne(row: string): Promise<boolean> {
    this.one.push(row);
    const [stored] = await this.#statement([row]);
    return stored === true;
  }

  isRowError(err: unknown): boolean {
    return err instanceof RowError;
  }

  /** Ends the oldest open statement; resolves once its callers have seen the outcome. */
  async done(): Promise<void> {
    const end = this.#open.shift();
    assert.ok(end, 'a statement is open');
    end();
    await new Promise((resolve) => setImmediate(resolve));
  }

  get open(): number {
    return this.#open.length;
  }

  #statement(rows: readonly string[]): Promise<boolean[]> {
    return new Promise<boolean[]>((resolve, reject) => {
      this.#open.push(() => {
        if (this.down) return reject(new Error('connection terminated'));
        if (rows.some((r) => r.startsWith('bad'))) return reject(new RowError(`bad row in ${rows.join(',')}`));
        resolve(
          rows.map((r) => {
            if (this.stored.has(r)) return false;
            this.stored.add(r);
            return true;
          }),
        );
      });
    });
  }
}

const options = (extra: Partial<GroupCommitOptions<string>> = {}): GroupCommitOptions<string> => ({
  statements: 1,
  maxRows: 100,
  maxBytes: 1_000_000,
  sizeOf: (row) => row.length,
  ...extra,
});

/** Each submit's outcome, once settled: true/false, or the error. */
function track(p: Promise<boolean>): { outcome?: boolean | Error } {
  const out: { outcome?: boolean | Error } = {};
  p.then(
    (stored) => {
      out.outcome = stored;
    },
    (err: Error) => {
      out.outcome = err;
    },
  );
  return out;
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

test('a row sent while a statement is in flight waits, and the rows that waited go together in the next one', async () => {
  const store = new FakeStore();
  const group = new GroupCommit(store, options());
  const a = track(group.submit('a'));
  const rest = ['b', 'c', 'd'].map((r) => track(group.submit(r)));
  assert.deepEqual(store.one, ['a'], 'a lone row goes at once, on its own');
  assert.equal(store.many.length, 0);
  await store.done();
  assert.equal(a.outcome, true);
  assert.deepEqual(store.many, [['b', 'c', 'd']]);
  assert.ok(
    rest.every((r) => r.outcome === undefined),
    'no row settles before its statement returned',
  );
  await store.done();
  assert.deepEqual(
    rest.map((r) => r.outcome),
    [true, true, true],
  );
});

test('each row gets its own outcome: stored, or already there', async () => {
  const store = new FakeStore();
  store.stored.add('c');
  const group = new GroupCommit(store, options());
  const first = track(group.submit('a'));
  const batch = ['b', 'c', 'd'].map((r) => track(group.submit(r)));
  await store.done();
  await store.done();
  assert.equal(first.outcome, true);
  assert.deepEqual(
    batch.map((r) => r.outcome),
    [true, false, true],
  );
});

test('no more statements are in flight than allowed, and none holds more rows than maxRows or maxBytes', async () => {
  const store = new FakeStore();
  const group = new GroupCommit(store, options({ statements: 2, maxRows: 3, maxBytes: 8 }));
  const all = ['a', 'b', 'c', 'd', 'e', 'f', 'gggggg', 'hhhhhh', 'iiiiiiiiiiii'].map((r) => track(group.submit(r)));
  assert.equal(store.open, 2);
  while (store.open > 0) {
    assert.ok(store.open <= 2);
    await store.done();
  }
  assert.deepEqual(store.one, ['a', 'b', 'hhhhhh', 'iiiiiiiiiiii'], 'a row larger than maxBytes still goes, alone');
  assert.deepEqual(store.many, [
    ['c', 'd', 'e'],
    ['f', 'gggggg'],
  ]);
  assert.ok(all.every((r) => r.outcome === true));
});

test('a row error in a batch stores the other rows one by one and fails only the bad row', async () => {
  const store = new FakeStore();
  const group = new GroupCommit(store, options());
  const first = track(group.submit('a'));
  const batch = ['b', 'bad', 'c'].map((r) => track(group.submit(r)));
  await store.done();
  await store.done();
  assert.deepEqual(store.many, [['b', 'bad', 'c']]);
  assert.deepEqual(store.one, ['a', 'b', 'bad', 'c'], 'the rows of the failed batch, each on its own');
  while (store.open > 0) await store.done();
  await settle();
  assert.equal(first.outcome, true);
  assert.equal(batch[0]?.outcome, true);
  assert.ok(batch[1]?.outcome instanceof RowError);
  assert.equal(batch[2]?.outcome, true);
  assert.deepEqual([...store.stored].sort(), ['a', 'b', 'c']);
});

test('any other failure of a batch rejects every row of it, each with that error, and retries none alone', async () => {
  const store = new FakeStore();
  const group = new GroupCommit(store, options());
  const first = track(group.submit('a'));
  const batch = ['b', 'c', 'd'].map((r) => track(group.submit(r)));
  await store.done();
  store.down = true;
  await store.done();
  assert.equal(first.outcome, true);
  for (const r of batch) {
    assert.ok(r.outcome instanceof Error && !(r.outcome instanceof RowError));
    assert.equal(r.outcome.message, 'connection terminated');
  }
  assert.deepEqual(store.one, ['a']);
  assert.equal(store.open, 0);
  // The next rows are sent as usual: nothing is left stuck.
  store.down = false;
  const later = track(group.submit('e'));
  await store.done();
  assert.equal(later.outcome, true);
});
