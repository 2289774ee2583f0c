-- uns-bridge 0002: the narrow sample table. The migration runner sets ``uns.storage`` to
-- 'timescaledb' (a hypertable) or 'native' (range partitions by time, created on demand and ahead,
-- dropped by retention). Key (metric_id, time, vhash): a replay stores a sample once, two different
-- values of one metric at the same millisecond are both kept (see uns_bridge/store/values.py).

DO $migration$
DECLARE
    columns text := $cols$
        time          timestamptz NOT NULL,
        metric_id     bigint NOT NULL,
        vhash         bigint NOT NULL,
        kind          smallint NOT NULL,
        quality       smallint NOT NULL DEFAULT 0,
        is_historical boolean NOT NULL DEFAULT false,
        v_int         bigint,
        v_float       double precision,
        v_bool        boolean,
        v_text        text,
        v_bytes       bytea,
        v_json        jsonb,
        v_floats      double precision[],
        PRIMARY KEY (metric_id, time, vhash)
    $cols$;
BEGIN
    IF current_setting('uns.storage') = 'timescaledb' THEN
        EXECUTE 'CREATE TABLE uns.sample (' || columns || ')';
        EXECUTE format(
            'SELECT create_hypertable(%L, %L, chunk_time_interval => %L::interval)',
            'uns.sample', 'time',
            '1 ' || (SELECT value FROM uns.settings WHERE key = 'partition_interval'));
    ELSE
        EXECUTE 'CREATE TABLE uns.sample (' || columns || ') PARTITION BY RANGE (time)';
    END IF;
END
$migration$;

CREATE INDEX sample_time ON uns.sample (time);

-- native partitions: which exist (maintained by the functions below)
CREATE TABLE uns.sample_partition (
    name text PRIMARY KEY,
    lo   timestamptz NOT NULL,
    hi   timestamptz NOT NULL
);

-- the partition that ``ts`` belongs to, with the configured interval (UTC), before gaps are considered
CREATE FUNCTION uns.partition_bounds(ts timestamptz, OUT lo timestamptz, OUT hi timestamptz)
LANGUAGE sql STABLE SET TimeZone = 'UTC' AS $$
    SELECT date_trunc(s.value, ts), date_trunc(s.value, ts) + ('1 ' || s.value)::interval
    FROM uns.settings s WHERE s.key = 'partition_interval'
$$;

-- create (if missing) a partition covering each of ``stamps``; returns the covering ranges.
-- A range that overlaps partitions of an earlier interval setting is clipped to the gap between them.
CREATE FUNCTION uns.ensure_partitions(stamps timestamptz[])
RETURNS TABLE (lo timestamptz, hi timestamptz)
LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
DECLARE
    t timestamptz;
    b record;
    found_lo timestamptz;
    found_hi timestamptz;
    part text;
BEGIN
    IF (SELECT value FROM uns.settings WHERE key = 'storage') IS DISTINCT FROM 'native' THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('uns.sample partitions'));
    FOR t IN SELECT DISTINCT x FROM unnest(stamps) x WHERE x IS NOT NULL LOOP
        SELECT p.lo, p.hi INTO found_lo, found_hi FROM uns.sample_partition p WHERE p.lo <= t AND t < p.hi;
        IF found_lo IS NULL THEN
            SELECT * INTO b FROM uns.partition_bounds(t);
            found_lo := greatest(b.lo, (SELECT max(p.hi) FROM uns.sample_partition p WHERE p.hi <= t));
            found_hi := least(b.hi, (SELECT min(p.lo) FROM uns.sample_partition p WHERE p.lo > t));
            part := 'sample_p' || to_char(found_lo, 'YYYYMMDD"T"HH24MI');
            EXECUTE format('CREATE TABLE uns.%I PARTITION OF uns.sample FOR VALUES FROM (%L) TO (%L)',
                           part, found_lo, found_hi);
            INSERT INTO uns.sample_partition VALUES (part, found_lo, found_hi);
        END IF;
        lo := found_lo;
        hi := found_hi;
        RETURN NEXT;
        found_lo := NULL;
    END LOOP;
END
$$;

-- drop native partitions entirely older than the retention; returns the dropped names
CREATE FUNCTION uns.apply_retention(now_ts timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
DECLARE
    days integer := (SELECT value::integer FROM uns.settings WHERE key = 'retention_days');
    part record;
BEGIN
    IF days IS NULL OR (SELECT value FROM uns.settings WHERE key = 'storage') IS DISTINCT FROM 'native' THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('uns.sample partitions'));
    FOR part IN
        SELECT p.name FROM uns.sample_partition p WHERE p.hi <= now_ts - make_interval(days => days) ORDER BY p.lo
    LOOP
        EXECUTE format('DROP TABLE IF EXISTS uns.%I', part.name);
        DELETE FROM uns.sample_partition p WHERE p.name = part.name;
        RETURN NEXT part.name;
    END LOOP;
END
$$;
