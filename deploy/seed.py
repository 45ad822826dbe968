"""The compose file's one-shot seed job (also run by tests/it/deploy.rs):
creates the queues and the bucket the shipped pipelines read, sends the 100
Fetch login messages to `login-queue`, and uploads the seed worker's sample
transactions CSV to `transaction-files`, announced on `transaction-queue`.

Environment: AWS_ENDPOINT_URL, AWS_REGION (and credentials), DATA_DIR (the
folder holding fetch_login_queue_bodies.jsonl and s3/transactions.csv).
"""
import os
import time

import boto3

endpoint = os.environ["AWS_ENDPOINT_URL"]
region = os.environ.get("AWS_REGION", "us-east-1")
data = os.environ.get("DATA_DIR", "tests/data")
sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=region)
s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region)

for attempt in range(60):
    try:
        sqs.list_queues()
        break
    except Exception:  # the endpoint is still starting
        time.sleep(1)
else:
    raise SystemExit(f"no answer from {endpoint}")

logins = sqs.create_queue(QueueName="login-queue")["QueueUrl"]
lines = open(os.path.join(data, "fetch_login_queue_bodies.jsonl")).read().splitlines()
for i in range(0, len(lines), 10):
    entries = [{"Id": str(j), "MessageBody": body} for j, body in enumerate(lines[i:i + 10])]
    sqs.send_message_batch(QueueUrl=logins, Entries=entries)
print(f"sent {len(lines)} messages to login-queue")

transactions = sqs.create_queue(QueueName="transaction-queue")["QueueUrl"]
s3.create_bucket(Bucket="transaction-files")
with open(os.path.join(data, "s3", "transactions.csv"), "rb") as f:
    s3.put_object(Bucket="transaction-files", Key="transactions.csv", Body=f.read())
sqs.send_message(QueueUrl=transactions, MessageBody="s3://transaction-files/transactions.csv")
print("uploaded transactions.csv to transaction-files, announced on transaction-queue")
