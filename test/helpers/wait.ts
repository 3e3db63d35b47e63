/** Waiting in tests: on a condition, polled, never for a fixed time (the benchmarks' own `waitFor`). */
export { waitFor } from '../../benchmarks/lib/wait.ts';
