-- Customers kept equal to the files under s3://landing-zone/customers/
-- (pipelines/customers.toml, reconcile mode). `source_file` names the
-- object each row came from: replacing or removing a file replaces or
-- removes exactly its rows.
CREATE TABLE IF NOT EXISTS public.customers (
    customer_id      bigint       NOT NULL,
    zipcode          varchar(10),
    city             varchar(100),
    state_code       varchar(2),
    datetime_created timestamp,
    datetime_updated timestamp,
    source_file      text         NOT NULL
);
CREATE INDEX IF NOT EXISTS customers_source_file ON public.customers (source_file);
