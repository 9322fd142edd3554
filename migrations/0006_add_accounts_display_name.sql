-- Expand: a nullable column that the running application can ignore.
-- fleetmig: phase=expand
ALTER TABLE accounts ADD COLUMN display_name VARCHAR(200);
