-- The seed worker's table, loaded from CSV files announced by S3
-- notifications (pipelines/transactions.toml): delete-insert on `id`.
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
