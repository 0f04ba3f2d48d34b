"""Data-set files: `idx` (the IDX format), `mnist` (registry, lookup, verified download,
loading), `fake` (tiny random MNIST-like files for tests).

Import the submodules themselves; this package imports none of them, so that
`import jaxlr.datasets.idx` does not pull in the downloader (`mnist` imports urllib).
Preprocessing, splits and batching are in `jaxlr.data`.
"""
