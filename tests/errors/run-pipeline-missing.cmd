run errors/no-such-pipeline.toml
