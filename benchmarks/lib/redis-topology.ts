/**
 * Replicated Redis topologies on 127.0.0.1 for the tests and the benchmarks, built from the private redis-server of
 * redis-server.ts: a Sentinel group (redis-sentinel.ts) and a Cluster (redis-cluster.ts), each with the failovers a
 * test needs to provoke.
 */
export { type ClusterOptions, RedisCluster, startCluster } from './redis-cluster.ts';
export { SentinelGroup, type SentinelGroupOptions, startSentinelGroup } from './redis-sentinel.ts';
export type { Address } from './redis-server.ts';
