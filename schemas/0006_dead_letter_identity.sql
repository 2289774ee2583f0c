-- uns-bridge 0006: a replayed capture must not store the same dead letter twice (same time, topic,
-- payload and reason); the writer inserts with ON CONFLICT DO NOTHING.
DELETE FROM uns.dead_letter d USING uns.dead_letter e
WHERE d.id > e.id AND d.time = e.time AND d.topic = e.topic AND d.reason = e.reason
  AND d.payload IS NOT DISTINCT FROM e.payload;
CREATE UNIQUE INDEX dead_letter_identity
    ON uns.dead_letter (time, md5(topic), md5(COALESCE(payload, ''::bytea)), md5(reason));
