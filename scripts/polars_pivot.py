#!/usr/bin/env python3
"""The ConnectorX + polars anchor of scripts/bench-pivot.sh: reads the narrow
readings with ConnectorX, pivots each ship with polars (one `pivot` per
value format, max of duplicates, joined on created_time, columns in
channel order), and writes each wide table to PostgreSQL with COPY (CSV
through psql). Usage: polars_pivot.py SRC_URL DST_URL SCHEMA"""
import subprocess
import sys

import connectorx as cx
import polars as pl

src, dst, schema = sys.argv[1:4]
VALUES = {"Decimal": ("double_v", "double precision"), "Integer": ("long_v", "bigint"),
          "Boolean": ("bool_v", "boolean"), "String": ("str_v", "text")}

narrow = cx.read_sql(
    src,
    "SELECT ship_id, data_channel_id, created_time, value_format, bool_v, str_v, long_v, double_v "
    "FROM tenant.tbl_data_timeseries",
    return_type="polars",
    partition_on=None,
)
for (ship,), rows in narrow.group_by(["ship_id"], maintain_order=True):
    wide = None
    types = {}
    for fmt, (column, pg_type) in VALUES.items():
        part = rows.filter(pl.col("value_format") == fmt)
        if part.height == 0:
            continue
        p = part.pivot(on="data_channel_id", index="created_time", values=column,
                       aggregate_function="max")
        types.update({c: pg_type for c in p.columns if c != "created_time"})
        wide = p if wide is None else wide.join(p, on="created_time", how="full", coalesce=True)
    channels = sorted(types)
    wide = wide.select(["created_time", *channels]).sort("created_time")
    table = f'"{schema}"."wide_{ship}"'
    ddl = ", ".join(f'"{c}" {types[c]}' for c in channels)
    csv = wide.with_columns(
        pl.col("created_time").dt.strftime("%Y-%m-%d %H:%M:%S%.f+00")
    ).write_csv(include_header=False)
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", dst,
         "-c", f"CREATE TABLE {table} (created_time timestamptz PRIMARY KEY, {ddl})",
         "-c", f"COPY {table} FROM STDIN (FORMAT csv)"],
        input=csv.encode(), check=True)
