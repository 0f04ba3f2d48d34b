"""Layer 4, data: the IDX format (`idx`), the data-set registry with sizes and class names,
lookup and verified downloads (`registry`), tiny fake data sets for tests (`fake`),
preprocessing (`images`), the data section of a config (`config`) and the splits an
experiment trains on (`splits`). Imports `jaxlr.core`, `jaxlr.host` and `jaxlr.engine`.

Import the submodules themselves; this package imports none of them, so that
`jaxlr.data.idx` does not pull in the downloader (`registry` imports urllib).
"""
