"""One number format and small HTML helpers shared by the report's modules.

Every number in the report and in the summary ``m2cofs evaluate`` prints goes through
:func:`fmt`: three significant digits (``0.860``, ``2.58``, ``23.5``, ``373``), whole numbers
from 1000 on, scientific notation below 0.001; NaN, ±inf and missing values spelled out.
"""

from __future__ import annotations

import base64
import html
import math
import re
from typing import Any, Sequence

import numpy as np

DIGITS = 3


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(png: bytes, alt: str, caption: str | None = None) -> str:
    """A PNG embedded in a ``<figure>``, with its caption under it if there is one."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption is not None else ""
    return f'<figure><img src="{data_uri(png)}" alt="{esc(alt)}">{cap}</figure>'


def fmt(v: Any, digits: int = DIGITS) -> str:
    """A number with ``digits`` significant digits (see the module docstring)."""
    if v is None:
        return "–"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "∞" if f > 0 else "−∞"
    if f == 0:
        return "0"
    if abs(f) < 1e-3:
        return f"{f:.{digits - 1}e}"
    out = f"{f:#.{digits}g}"
    if "e" in out or abs(f) >= 10 ** digits:  # 999.7 → 1000, 12345.6 → 12346
        return f"{f:.0f}"
    return out.rstrip(".")


def fmt_pm(mean: Any, std: Any) -> str:
    """``mean ± std`` in :func:`fmt`'s format (``–`` without a mean)."""
    return "–" if mean is None else f"{fmt(mean)} ± {fmt(std)}"


def anchor(case_id: str) -> str:
    return "case-" + re.sub(r"[^A-Za-z0-9_-]", "_", case_id)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], left_cols: int = 1, cls: str = "",
          raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then they are trusted HTML)."""
    def cell(tag: str, i: int, v: str) -> str:
        c = ' class="l"' if i < left_cols else ""
        return f"<{tag}{c}>{v if raw and tag == 'td' else esc(v)}</{tag}>"

    out = [f'<div class="scroll"><table{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>',
           "<thead><tr>" + "".join(cell("th", i, h) for i, h in enumerate(header)) + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)
