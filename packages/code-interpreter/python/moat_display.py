"""What moat adds to a python kernel (loaded by the code-interpreter server into each python context).

Two IPython display formatters, as E2B's code interpreter reports them:
- ``e2b/chart``: a matplotlib figure described as data (line, scatter, bar, pie, box and whisker,
  or a superchart of its axes), beside the PNG the inline backend already makes;
- ``e2b/data``: a pandas DataFrame as ``{column: [values]}``.
Everything here must fail quietly: a figure it cannot read is still shown as a PNG.
"""

import json
import math
import re

_UNIT = re.compile(r"\(([^()]+)\)\s*$")


def _clean(value):
    """JSON-safe: numpy scalars to Python, NaN and infinities to None, dates to ISO strings."""
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except Exception:
            pass
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def _unit(label):
    match = _UNIT.search(label or "")
    return match.group(1) if match else None


def _is_dates(axis):
    try:
        from matplotlib.dates import DateConverter, _SwitchableDateConverter  # noqa: F401

        converter = axis.get_converter() if hasattr(axis, "get_converter") else axis.converter
        return converter is not None and "Date" in type(converter).__name__
    except Exception:
        return False


def _axis_values(axis, values):
    if _is_dates(axis):
        from matplotlib.dates import num2date

        return [num2date(v).isoformat() for v in values]
    return _clean(list(values))


def _chart_2d(ax, kind):
    chart = {
        "type": kind,
        "title": ax.get_title(),
        "x_label": ax.get_xlabel() or None,
        "y_label": ax.get_ylabel() or None,
        "x_unit": _unit(ax.get_xlabel()),
        "y_unit": _unit(ax.get_ylabel()),
    }
    if kind in ("line", "scatter"):
        chart.update(
            x_ticks=_axis_values(ax.xaxis, ax.get_xticks()),
            x_tick_labels=[t.get_text() for t in ax.get_xticklabels()],
            x_scale="datetime" if _is_dates(ax.xaxis) else ax.get_xscale(),
            y_ticks=_axis_values(ax.yaxis, ax.get_yticks()),
            y_tick_labels=[t.get_text() for t in ax.get_yticklabels()],
            y_scale="datetime" if _is_dates(ax.yaxis) else ax.get_yscale(),
        )
    return chart


def _points(ax, xs, ys):
    return [list(p) for p in zip(_axis_values(ax.xaxis, xs), _axis_values(ax.yaxis, ys))]


def _axes_chart(ax):
    from matplotlib.collections import PathCollection
    from matplotlib.container import BarContainer
    from matplotlib.patches import Wedge

    boxes = getattr(ax, "_moat_boxplots", None)
    if boxes:
        chart = _chart_2d(ax, "box_and_whisker")
        chart["elements"] = [
            {
                "label": str(stats.get("label", "")),
                "min": _clean(stats["whislo"]),
                "first_quartile": _clean(stats["q1"]),
                "median": _clean(stats["med"]),
                "third_quartile": _clean(stats["q3"]),
                "max": _clean(stats["whishi"]),
                "outliers": _clean(list(stats.get("fliers", []))),
            }
            for stats in boxes
        ]
        return chart
    wedges = [p for p in ax.patches if isinstance(p, Wedge)]
    if wedges:
        return {
            "type": "pie",
            "title": ax.get_title(),
            "elements": [
                {"label": w.get_label(), "angle": _clean(w.theta2 - w.theta1), "radius": _clean(w.r)}
                for w in wedges
            ],
        }
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    if bars:
        chart = _chart_2d(ax, "bar")
        ticks = {round(float(v), 6): t.get_text() for v, t in zip(ax.get_xticks(), ax.get_xticklabels())}
        elements = []
        for container in bars:
            group = container.get_label() or ""
            for rect in container.patches:
                center = round(float(rect.get_x() + rect.get_width() / 2), 6)
                label = ticks.get(center, _clean(center))
                elements.append({"label": str(label), "value": str(_clean(rect.get_height())), "group": str(group)})
        chart["elements"] = elements
        return chart
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    if scatters and not ax.lines:
        chart = _chart_2d(ax, "scatter")
        chart["elements"] = [
            {"label": c.get_label(), "points": _points(ax, c.get_offsets()[:, 0], c.get_offsets()[:, 1])}
            for c in scatters
        ]
        return chart
    if ax.lines:
        chart = _chart_2d(ax, "line")
        chart["elements"] = [
            {"label": line.get_label(), "points": _points(ax, line.get_xdata(), line.get_ydata())}
            for line in ax.lines
        ]
        return chart
    return {"type": "unknown", "title": ax.get_title(), "elements": []}


def figure_chart(figure):
    try:
        axes = [ax for ax in figure.get_axes() if ax.get_visible()]
        if not axes:
            return None
        if len(axes) == 1:
            return _axes_chart(axes[0])
        title = figure._suptitle.get_text() if getattr(figure, "_suptitle", None) else ""
        return {"type": "superchart", "title": title, "elements": [_axes_chart(ax) for ax in axes]}
    except Exception:
        return None


def frame_data(frame):
    """``{column: [values]}``, JSON-safe (NaN as null, dates in ISO 8601)."""
    try:
        columns = json.loads(frame.to_json(orient="columns", date_format="iso", default_handler=str))
        return {name: list(values.values()) for name, values in columns.items()}
    except Exception:
        return None


def _record_boxplots():
    """Axes.boxplot keeps the statistics it drew, which the chart reports exactly."""
    from matplotlib import cbook
    from matplotlib.axes import Axes

    original = Axes.boxplot
    if getattr(original, "_moat", False):
        return

    def boxplot(self, x, *args, **kwargs):
        result = original(self, x, *args, **kwargs)
        try:
            labels = kwargs.get("labels") or kwargs.get("tick_labels")
            stats = cbook.boxplot_stats(x, whis=kwargs.get("whis") or 1.5, labels=labels)
            for i, s in enumerate(stats):
                s.setdefault("label", str(i + 1))
            self._moat_boxplots = getattr(self, "_moat_boxplots", []) + stats
        except Exception:
            pass
        return result

    boxplot._moat = True
    Axes.boxplot = boxplot


_CHUNK = 1 << 20


def _chunk_output():
    """A huge write goes out as 1 MiB stream messages, each sent before the next is made.

    ipykernel sends what a write buffered as one message: ``print("x" * 100_000_000)`` would be
    one 100 MB message for the Jupyter server to encode and for the client to hold at once.
    """
    from ipykernel.iostream import OutStream

    original = OutStream.write
    if getattr(original, "_moat", False):
        return

    def write(self, string):
        if not isinstance(string, str) or len(string) <= _CHUNK:
            return original(self, string)
        for start in range(0, len(string), _CHUNK):
            original(self, string[start : start + _CHUNK])
            self.flush()
        return len(string)

    write._moat = True
    OutStream.write = write


def _quick_flush():
    """ipykernel flushes stdout and stderr about four times per execution, each a hand-over to its
    IO thread and a wait for it, even with nothing to send: a few ms each under gVisor. With
    nothing buffered and no flush pending there is nothing to wait for (what is being sent goes
    out on iopub before the `idle` the server waits for)."""
    from ipykernel.iostream import OutStream

    original = OutStream.flush
    if getattr(original, "_moat", False):
        return

    def flush(self):
        lock = getattr(self, "_buffer_lock", None)
        if lock is not None and self.echo is None and not getattr(self, "_flush_pending", True):
            with lock:
                empty = self._buffer.tell() == 0
            if empty:
                return None
        return original(self)

    flush._moat = True
    OutStream.flush = flush


def _quick_kernel(shell):
    """What else an execution waits for that the code interpreter does not need: a 0.5 ms sleep
    before each reply (longer under gVisor), and a history database write per execution (batched
    instead; `In`, `Out` and `_i` do not depend on it)."""
    kernel = getattr(shell, "kernel", None)
    if kernel is not None and hasattr(kernel, "_execute_sleep"):
        kernel._execute_sleep = 0
    history = getattr(shell, "history_manager", None)
    if history is not None and history.db_cache_size < 100:
        history.db_cache_size = 100


def install():
    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    shell = get_ipython()
    if shell is None:
        return

    class ChartFormatter(BaseFormatter):
        format_type = Unicode("e2b/chart")
        print_method = ObjectName("_repr_e2b_chart_")
        _return_type = dict

    class DataFormatter(BaseFormatter):
        format_type = Unicode("e2b/data")
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = dict

    for patch in (_chunk_output, _quick_flush, lambda: _quick_kernel(shell)):
        try:
            patch()
        except Exception:
            pass

    formatters = shell.display_formatter.formatters
    charts = formatters.get("e2b/chart") or ChartFormatter(parent=shell.display_formatter)
    data = formatters.get("e2b/data") or DataFormatter(parent=shell.display_formatter)
    formatters["e2b/chart"] = charts
    formatters["e2b/data"] = data
    # By name: pandas is imported only when the code uses it.
    data.for_type_by_name("pandas.core.frame", "DataFrame", frame_data)
    try:
        # A method, not a registration: the inline backend drops every formatter's Figure entry
        # when pyplot starts.
        from matplotlib.figure import Figure

        Figure._repr_e2b_chart_ = figure_chart
        _record_boxplots()
    except Exception:
        pass
