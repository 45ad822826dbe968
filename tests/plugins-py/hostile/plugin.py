"""`py-hostile`: a Python plugin that misbehaves on purpose, for the
sandbox tests. With `mode` it does one bad thing on records that have the
field `trigger` names (or on every record without `trigger`), and passes
the others through; modes that observe the sandbox emit what they saw in
the field `seen`."""

import os
import time
from dataclasses import dataclass
from typing import Optional

import etl_plugin as etl


@dataclass
class Params:
    mode: str
    trigger: Optional[str] = None
    port: int = 0


@etl.plugin(name="py-hostile", version="0.1.0", summary="Misbehaves on purpose (sandbox tests)", params=Params)
class Hostile:
    def __init__(self, p: Params):
        self.p = p
        if p.mode == "configure-fails":
            raise ValueError("configure failed on purpose")

    def transform(self, record):
        p = self.p
        if p.trigger is not None and p.trigger not in record:
            return record
        if p.mode == "loop":
            while True:
                pass
        if p.mode == "alloc":
            hoard = []
            while True:
                hoard.append(bytearray(16 << 20))
        if p.mode == "sleep":
            time.sleep(5)
        if p.mode == "exit":
            raise SystemExit(3)
        if p.mode == "read-file":
            try:
                with open("/etc/hostname") as f:
                    f.read()
                record["seen"] = "file=true"
            except OSError as e:
                record["seen"] = f"file=false:{type(e).__name__}"
        elif p.mode == "list-dir":
            try:
                record["seen"] = f"entries={len(os.listdir('/'))}"
            except OSError as e:
                record["seen"] = f"dir=false:{type(e).__name__}"
        elif p.mode == "connect":
            try:
                import socket

                socket.create_connection(("127.0.0.1", p.port), timeout=1).close()
                record["seen"] = "connect=true"
            except Exception as e:  # noqa: BLE001 - ImportError or OSError, both a refusal
                record["seen"] = f"connect=false:{type(e).__name__}"
        elif p.mode == "read-env":
            record["seen"] = f"env={len(os.environ)}"
        elif p.mode == "clock":
            record["seen"] = f"clock={int(time.time())}"
        return record
