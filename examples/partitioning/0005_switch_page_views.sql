-- The switch, in one transaction: the application's next query reads the
-- partitioned table under the old name (same columns, same ids). Rows
-- written since the copy's last batch are brought over under the lock. The
-- old table stays, renamed, until the contract step (0006).
LOCK TABLE page_views IN EXCLUSIVE MODE;
INSERT INTO page_views_p (id, path, viewed_at)
SELECT id, path, viewed_at FROM page_views
WHERE id > (SELECT COALESCE(max(id), 0) FROM page_views_p);
-- fleetmig-lint: ignore FM005 (a swap of names in one transaction: both tables have the same columns)
ALTER TABLE page_views RENAME TO page_views_old;
-- fleetmig-lint: ignore FM005 (the second half of the swap)
ALTER TABLE page_views_p RENAME TO page_views;
-- fleetmig-lint: ignore FM000 (the sequence now belongs to the partitioned table, so dropping the old one in 0006 keeps it)
ALTER SEQUENCE page_views_id_seq OWNED BY page_views.id;
