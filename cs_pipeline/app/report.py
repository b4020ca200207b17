"""The exported health report: one self-contained HTML page (inline SVG charts) and a CSV of the day's
scores, for the acceptance criterion "health reports can be exported".

Charts and tables are built by pure functions from DataFrames; ``export_report`` reads the marts.
"""

from __future__ import annotations

import html
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import psycopg

from cs_pipeline.core.db import read_frame, relation_exists

LEVEL_COLOURS = {"healthy": "#2e7d32", "at_risk": "#f9a825", "critical": "#c62828", "unscored": "#9e9e9e"}


def bar_chart_svg(counts: dict[str, int], width: int = 420, height: int = 160) -> str:
    """Horizontal bars, one per key (risk level -> suppliers)."""
    total = max(counts.values(), default=0) or 1
    row = height // max(len(counts), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for i, (label, value) in enumerate(counts.items()):
        w = int((width - 160) * value / total)
        y = i * row + 4
        colour = LEVEL_COLOURS.get(label, "#1565c0")
        parts.append(f'<text x="0" y="{y + row / 2}" font-size="13">{html.escape(label)}</text>'
                     f'<rect x="90" y="{y}" width="{w}" height="{row - 10}" fill="{colour}"/>'
                     f'<text x="{95 + w}" y="{y + row / 2}" font-size="13">{value}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart_svg(series: pd.Series, width: int = 560, height: int = 180, lo: float = 0, hi: float = 100) -> str:
    """A line of ``series`` (index: days, values: 0-100) with its first and last day labelled."""
    if series.empty:
        return "<p>(no history)</p>"
    n = len(series)
    xs = [40 + (width - 60) * (i / max(n - 1, 1)) for i in range(n)]
    ys = [height - 25 - (height - 45) * ((v - lo) / (hi - lo)) for v in series.to_numpy(dtype=float)]
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
            f'<polyline fill="none" stroke="#1565c0" stroke-width="2" points="{points}"/>'
            f'<text x="40" y="{height - 5}" font-size="12">{html.escape(str(series.index[0]))}</text>'
            f'<text x="{width - 110}" y="{height - 5}" font-size="12">{html.escape(str(series.index[-1]))}</text>'
            f'<text x="0" y="20" font-size="12">{hi:.0f}</text><text x="0" y="{height - 25}" font-size="12">{lo:.0f}</text>'
            "</svg>")


def table_html(frame: pd.DataFrame) -> str:
    """An HTML table of ``frame`` (values escaped)."""
    if frame.empty:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{'' if pd.isna(v) else html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def render_report(as_of: date, health: pd.DataFrame, trend: pd.Series, interventions: pd.DataFrame,
                  outcomes: pd.DataFrame) -> str:
    """The report page. ``health``: the day's customer_health rows; ``trend``: mean score per day."""
    counts = health["risk_level"].fillna("unscored").value_counts().reindex(
        ["healthy", "at_risk", "critical", "unscored"]).dropna().astype(int).to_dict()
    at_risk = health.loc[health["risk_level"].isin(["critical", "at_risk"])].sort_values("health_score").head(25)[
        ["supplier_id", "vendor_category", "tier", "health_score", "risk_level", "score_delta_7d", "trend", "drivers"]]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Customer health report {as_of}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ddd;padding:4px 6px;text-align:left}}th{{background:#f5f5f5}}h2{{margin-top:2rem}}</style></head>
<body>
<h1>Customer health report, {as_of}</h1>
<p>{len(health)} active suppliers scored with {html.escape(", ".join(sorted(health["scorecard_version"].dropna().astype(str).unique())))}.</p>
<h2>Risk-level distribution</h2>{bar_chart_svg(counts)}
<h2>Mean health score, last {len(trend)} days</h2>{line_chart_svg(trend)}
<h2>Top at-risk suppliers and their drivers</h2>{table_html(at_risk)}
<h2>Interventions</h2>{table_html(interventions)}
<h2>Intervention outcomes (30 days later)</h2>{table_html(outcomes)}
</body></html>
"""


def export_report(conn: psycopg.Connection, as_of: date, out: Path, trend_days: int = 30) -> tuple[Path, Path]:
    """Write ``out`` (HTML) and ``out`` with suffix .csv (the day's customer_health rows).

    Raises:
        ValueError: no health scores for ``as_of``.
    """
    if not relation_exists(conn, "marts.customer_health"):
        raise ValueError("marts.customer_health does not exist yet: run the pipeline first")
    health = read_frame(conn, "SELECT * FROM marts.customer_health WHERE as_of_date = %s ORDER BY supplier_id", (as_of,))
    if health.empty:
        raise ValueError(f"no health scores for {as_of}")
    trend_rows = read_frame(conn, "SELECT as_of_date, avg(health_score)::float8 AS score FROM marts.customer_health "
                                  "WHERE as_of_date BETWEEN %s AND %s GROUP BY 1 ORDER BY 1",
                            (as_of - timedelta(days=trend_days - 1), as_of))
    trend = pd.Series(trend_rows["score"].to_numpy(), index=trend_rows["as_of_date"].astype(str))
    interventions = read_frame(conn, "SELECT rule, channel, status, coalesce(reason, '') AS reason, count(*) AS n "
                                     "FROM ops.interventions WHERE as_of_date > %s - 30 AND as_of_date <= %s "
                                     "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3", (as_of, as_of)) \
        if relation_exists(conn, "ops.interventions") else pd.DataFrame()
    outcomes = read_frame(conn, "SELECT rule, is_control, count(*) AS cases, "
                                "round(avg(recovered::int)::numeric, 3) AS recovery_rate FROM marts.intervention_outcomes "
                                "WHERE recovered IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2") \
        if relation_exists(conn, "marts.intervention_outcomes") else pd.DataFrame()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(as_of, health, trend, interventions, outcomes), encoding="utf-8")
    csv_path = out.with_suffix(".csv")
    health.drop(columns=["components"]).to_csv(csv_path, index=False)
    return out, csv_path
