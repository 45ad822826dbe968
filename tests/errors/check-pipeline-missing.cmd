check errors/no-such-pipeline.toml
