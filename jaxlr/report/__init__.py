"""Layer 5, outputs: host-side `metrics`, figures (`figures`, `image_plots`, `history_plots`,
`sweep_plots`; matplotlib imported on first use), `tables` (Markdown, CSV, the end-of-run
summary, histories and report files). Imports every lower layer; nothing in `jaxlr` imports it.
"""
