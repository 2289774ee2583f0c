-- uns-bridge 0005: let PostgreSQL inline uns.value_json into the views (a non-inlined SQL function cost
-- tens of microseconds per row). to_jsonb is STABLE, so an IMMUTABLE wrapper is never inlined: the value
-- functions are STABLE; the float-array case (a sub-SELECT) moves to a function of its own.

CREATE OR REPLACE FUNCTION uns.jfloat(f double precision) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN f IS NULL THEN NULL
        WHEN f = 'NaN'::float8 THEN '"NaN"'::jsonb
        WHEN f = 'Infinity'::float8 THEN '"Infinity"'::jsonb
        WHEN f = '-Infinity'::float8 THEN '"-Infinity"'::jsonb
        ELSE to_jsonb(f)
    END
$$;

CREATE FUNCTION uns.jfloats(v double precision[]) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT COALESCE(
        (SELECT jsonb_agg(uns.jfloat(x) ORDER BY i) FROM unnest(v) WITH ORDINALITY AS u (x, i)),
        '[]'::jsonb)
$$;

CREATE OR REPLACE FUNCTION uns.value_json(
    kind smallint, v_int bigint, v_float double precision, v_bool boolean, v_text text,
    v_bytes bytea, v_json jsonb, v_floats double precision[]) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE kind
        WHEN 0 THEN 'null'::jsonb
        WHEN 1 THEN to_jsonb(v_int)
        WHEN 2 THEN to_jsonb(v_int::numeric + 18446744073709551616)
        WHEN 3 THEN uns.jfloat(v_float)
        WHEN 4 THEN to_jsonb(v_bool)
        WHEN 5 THEN to_jsonb(v_text)
        WHEN 6 THEN to_jsonb(translate(encode(v_bytes, 'base64'), E'\n', ''))
        WHEN 8 THEN uns.jfloats(v_floats)
        ELSE v_json
    END
$$;
