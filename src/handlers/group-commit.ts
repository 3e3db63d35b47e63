/**
 * Group commit: the rows of jobs that run at the same time reach the database together, one multi-row statement (one
 * commit) instead of one each.
 *
 * Input: `submit(row)`, once per job. A statement starts at once when fewer than `statements` are in flight; the rows
 * submitted while they run wait and go together in the next one, at most `maxRows` rows and, past the first row,
 * about `maxBytes`. No timer: a row never waits for company, only for a statement in flight to end.
 * Output: each `submit` settles with its own row's outcome, once the statement holding it has returned (committed):
 * `true` stored by it, `false` already there (a conflict on a unique key, absorbed).
 * Failures: when the multi-row statement fails with an error `isRowError` accepts (one row's data may be the cause),
 * each row of that batch is inserted again on its own, so only the faulty row's job gets an error; any other failure
 * (connection lost, server shutting down, deadlock) rejects every job of the batch with it, so that each is retried.
 */

export interface RowStore<Row> {
  /** Inserts the rows in one statement, all or none; for each row, whether this statement stored it. */
  insertMany(rows: readonly Row[]): Promise<boolean[]>;
  /** Inserts one row; whether it was stored (false: already there). */
  insertOne(row: Row): Promise<boolean>;
  /** Whether a failure of `insertMany` may come from one row's data, so that rows on their own would tell which. */
  isRowError(err: unknown): boolean;
}

export interface GroupCommitOptions<Row> {
  /** Statements in flight at most (each holds one connection). */
  statements: number;
  /** Rows per statement at most. */
  maxRows: number;
  /** Size of a batch at most (by `sizeOf`), except that a batch always takes its first row. */
  maxBytes: number;
  sizeOf(row: Row): number;
}

interface Pending<Row> {
  row: Row;
  resolve(stored: boolean): void;
  reject(err: unknown): void;
}

export class GroupCommit<Row> {
  readonly #store: RowStore<Row>;
  readonly #opts: GroupCommitOptions<Row>;
  #waiting: Pending<Row>[] = [];
  #inFlight = 0;

  constructor(store: RowStore<Row>, opts: GroupCommitOptions<Row>) {
    this.#store = store;
    this.#opts = opts;
  }

  /** Stores the row with whatever else is waiting; settles once its statement has returned. */
  submit(row: Row): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      this.#waiting.push({ row, resolve, reject });
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#inFlight < this.#opts.statements && this.#waiting.length > 0) {
      const batch = this.#take();
      this.#inFlight++;
      void this.#run(batch).finally(() => {
        this.#inFlight--;
        this.#pump();
      });
    }
  }

  /** The next batch, oldest rows first. */
  #take(): Pending<Row>[] {
    const { maxRows, maxBytes, sizeOf } = this.#opts;
    let n = 0;
    let bytes = 0;
    while (n < this.#waiting.length && n < maxRows) {
      bytes += sizeOf((this.#waiting[n] as Pending<Row>).row);
      if (n > 0 && bytes > maxBytes) break;
      n++;
    }
    return this.#waiting.splice(0, n);
  }

  async #run(batch: Pending<Row>[]): Promise<void> {
    if (batch.length === 1) return this.#one(batch[0] as Pending<Row>);
    let stored: boolean[];
    try {
      stored = await this.#store.insertMany(batch.map((p) => p.row));
    } catch (err) {
      if (!this.#store.isRowError(err)) {
        for (const p of batch) p.reject(err);
        return;
      }
      // The statement stored nothing: each row again on its own, so that one bad row fails only its own job.
      await Promise.all(batch.map((p) => this.#one(p)));
      return;
    }
    for (const [i, p] of batch.entries()) p.resolve(stored[i] === true);
  }

  async #one(p: Pending<Row>): Promise<void> {
    try {
      p.resolve(await this.#store.insertOne(p.row));
    } catch (err) {
      p.reject(err);
    }
  }
}
