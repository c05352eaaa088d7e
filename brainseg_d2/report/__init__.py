"""HTML report of an evaluation (:mod:`brainseg_d2.report.page`).

* :mod:`~brainseg_d2.report.page`: :func:`write_report`, the template and the run;
* :mod:`~brainseg_d2.report.tables`: cells and tables;
* :mod:`~brainseg_d2.report.figures`: thumbnails and the Dice plot.
"""

from brainseg_d2.report.figures import find_thumbnails
from brainseg_d2.report.page import (
    DEFAULT_TITLE,
    GENERATOR,
    TEMPLATE,
    check_replaceable_report,
    write_report,
)

__all__ = [
    "DEFAULT_TITLE",
    "GENERATOR",
    "TEMPLATE",
    "check_replaceable_report",
    "find_thumbnails",
    "write_report",
]
