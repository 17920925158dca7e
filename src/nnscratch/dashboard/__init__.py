"""A live training dashboard in the browser: ``nnscratch dashboard [RUNS_DIR]``.

It reads the runs' ``metrics.jsonl`` event logs (the trainer's events, as they happen) and serves
a page of interactive charts (plotly.js, from the installed ``plotly`` package) on 127.0.0.1.
:mod:`.runs` finds the runs, :mod:`.runlog` follows a log, :mod:`.series` smooths and
downsamples, :mod:`.views` makes the JSON, :mod:`.server` serves it. See docs/dashboard.md.
"""
