-- Batched backfill: each run changes at most :batch_size rows in its own short
-- transaction; fleetmig repeats it until it changes nothing, with a checkpoint
-- in the state store (a killed run resumes where it stopped).
-- fleetmig: batch size=500 pause=10ms
UPDATE accounts SET display_name = name
WHERE id IN (SELECT id FROM (SELECT id FROM accounts WHERE display_name IS NULL ORDER BY id LIMIT :batch_size) AS todo);
