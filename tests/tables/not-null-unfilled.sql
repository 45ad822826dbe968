CREATE TABLE items (id integer, name text, region text NOT NULL, made timestamptz NOT NULL DEFAULT now());
