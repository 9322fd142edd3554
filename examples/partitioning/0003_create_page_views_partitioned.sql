-- Expand: the partitioned twin of page_views, beside it. It shares the old
-- table's id sequence, so ids stay unique across the switch.
CREATE TABLE page_views_p (
    id bigint NOT NULL DEFAULT nextval('page_views_id_seq'),
    path text NOT NULL,
    viewed_at timestamptz NOT NULL,
    PRIMARY KEY (id, viewed_at)
) PARTITION BY RANGE (viewed_at);
CREATE TABLE page_views_y2026m01 PARTITION OF page_views_p FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
CREATE TABLE page_views_y2026m02 PARTITION OF page_views_p FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
CREATE TABLE page_views_y2026m03 PARTITION OF page_views_p FOR VALUES FROM ('2026-03-01') TO ('2026-04-01');
CREATE TABLE page_views_y2026m04 PARTITION OF page_views_p FOR VALUES FROM ('2026-04-01') TO ('2026-05-01');
CREATE TABLE page_views_y2026m05 PARTITION OF page_views_p FOR VALUES FROM ('2026-05-01') TO ('2026-06-01');
CREATE TABLE page_views_y2026m06 PARTITION OF page_views_p FOR VALUES FROM ('2026-06-01') TO ('2026-07-01');
CREATE TABLE page_views_default PARTITION OF page_views_p DEFAULT;
CREATE INDEX page_views_p_path ON page_views_p (path);
