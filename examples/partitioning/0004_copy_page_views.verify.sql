SELECT (SELECT count(*) FROM page_views) = (SELECT count(*) FROM page_views_p)
   AND (SELECT COALESCE(max(id), 0) FROM page_views) = (SELECT COALESCE(max(id), 0) FROM page_views_p);
