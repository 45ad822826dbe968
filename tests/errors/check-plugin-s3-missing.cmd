AWS_ENDPOINT_URL=$ENDPOINT check errors/plugin-s3-missing.toml
