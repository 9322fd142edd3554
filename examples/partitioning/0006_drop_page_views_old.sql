-- fleetmig: phase=contract
-- Contract: the old table goes only once every tenant has switched and the
-- operator says the application no longer needs it (--allow-contract).
DROP TABLE page_views_old;
