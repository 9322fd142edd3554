-- fleetmig: batch size=2000 pause=20ms
-- The copy, in keyset order, :batch_size rows per short transaction: each
-- batch takes the rows past the highest id copied so far. A killed run
-- resumes where it stopped (the checkpoint is the data itself). Rows the
-- application writes meanwhile have higher ids and are picked up by later
-- batches; the verification (0004_copy_page_views.verify.sql) compares the
-- counts in the last batch's transaction.
INSERT INTO page_views_p (id, path, viewed_at)
SELECT id, path, viewed_at FROM page_views
WHERE id > (SELECT COALESCE(max(id), 0) FROM page_views_p)
ORDER BY id
LIMIT :batch_size;
