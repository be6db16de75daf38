"""momentum-ntk: HB vs NAG on over-parameterized two-layer ReLU networks, the NTK way.

Two floors (tests/test_layers.py reads them from the imports):

**Stages**, each ``python -m momentum_ntk.<stage>``, run by the workflow's rules; a stage imports library modules only,
never another stage, and reads what an earlier stage wrote through :mod:`momentum_ntk.records` or :mod:`~.io`:

- ``fetch``, ``binarize``  raw MNIST / Fashion-MNIST / CIFAR-10 / mnist5k -> unit-norm X (n, d), labels y in {+1, -1}
- ``ntk``            infinite-width Gram matrix H∞ (eq. 10), its spectrum, λ0, λmax, λm and the learning rates
- ``train``          full-batch GD / HB (eq. 4) / NAG (eq. 5) on f(W, a, x) = m^{-1/2} Σ_r a_r relu(w_rᵀx), in packs
- ``theory``         NTK-linearized, high-resolution-ODE and theorem-bound predictions for each run
- ``aggregate``      per-run Parquet files -> one long table and per-setting summaries
- ``figures``        the paper's figures and Table 1
- ``theory_report``  the theory overlays, the trajectory error against width, the rate tables
- ``claims``         a measured verdict on each of the paper's claims
- tools: ``regime`` (the width sweep into the NTK regime), ``readme_results`` (the README's measured blocks),
  ``shelve`` (move ``results/`` aside)

**Library**, plain importable functions with the maths in their docstrings: ``methods`` (the optimizers, one record
each), ``datasets`` (one record per dataset), ``model``, ``gram`` (H∞ and its constants), ``engine``, ``rowspace``
and ``loop`` (training), ``trajectory``, ``dynamics``, ``modes``, ``compare``, ``rates``, ``uncertainty``,
``judges`` (the claims' judges and registry), ``records`` (readers of the stages' outputs), ``plotting``,
``tables``, ``io``, ``errors``, ``entry``, ``devices``, ``lease``, ``plan``, ``configcheck``, ``stamp``, ``names``,
``defaults``.
"""

__version__ = "0.1.0"
