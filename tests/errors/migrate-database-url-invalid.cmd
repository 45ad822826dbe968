DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres?port=x migrate ../pipelines/logins.toml
