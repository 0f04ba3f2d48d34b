"""Layer 3, the training engine: static config and dynamic hparams (`config`), optimizers
(`optim`), mini-batches (`batches`), the step rules (`step`), a single run (`train`), the
points of a sweep (`grid`, `halving`), vmapped, blocked, sharded sweeps (`sweep`), memory
estimates (`resources`) and several processes (`distributed`). Imports `jaxlr.core` and
`jaxlr.host` only.
"""
