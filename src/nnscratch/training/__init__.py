"""The training loop and what it drives: the loop itself (:mod:`~nnscratch.training.loop`), the
learning-rate schedules, early stopping, L1/L2 penalties and gradient clipping, and the metrics
every epoch is measured with. Written once for both engines; it never prints or plots."""
