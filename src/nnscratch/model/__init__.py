"""The engine-neutral model description: the layer-list spec (:mod:`~nnscratch.model.spec`) and
the registry of layer kinds (:mod:`~nnscratch.model.registry`: each kind's NumPy class, torch
module, parameter and buffer names and shapes, initialiser). Both engines build from these."""
