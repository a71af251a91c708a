"""Runs SQL in an embedded ClickHouse (chDB, PyPI `chdb-core`) for peer/tests/clickhouse_kafka.rs.

Reads one JSON object on stdin:
  {"db": DIR, "schemas": DIR, "setup": [SQL, ...],
   "wait": {"query": SQL, "want": N, "timeout_s": S, "settle_s": S},
   "dumps": [{"query": SQL, "format": FORMAT, "path": FILE}, ...]}
runs the setup statements, polls `wait.query` (one number) until it reaches `want`, waits
`settle_s` more (so duplicates would show), then writes each dump's result to its file. The
engine stays up the whole time, so Kafka tables consume in the background. On a timeout it
prints the last count and system.kafka_consumers and exits 1.
"""

import ctypes
import importlib.machinery
import importlib.util
import json
import os
import sys
import time
import types


def load_chdb():
    """chDB's extension module, without running the `chdb` package's __init__: that opens and
    closes a throwaway connection at import, which shuts ClickHouse's global thread pool down,
    and a Kafka table created on any later connection then fails with "Shutdown was called"
    (chdb-core 26.9.0)."""
    spec = importlib.util.find_spec("chdb")
    if spec is None:
        sys.exit("python module chdb not found: pip install --no-deps chdb-core")
    pkg_dir = os.path.dirname(spec.origin)
    so = os.path.join(pkg_dir, "_chdb.abi3.so")
    package = types.ModuleType("chdb")
    package.__path__ = [pkg_dir]
    sys.modules["chdb"] = package
    # As chdb's __init__ does: resolve its allocator symbols inside the library.
    rtld_deepbind = 0x8
    ctypes.CDLL(so, mode=sys.getdlopenflags() | rtld_deepbind)
    loader = importlib.machinery.ExtensionFileLoader("chdb._chdb", so)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("chdb._chdb", loader))
    loader.exec_module(module)
    return module


def main():
    job = json.load(sys.stdin)
    chdb = load_chdb()
    # Embedded, ClickHouse looks for format schemas in the working directory (clickhouse-local's
    # rule; a `format_schema_path` startup setting shows in system.server_settings but is not
    # used), where a server looks in its `format_schema_path`.
    os.chdir(job["schemas"])
    conn = chdb.connect(f"file:{job['db']}")

    def query(sql, fmt="TSV"):
        return conn.query(sql, fmt).bytes()

    for sql in job["setup"]:
        query(sql)
    wait = job["wait"]
    deadline = time.monotonic() + wait["timeout_s"]
    while True:
        got = int(query(wait["query"]).decode().strip())
        if got >= wait["want"]:
            break
        if time.monotonic() > deadline:
            consumers = query("SELECT * FROM system.kafka_consumers FORMAT Vertical").decode()
            sys.exit(f"timed out: {got} of {wait['want']}\n{consumers}")
        time.sleep(0.2)
    time.sleep(wait["settle_s"])
    for dump in job["dumps"]:
        with open(dump["path"], "wb") as out:
            out.write(query(dump["query"], dump["format"]))
    conn.close()


if __name__ == "__main__":
    main()
