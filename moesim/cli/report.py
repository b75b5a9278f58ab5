"""``moesim report TABLE``: rebuild the HTML report from a results table (CSV or Parquet)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("report", help="rebuild report.html from a results table")
    p.add_argument("table", help="results.csv or results.parquet (metadata.json beside it is used)")
    p.add_argument("--out", "-o", help="HTML file (default: report.html beside the table)")
    p.add_argument("--table-rows", type=int, default=200, dest="table_rows",
                   help="rows in the HTML table (the figures always use every row)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moesim.reports import write_report
    from moesim.fileio import read_table

    path = Path(args.table)
    table = read_table(path)
    meta_path = path.with_name("metadata.json")
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    out = Path(args.out) if args.out else path.with_name("report.html")
    write_report(table, out, meta, table_rows=args.table_rows)
    print(f"wrote {out} ({len(table):,} rows)")
    return 0
