//! The peers bench's faucet-stream runner: faucet-stream 1.0.2's S3 source
//! (JSON lines) into its PostgreSQL sink (AutoMap: top-level keys to the
//! table's columns, multi-row INSERTs), through its `Pipeline`. No
//! transform. Everything comes from the environment (run.py sets it):
//! PEERS_S3_ENDPOINT, PEERS_BUCKET, PEERS_PREFIX, DATABASE_URL,
//! PEERS_SCHEMA, PEERS_TABLE, and optionally PEERS_SOURCE_BATCH,
//! PEERS_SINK_BATCH, PEERS_SINK_CONNECTIONS. Credentials and region come
//! from the standard AWS variables. Prints the records written.

use faucet_stream::sink::postgres::{PostgresColumnMapping, PostgresSink, PostgresSinkConfig};
use faucet_stream::source::s3::{S3FileFormat, S3Source, S3SourceConfig};
use faucet_stream::Pipeline;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().map(|v| v.parse().expect(name)).unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = S3Source::new(
        S3SourceConfig::new(var("PEERS_BUCKET"))
            .prefix(var("PEERS_PREFIX"))
            .region(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()))
            .endpoint_url(var("PEERS_S3_ENDPOINT"))
            .file_format(S3FileFormat::JsonLines)
            .with_batch_size(num("PEERS_SOURCE_BATCH", 10_000)),
    )
    .await?;
    let sink = PostgresSink::new(
        PostgresSinkConfig::new(var("DATABASE_URL"), var("PEERS_TABLE"))
            .with_schema(var("PEERS_SCHEMA"))
            .column_mapping(PostgresColumnMapping::AutoMap)
            .with_batch_size(num("PEERS_SINK_BATCH", 1_000))
            .max_connections(num("PEERS_SINK_CONNECTIONS", 5) as u32),
    )
    .await?;
    let result = Pipeline::new(&source, &sink).run().await?;
    println!("{}", result.records_written);
    Ok(())
}
