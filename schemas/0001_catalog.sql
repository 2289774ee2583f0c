-- uns-bridge 0001: settings, the ISA-95 asset tree, edge nodes, devices, the metric catalog, current
-- values, lifecycle events and dead letters. Ids of catalog rows are 64-bit hashes computed by the
-- writer from the natural keys (uns_bridge.store.rows), so batches need no round trip to get them.

CREATE TABLE uns.settings (
    key   text PRIMARY KEY,
    value text
);

CREATE TABLE uns.asset (
    id        bigint PRIMARY KEY,
    parent_id bigint REFERENCES uns.asset (id) ON DELETE CASCADE,
    level     text NOT NULL,            -- enterprise, site, area, line, cell, equipment
    name      text NOT NULL,
    path      text[] NOT NULL UNIQUE    -- the non-empty level names, enterprise first
);
CREATE INDEX asset_parent ON uns.asset (parent_id);

CREATE TABLE uns.edge_node (
    id           bigint PRIMARY KEY,
    group_id     text NOT NULL,
    edge_node_id text NOT NULL,
    asset_id     bigint REFERENCES uns.asset (id) ON DELETE SET NULL,
    online       boolean NOT NULL DEFAULT false,
    bd_seq       bigint,
    last_birth   timestamptz,
    last_death   timestamptz,
    changed_at   timestamptz,           -- time of the event that set ``online``
    UNIQUE (group_id, edge_node_id)
);

CREATE TABLE uns.device (
    id         bigint PRIMARY KEY,
    node_id    bigint NOT NULL REFERENCES uns.edge_node (id) ON DELETE CASCADE,
    device_id  text NOT NULL,
    asset_id   bigint REFERENCES uns.asset (id) ON DELETE SET NULL,
    online     boolean NOT NULL DEFAULT false,
    last_birth timestamptz,
    last_death timestamptz,
    changed_at timestamptz,
    UNIQUE (node_id, device_id)
);

CREATE TABLE uns.metric (
    id            bigint PRIMARY KEY,
    node_id       bigint NOT NULL REFERENCES uns.edge_node (id) ON DELETE CASCADE,
    device_id     bigint REFERENCES uns.device (id) ON DELETE CASCADE,   -- NULL: a node metric
    name          text NOT NULL,
    datatype      smallint NOT NULL,
    datatype_name text NOT NULL,
    alias         bigint,
    unit          text,
    description   text,
    properties    jsonb,
    asset_id      bigint REFERENCES uns.asset (id) ON DELETE SET NULL,
    uns_topic     text,
    first_birth   timestamptz,
    last_birth    timestamptz,
    UNIQUE NULLS NOT DISTINCT (node_id, device_id, name)
);
CREATE INDEX metric_asset ON uns.metric (asset_id);

-- the newest value per metric (written coalesced, not per sample); quality 0 GOOD, 1 BAD, 2 STALE
CREATE TABLE uns.metric_current (
    metric_id     bigint PRIMARY KEY,
    time          timestamptz NOT NULL,
    kind          smallint NOT NULL,
    quality       smallint NOT NULL,
    is_historical boolean NOT NULL,
    v_int         bigint,
    v_float       double precision,
    v_bool        boolean,
    v_text        text,
    v_bytes       bytea,
    v_json        jsonb,
    v_floats      double precision[],
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- births, deaths, seq gaps, rebirth requests, stale transitions
CREATE TABLE uns.lifecycle (
    time         timestamptz NOT NULL,
    event        text NOT NULL,    -- node_birth node_death device_birth device_death seq_gap rebirth_request stale
    group_id     text NOT NULL,
    edge_node_id text NOT NULL,
    device_id    text,
    reason       text,
    bd_seq       bigint,
    detail       jsonb
);
CREATE UNIQUE INDEX lifecycle_identity
    ON uns.lifecycle (time, event, group_id, edge_node_id, COALESCE(device_id, ''), COALESCE(reason, ''));
CREATE INDEX lifecycle_entity ON uns.lifecycle (group_id, edge_node_id, time);

CREATE TABLE uns.dead_letter (
    id      bigserial PRIMARY KEY,
    time    timestamptz NOT NULL,
    topic   text NOT NULL,
    payload bytea,
    reason  text NOT NULL,
    kind    text
);
CREATE INDEX dead_letter_time ON uns.dead_letter (time);

-- spool tokens of committed batches (store-and-forward replays a batch at most once)
CREATE TABLE uns.delivered_batch (
    token        bigint PRIMARY KEY,
    delivered_at timestamptz NOT NULL DEFAULT now()
);
