"""The optimizer configurations the tests run: one table, for tests/test_optimizers.py (against
torch) and tests/test_jit.py (the compiled twins against the NumPy classes), so the two cannot drift."""

#: (optimizer, hyperparameters): every branch of every update (momentum, dampening, Nesterov,
#: weight decay coupled and decoupled, AMSGrad, centred, non-default betas, eps and alpha).
CASES = [
    ("sgd", {}),
    ("sgd", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.9, "dampening": 0.3}),
    ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("sgd", {"weight_decay": 0.1}),
    ("sgd", {"momentum": 0.8, "nesterov": True, "weight_decay": 0.1}),
    ("sgd", {"momentum": 0.7, "dampening": 0.5, "weight_decay": 0.05}),
    ("adam", {}),
    ("adam", {"amsgrad": True}),
    ("adam", {"weight_decay": 0.1}),
    ("adam", {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1, "amsgrad": True}),
    ("adamw", {}),
    ("adamw", {"weight_decay": 0.1}),
    ("adamw", {"weight_decay": 0.1, "amsgrad": True, "betas": (0.5, 0.9)}),
    ("rmsprop", {}),
    ("rmsprop", {"momentum": 0.9}),
    ("rmsprop", {"centered": True}),
    ("rmsprop", {"weight_decay": 0.1, "alpha": 0.9}),
    ("rmsprop", {"momentum": 0.9, "centered": True, "weight_decay": 0.1, "alpha": 0.95, "eps": 1e-6}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in hp.items()) or 'default'}" for name, hp in CASES]
