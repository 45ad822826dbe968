-- The tables of the example pipelines in this folder. The host makes only
-- its own tables (`host migrate`: schema etl); a pipeline's table is its
-- owner's. Apply this with
--
--     psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f pipelines/tables.sql
--
-- (`cargo xtask demo` does, and docker-compose.yml's postgres runs it when it
-- first starts). `host check --db PIPELINE` compares a pipeline with its
-- table; `host sink ddl PIPELINE` prints a CREATE TABLE to start from.

-- logins.toml and logins-keyed.toml: the Fetch login table, exactly as the
-- seeds had it.
CREATE TABLE IF NOT EXISTS user_logins(
    user_id varchar(128), device_type varchar(32),
    masked_ip varchar(256), masked_device_id varchar(256),
    locale varchar(32), app_version integer, create_date date);

-- transactions.toml: the seed worker's table, loaded from CSV files
-- announced by S3 notifications: delete-insert on `id`.
CREATE TABLE IF NOT EXISTS public.transactions (
    id                 integer PRIMARY KEY,
    property_address   varchar(5000),
    buyer              varchar(100),
    seller             varchar(100),
    transaction_date   date,
    property_id        integer NOT NULL,
    property_type      varchar(10),
    transaction_amount decimal(20,1),
    loan_amount        decimal(20,1),
    lender             varchar(100),
    sqft               integer,
    year_built         integer
);

-- customers.toml and customers-sftp.toml: customers kept equal to the files
-- under a prefix (reconcile mode). `source_file` names the object each row
-- came from: replacing or removing a file replaces or removes exactly its
-- rows.
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
