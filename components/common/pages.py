"""The pipeline's HTML pages, from one set of Jinja2 templates (components/common/templates).

`base.html.j2` is the page shell and its one style; `macros.html.j2` holds the pieces pages share
(a table, a chart, the "not run" line, the fairness step's content); each page extends the base:
`run_report.html.j2` (the run report, its sections in `report_sections.html.j2`) and
`fairness.html.j2` (the fairness step's own page). The environment autoescapes every value, so a
column name or category such as `<img src=x onerror=alert(1)>` is text on every page; only
Markup that these templates make is inserted as HTML.

The fairness step hands over data, not HTML: its report data (JSON, see
components.bias.report.fairness_data) is what both its own page and the run report's fairness
section render, through `fairness_context` and the `fairness` macro.
"""

import functools
import math

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from components.common.charts import group_rates_chart


@functools.cache
def environment() -> Environment:
    """The one Jinja2 environment: the package's templates, autoescaped, strict about names."""
    return Environment(
        loader=PackageLoader("components.common", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_page(template_name: str, **data) -> str:
    """One page: the template `template_name` rendered with `data`."""
    return environment().get_template(template_name).render(**data)


def macros(template_name: str = "macros.html.j2"):
    """A macros template as a module, so that Python can render one piece (a run report
    section) on its own: `macros("report_sections.html.j2").decision(...)`."""
    return environment().get_template(template_name).module


def markup(html: str) -> Markup:
    """HTML that is already safe (made by a renderer that escapes), to insert as it is."""
    return Markup(html)


def _number(value) -> float:
    return math.nan if value is None else float(value)


def fairness_context(data: dict) -> dict:
    """The fairness step's report data, with each set's chart drawn (a PNG data URI), for the
    `fairness` macro.

    Args:
        data: {"title", "gate": {"passed", "reason", "findings": {"header", "rows"}},
            "mitigation": [lines], "sets": [{"name", "summary", "groups", "chart", "notes"}],
            "problems": [lines]}: tables as header and rows of text. A set's chart is None or
            {"title", "alt", "groups": [labels], "rows": [counts], "series": [{"name",
            "value": [rates], "low": [bounds] or None, "high": [bounds] or None}]}, a missing
            rate or bound as None.

    Returns:
        The same data, each set with `chart_uri` (None without a chart) and `chart_alt`.
    """
    sets = []
    for entry in data.get("sets") or []:
        chart = entry.get("chart") or {}
        uri = None
        if chart.get("series"):
            series = [
                {
                    "name": s["name"],
                    "value": [_number(v) for v in s["value"]],
                    "low": None if s.get("low") is None else [_number(v) for v in s["low"]],
                    "high": None if s.get("high") is None else [_number(v) for v in s["high"]],
                }
                for s in chart["series"]
            ]
            uri = group_rates_chart(chart["groups"], chart["rows"], series, chart["title"])
        sets.append({**entry, "chart_uri": uri, "chart_alt": chart.get("alt", "")})
    return {**data, "sets": sets}
