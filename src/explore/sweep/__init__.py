"""The sweep: compress × recover × evaluate × measure, and the report (``explore sweep``)."""
