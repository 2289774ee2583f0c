-- uns-bridge 0004: keep ingest cheap. The sample key (metric_id, time, vhash) serves every per-metric
-- query and partitions (or chunks) prune by time; a second index on time alone doubled the index work
-- of each inserted sample without serving the analyst queries.
DROP INDEX IF EXISTS uns.sample_time;
