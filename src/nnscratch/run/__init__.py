"""One run, end to end: its settings (:mod:`~nnscratch.run.config`), the experiment that loads the
data, trains the engines and writes the outputs (:mod:`~nnscratch.run.experiment`), and the
benchmark (:mod:`~nnscratch.run.benchmark`). The Python API (:mod:`nnscratch.api`) calls these."""
