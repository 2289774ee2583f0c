-- Example analyst queries on schema uns (run by tests/test_store_queries.py).
-- psql variables: :'asset' an asset path (levels joined by '/'), :'metric' a metric name,
-- :'line' an asset path prefix, :'since' / :'until' a time range, :'group' / :'node' an edge node.
-- e.g. psql "$UNS_DATABASE_URL" -v asset=acme/dallas/packaging/line1/filler/F1 -v metric=Motor/Speed ...

-- name: latest_value
-- the latest stored value of one tag (history), exact value and its number
SELECT time, value, value_num, quality, unit
FROM uns.samples
WHERE asset_path = :'asset' AND metric = :'metric'
ORDER BY time DESC
LIMIT 1;

-- name: current_values
-- every tag of an asset and below, as it is now (uns.current is kept up to date by the writer)
SELECT asset_path, metric, value, quality, time
FROM uns.current
WHERE asset_path = :'asset' OR asset_path LIKE :'asset' || '/%'
ORDER BY asset_path, metric;

-- name: line_window
-- a line's numeric tags over a time window (e.g. the last hour: since = now() - interval '1 hour')
SELECT asset_path, metric, time, value_num
FROM uns.samples
WHERE (asset_path = :'line' OR asset_path LIKE :'line' || '/%')
  AND time >= :'since'::timestamptz AND time < :'until'::timestamptz
  AND value_num IS NOT NULL
ORDER BY asset_path, metric, time;

-- name: per_minute
-- per-minute min / max / avg / count of one tag (on TimescaleDB uns.sample_1m holds these precomputed)
SELECT date_trunc('minute', time) AS minute, min(value_num), max(value_num), avg(value_num), count(*)
FROM uns.samples
WHERE asset_path = :'asset' AND metric = :'metric'
  AND time >= :'since'::timestamptz AND time < :'until'::timestamptz
GROUP BY 1
ORDER BY 1;

-- name: downtime
-- downtime of an edge node from its lifecycle: each death until the next birth (open: until 'until')
SELECT d.time AS went_down,
       b.time AS came_back,
       COALESCE(b.time, :'until'::timestamptz) - d.time AS downtime,
       d.reason
FROM uns.lifecycle d
LEFT JOIN LATERAL (
    SELECT min(x.time) AS time FROM uns.lifecycle x
    WHERE x.event = 'node_birth' AND x.group_id = d.group_id AND x.edge_node_id = d.edge_node_id
      AND x.time > d.time
) b ON true
WHERE d.event = 'node_death' AND d.group_id = :'group' AND d.edge_node_id = :'node'
  AND d.time >= :'since'::timestamptz AND d.time < :'until'::timestamptz
ORDER BY d.time;

-- name: seq_gaps
-- seq gaps and rebirth requests per edge node
SELECT group_id, edge_node_id, event, count(*), max(time) AS last
FROM uns.lifecycle
WHERE event IN ('seq_gap', 'rebirth_request')
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;

-- name: dead_letters
-- what could not be stored or decoded, newest first
SELECT time, topic, reason, kind, length(payload) AS bytes
FROM uns.dead_letter
WHERE time >= :'since'::timestamptz
ORDER BY time DESC;
