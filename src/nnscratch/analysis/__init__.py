"""Looking inside the NumPy engine: gradient checks and one training step written out number by number.

* :mod:`nnscratch.analysis.gradcheck`: every hand-written gradient (of a layer, of a whole network
  with its loss, label smoothing, L1/L2, batch norm and dropout) against central finite
  differences in float64, as a per-layer, per-parameter table (``nnscratch gradcheck``).
* :mod:`nnscratch.analysis.step`: one training step of a tiny network, every forward output,
  gradient and update labelled with its formula and beside torch autograd's (``nnscratch step``).

Nothing here computes a gradient of its own: the numbers are the engine's (its layers, its loss,
its penalty and its optimizers), only watched.
"""
