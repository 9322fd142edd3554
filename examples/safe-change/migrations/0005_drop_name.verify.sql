-- Must return no rows: every user kept a full name.
SELECT id FROM users WHERE full_name IS NULL OR full_name = ''
