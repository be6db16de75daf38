"""momentum-ntk: HB vs NAG on over-parameterized two-layer ReLU networks, the NTK way.

Stages (each a module with a ``python -m momentum_ntk.<stage>`` entry point):

- ``binarize``  raw MNIST / Fashion-MNIST / CIFAR-10 / mnist5k -> unit-norm X (n, d) and labels y in {+1, -1}
- ``ntk``       infinite-width Gram matrix H∞ (eq. 10), its spectrum, λ0, λmax, λm and the learning rates
- ``train``     full-batch GD / HB (eq. 4) / NAG (eq. 5) on f(W, a, x) = m^{-1/2} Σ_r a_r relu(w_rᵀx)
- ``aggregate`` per-run Parquet files -> one long table and per-setting summaries
- ``figures``   the paper's figures and table
- ``claims``    measured verdict on each of the paper's claims
- ``theory``    NTK-linearized, high-resolution-ODE and theorem-bound predictions for each run
"""

__version__ = "0.1.0"
