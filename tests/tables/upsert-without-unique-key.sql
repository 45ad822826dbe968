CREATE TABLE items (id integer, name text, CONSTRAINT items_id UNIQUE (id) DEFERRABLE);
