-- uns-bridge 0003: value functions and the stable analyst views uns.samples, uns.current, uns.metrics.

CREATE FUNCTION uns.jfloat(f double precision) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN f IS NULL THEN NULL
        WHEN f = 'NaN'::float8 THEN '"NaN"'::jsonb
        WHEN f = 'Infinity'::float8 THEN '"Infinity"'::jsonb
        WHEN f = '-Infinity'::float8 THEN '"-Infinity"'::jsonb
        ELSE to_jsonb(f)
    END
$$;

-- the exact value as jsonb (see the kind table in uns_bridge/store/values.py)
CREATE FUNCTION uns.value_json(
    kind smallint, v_int bigint, v_float double precision, v_bool boolean, v_text text,
    v_bytes bytea, v_json jsonb, v_floats double precision[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE kind
        WHEN 0 THEN 'null'::jsonb
        WHEN 1 THEN to_jsonb(v_int)
        WHEN 2 THEN to_jsonb(v_int::numeric + 18446744073709551616)
        WHEN 3 THEN uns.jfloat(v_float)
        WHEN 4 THEN to_jsonb(v_bool)
        WHEN 5 THEN to_jsonb(v_text)
        WHEN 6 THEN to_jsonb(translate(encode(v_bytes, 'base64'), E'\n', ''))
        WHEN 8 THEN COALESCE(
            (SELECT jsonb_agg(uns.jfloat(x) ORDER BY i) FROM unnest(v_floats) WITH ORDINALITY AS u (x, i)),
            '[]'::jsonb)
        ELSE v_json
    END
$$;

CREATE FUNCTION uns.value_num(kind smallint, v_int bigint, v_float double precision, v_bool boolean)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE kind
        WHEN 1 THEN v_int::double precision
        WHEN 2 THEN (v_int::numeric + 18446744073709551616)::double precision
        WHEN 3 THEN v_float
        WHEN 4 THEN v_bool::integer::double precision
    END
$$;

CREATE FUNCTION uns.quality_name(quality smallint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE quality WHEN 0 THEN 'GOOD' WHEN 1 THEN 'BAD' ELSE 'STALE' END
$$;

CREATE VIEW uns.metrics AS
SELECT m.id AS metric_id,
       array_to_string(a.path, '/') AS asset_path,
       a.path AS asset_levels,
       n.group_id, n.edge_node_id, d.device_id,
       m.name AS metric, m.datatype_name AS datatype, m.unit, m.description, m.properties,
       m.alias, m.uns_topic, m.first_birth, m.last_birth
FROM uns.metric m
JOIN uns.edge_node n ON n.id = m.node_id
LEFT JOIN uns.device d ON d.id = m.device_id
LEFT JOIN uns.asset a ON a.id = m.asset_id;

CREATE VIEW uns.samples AS
SELECT s.time,
       array_to_string(a.path, '/') AS asset_path,
       n.group_id, n.edge_node_id, d.device_id,
       m.name AS metric, m.datatype_name AS datatype, m.unit,
       uns.value_json(s.kind, s.v_int, s.v_float, s.v_bool, s.v_text, s.v_bytes, s.v_json, s.v_floats) AS value,
       uns.value_num(s.kind, s.v_int, s.v_float, s.v_bool) AS value_num,
       uns.quality_name(s.quality) AS quality,
       s.is_historical,
       m.uns_topic, s.metric_id, a.path AS asset_levels
FROM uns.sample s
JOIN uns.metric m ON m.id = s.metric_id
JOIN uns.edge_node n ON n.id = m.node_id
LEFT JOIN uns.device d ON d.id = m.device_id
LEFT JOIN uns.asset a ON a.id = m.asset_id;

CREATE VIEW uns.current AS
SELECT c.time,
       array_to_string(a.path, '/') AS asset_path,
       n.group_id, n.edge_node_id, d.device_id,
       m.name AS metric, m.datatype_name AS datatype, m.unit,
       uns.value_json(c.kind, c.v_int, c.v_float, c.v_bool, c.v_text, c.v_bytes, c.v_json, c.v_floats) AS value,
       uns.value_num(c.kind, c.v_int, c.v_float, c.v_bool) AS value_num,
       uns.quality_name(c.quality) AS quality,
       c.is_historical, c.updated_at,
       m.uns_topic, c.metric_id, a.path AS asset_levels
FROM uns.metric_current c
JOIN uns.metric m ON m.id = c.metric_id
JOIN uns.edge_node n ON n.id = m.node_id
LEFT JOIN uns.device d ON d.id = m.device_id
LEFT JOIN uns.asset a ON a.id = m.asset_id;
