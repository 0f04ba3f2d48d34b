"""Layer 1, the numerical core: pure JAX functions of arrays and pytrees.

`models` (init/apply), `losses`, `gradients` (hand-derived), `objective` (the bound `Model`),
`solver` (the exact optimum), `curvature` (Hessian-vector products, step-size limit),
`testing` (tolerances, finite differences). Imports nothing else of jaxlr.
"""
