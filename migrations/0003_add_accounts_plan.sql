-- Expand: a nullable column that old application code can ignore.
ALTER TABLE accounts ADD COLUMN plan VARCHAR(32);
