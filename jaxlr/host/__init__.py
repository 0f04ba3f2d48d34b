"""Layer 2, files on the host: `io` (atomic writes), `checkpoint` (pytrees in .npz files),
`workdir` (one run per workdir, outputs published as one set). Imports nothing else of jaxlr.
"""
