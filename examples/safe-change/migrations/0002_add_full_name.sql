-- Expand: a nullable column the running application can ignore.
-- fleetmig: phase=expand
ALTER TABLE users ADD COLUMN full_name VARCHAR(200);
