"""Layer 1, the numerical core: pure JAX functions of arrays and pytrees.

`models` (init/apply), `losses`, `gradients` (hand-derived), `objective` (the bound `Model`),
`solver` (the exact optimum), `optimum` (the optimum beside trained points: gap, step-size
limit), `curvature` (Hessian-vector products, step-size limit), `testing` (tolerances, finite
differences). Imports nothing else of jaxlr.
"""
