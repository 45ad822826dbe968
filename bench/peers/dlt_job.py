"""The peers bench's dlt job, run by run.py as a child process (timed whole,
imports included).

Reads the JSON-lines object with dlt's filesystem source (`read_jsonl`,
s3fs against the S3 endpoint, or a local file) and loads it into
PostgreSQL with dlt's fast settings: the `csv` loader file format (COPY),
intermediate files of 100,000 rows so that normalize (2 worker processes)
and load (4 worker threads) run in parallel.

PEERS_VARIANT=transform applies the logins chain in Python (what the host's
flatten, app-version and mask steps do to these records) with `add_map`;
PEERS_VARIANT=raw loads the records as they are.

Environment (set by run.py): PEERS_VARIANT, PEERS_SOURCE (s3 or a local
path), PEERS_S3_ENDPOINT, PEERS_BUCKET, PEERS_PREFIX, PEERS_DB_URL,
PEERS_SCHEMA, PEERS_TABLE, PEERS_DLT_DIR, PEERS_DLT_READER. Prints dlt's load info.
"""

import datetime
import hashlib
import io
import os
import sys

# dlt reads its settings from the environment; set before it is imported.
os.environ.setdefault("NORMALIZE__WORKERS", "2")
os.environ.setdefault("LOAD__WORKERS", "4")
os.environ.setdefault("DATA_WRITER__FILE_MAX_ITEMS", "100000")
os.environ.setdefault("DATA_WRITER__BUFFER_MAX_ITEMS", "10000")
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")

import dlt  # noqa: E402
from dlt.common.configuration.specs import AwsCredentials  # noqa: E402
from dlt.common import json  # noqa: E402
from dlt.sources.filesystem import filesystem, read_jsonl  # noqa: E402

@dlt.transformer(standalone=True)
def read_jsonl_buffered(items, chunksize: int = 10_000):
    """dlt's `read_jsonl`, with the file read through an 8 MiB
    io.BufferedReader. The stock reader iterates the fsspec file itself,
    whose readline reads a whole block (5 MiB for s3fs) for every line and
    seeks back: 100,000 rows from moto took 26 s instead of 3.6 s (raw)."""
    for file_obj in items:
        with file_obj.open() as raw:
            lines = io.BufferedReader(raw, buffer_size=8 << 20)
            chunk = []
            for line in lines:
                chunk.append(json.loadb(line))
                if len(chunk) >= chunksize:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk


REQUIRED = ("user_id", "app_version", "device_type", "ip", "locale", "device_id")


def major(text):
    """`app-version`: the major version of a dotted decimal version text."""
    if not isinstance(text, str) or not text:
        raise ValueError("`app_version` is not a version")
    parts = text.split(".")
    if not all(p.isdigit() and p.isascii() for p in parts):
        raise ValueError("`app_version` is not a version")
    return int(parts[0])


def mask(value):
    """`mask` with sha256: lowercase hex digest of the UTF-8 bytes; null stays null."""
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()


def logins_chain(today):
    def transform(record):
        missing = [f for f in REQUIRED if f not in record]
        if missing:
            raise ValueError("missing required fields: " + ", ".join(missing))
        # flatten (separator "_"): these records have no nested objects, so
        # it only checks; dlt's normalizer would also flatten with "__".
        flat = {}
        for k, v in record.items():
            if isinstance(v, dict):
                for k2, v2 in v.items():
                    flat[f"{k}_{k2}"] = v2
            else:
                flat[k] = v
        return {
            "user_id": flat["user_id"],
            "device_type": flat["device_type"],
            "masked_ip": mask(flat["ip"]),
            "masked_device_id": mask(flat["device_id"]),
            "locale": flat["locale"],
            "app_version": major(flat["app_version"]),
            "create_date": today,
        }

    return transform


def main():
    variant = os.environ["PEERS_VARIANT"]
    source = os.environ["PEERS_SOURCE"]
    if source == "s3":
        files = filesystem(
            bucket_url=f"s3://{os.environ['PEERS_BUCKET']}/{os.environ['PEERS_PREFIX'].rstrip('/')}",
            file_glob="*.jsonl",
            credentials=AwsCredentials(
                aws_access_key_id="test",
                aws_secret_access_key="test",
                region_name="us-east-1",
                endpoint_url=os.environ["PEERS_S3_ENDPOINT"],
            ),
        )
    else:
        folder, name = os.path.split(os.path.abspath(source))
        files = filesystem(bucket_url=f"file://{folder}", file_glob=name)
    table = os.environ["PEERS_TABLE"]
    # PEERS_DLT_READER=stock: dlt's own read_jsonl (slow over s3fs, see above).
    reader = read_jsonl if os.environ.get("PEERS_DLT_READER") == "stock" else read_jsonl_buffered
    rows = (files | reader(chunksize=10_000)).with_name(table)
    if variant == "transform":
        rows.add_map(logins_chain(datetime.date.today()))
        rows.apply_hints(
            columns={
                "app_version": {"data_type": "bigint"},
                "create_date": {"data_type": "date"},
            }
        )
    elif variant != "raw":
        sys.exit(f"PEERS_VARIANT must be transform or raw, not {variant!r}")
    pipeline = dlt.pipeline(
        pipeline_name=f"peers_{os.environ['PEERS_SCHEMA']}_{variant}",
        pipelines_dir=os.environ["PEERS_DLT_DIR"],
        destination=dlt.destinations.postgres(credentials=os.environ["PEERS_DB_URL"]),
        dataset_name=os.environ["PEERS_SCHEMA"],
    )
    info = pipeline.run(rows, loader_file_format="csv", write_disposition="append")
    info.raise_on_failed_jobs()
    print(info)


if __name__ == "__main__":
    main()
