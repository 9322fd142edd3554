-- A plain table with history in it: the one 0003-0006 convert to a
-- partitioned table. (The sample rows stand in for what an application
-- wrote: January to April 2026, and a few older ones.)
CREATE TABLE page_views (
    id bigserial PRIMARY KEY,
    path text NOT NULL,
    viewed_at timestamptz NOT NULL
);
INSERT INTO page_views (path, viewed_at)
SELECT '/p/' || (g % 97), timestamptz '2026-01-01 00:00+00' + (g * interval '17 minutes')
FROM generate_series(0, 9999) AS g;
INSERT INTO page_views (path, viewed_at)
SELECT '/old/' || g, timestamptz '2025-06-01 00:00+00' + (g * interval '1 day')
FROM generate_series(0, 49) AS g;
